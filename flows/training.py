"""The training flow: load -> validate -> tune -> federate (or train) -> harden -> evaluate -> register.

Composition only: every step is a Prefect task calling one pure function in ``tasks/``. Each optional
stage is switched by its config section's ``enabled`` and hands the next stage a model and a
configuration. Run it with ``driftloop run training [--smoke]`` or ``python -m flows.training``.
"""

from __future__ import annotations

from prefect import flow

from flows.pipeline import PipelineInputs, run_pipeline
from tasks.preflight import preflight
from tasks.settings import Settings, load_settings


@flow(name="training", log_prints=True)
def training(config: Settings | None = None) -> dict:
    """Train, evaluate and register a model; promote it when it is at least as good as the champion."""
    settings = config if config is not None else load_settings()
    preflight(settings)  # a bad search space or an unwritable store fails before the first stage
    return run_pipeline(settings, PipelineInputs(trigger={"kind": "manual"}))


if __name__ == "__main__":
    import sys

    result = training(load_settings(profile="smoke" if "--smoke" in sys.argv else None))
    print(result["summary"])

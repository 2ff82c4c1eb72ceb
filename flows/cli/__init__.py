"""The ``driftloop`` command line: run flows, validate batches, inspect and move the registry,
deploy and serve the flows, and the operations around them.

One module per command group, each a Typer app mounted here: ``run``, ``validate``, ``models``,
``deploy`` (deploy, serve, up, down), ``artifacts``, ``tuning`` (hyperband-plan), ``drift``
(simulate-stream), ``federated`` (supernode), ``predict``. What they share (options, settings,
the exception-to-exit-code handler) is in :mod:`flows.cli.common`; modules import it, never this one.

Exit codes: 0 success; 1 the work ran and failed (a batch failed validation, a flow failed);
2 bad usage or configuration (unknown flow, malformed config, bad parameter); 3 ``run drift-check``
ran but quarantined some batches (they got no drift verdict: see the summary and the
``driftloop.data.quarantined`` event).
"""

from __future__ import annotations

import os
import sys

import typer

from flows.cli import artifacts, deploy, drift, federated, models, predict, run, tuning, validate
from tasks.errors import ConfigError
from tasks.ray_security import enable_token_auth

app = typer.Typer(
    help="driftloop: an MLOps loop on Prefect (validate, tune, federate, harden, watch drift, retrain).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# In the order `driftloop --help` lists them.
app.add_typer(run.app)
app.add_typer(validate.app)
app.add_typer(models.app, name="models")
app.add_typer(deploy.app)
app.add_typer(artifacts.app, name="artifacts")
app.add_typer(tuning.app)
app.add_typer(drift.app)
app.add_typer(federated.app)
app.add_typer(predict.app)

__all__ = ["app", "main", "prepare_environment"]


def prepare_environment() -> None:
    """Process-wide defaults, set before anything imports Prefect or Ray; a user's own settings win."""
    # Quiet, local defaults for a laptop run.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # The ephemeral API server can take longer than Prefect's 20 s default on a busy 2-core machine.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    # `driftloop serve` polls for scheduled and triggered runs every 2 s, not Prefect's 10 s: a drift
    # event's retraining starts in ~6 s instead of ~14 s (benchmarks/drift_to_retrain_latency.py).
    os.environ.setdefault("PREFECT_RUNNER_POLL_FREQUENCY", "2")
    # Heartbeats every 30 s (Prefect's minimum; its default is 180): the crash detector that
    # `driftloop deploy` / `serve` install marks a run Crashed after 3 missed ones.
    os.environ.setdefault("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", "30")
    # Token authentication for any local Ray this process (or a child) starts: Ray reads it once,
    # at import, so it must be in the environment before then (tasks/ray_security.py).
    enable_token_auth()


def main() -> None:
    prepare_environment()
    try:
        app()
    except ConfigError as e:  # raised outside any command (e.g. while Typer parses): still exit 2
        typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
        sys.exit(2)

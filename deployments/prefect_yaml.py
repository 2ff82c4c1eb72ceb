"""``deployments/prefect.yaml``, generated from the builders in ``deployments/build.py``.

The Python builders are the one declaration of the three deployments; the YAML is written from them
(``driftloop deploy --write-yaml deployments/prefect.yaml``) for ``prefect deploy --all``, and
tests/deployments/test_builders.py fails when the committed file differs from :func:`render`.
The YAML carries the code defaults (``parameters: {}``: the flow resolves its configuration in the
worker from DRIFTLOOP_* / DRIFTLOOP_CONFIG), file-path entrypoints and a ``set_working_directory``
pull step, because ``prefect deploy`` runs the flows from a checkout on the worker's disk.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deployments.build import DEFAULT_WORK_POOL, build_deployments
from tasks.settings import Settings

HEADER = """\
# driftloop's three deployments for `prefect deploy --all --prefect-file deployments/prefect.yaml`
# (run from the checkout root, with DRIFTLOOP_CHECKOUT=$PWD on the worker).
# GENERATED from deployments/build.py by `driftloop deploy --write-yaml deployments/prefect.yaml`:
# edit the builders, not this file (tests/deployments/test_builders.py checks the two agree).
# `driftloop deploy` is the recommended way: it also fills the `config` parameter from
# --config/--param/--smoke and the DRIFTLOOP_* environment; this file uses the code defaults.
# drift-check: one check at a time, the runs an outage left due are cancelled (CANCEL_NEW) once the
# first catch-up check holds the slot. retraining: one run at a time, another episode's run waits
# (ENQUEUE); one trigger bucket per drift episode within drift.cooldown_seconds (deployments/README.md).
"""


def _file_entrypoint(module_path: str) -> str:
    """``flows.training.training`` -> ``flows/training.py:training`` (what ``prefect deploy`` expects)."""
    module, fn = module_path.rsplit(".", 1)
    return f"{module.replace('.', '/')}.py:{fn}"


def _trigger(t) -> dict[str, Any]:
    within = t.within.total_seconds()
    return {
        "type": "event",
        "enabled": t.enabled,
        "name": t.name,
        "expect": sorted(t.expect),
        "match": dict(t.match.root),
        "for_each": sorted(t.for_each),
        "posture": t.posture.value,
        "threshold": t.threshold,
        "within": int(within) if within.is_integer() else within,
        "parameters": dict(t.parameters),
    }


def _deployment(d) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "name": d.name,
        "description": d.description,
        "entrypoint": _file_entrypoint(d.entrypoint),
        "tags": list(d.tags),
        "parameters": {},
    }
    if d.schedules:
        doc["schedules"] = [
            {"cron": s.schedule.cron, "timezone": s.schedule.timezone, "active": s.active} for s in d.schedules
        ]
    if d.concurrency_limit:
        doc["concurrency_limit"] = {
            "limit": d.concurrency_limit,
            "collision_strategy": d.concurrency_options.collision_strategy.value,
        }
    if d.triggers:
        doc["triggers"] = [_trigger(t) for t in d.triggers]
    # job_variables stay empty: the worker's own environment sets PREFECT_FLOWS_HEARTBEAT_FREQUENCY.
    doc["work_pool"] = {"name": DEFAULT_WORK_POOL, "work_queue_name": "default", "job_variables": {}}
    return doc


def prefect_yaml(settings: Settings | None = None) -> dict[str, Any]:
    """The prefect.yaml document for the builders' deployments (default settings unless given)."""
    import prefect

    deployments = build_deployments(settings or Settings(), work_pool=DEFAULT_WORK_POOL)
    return {
        "name": "driftloop",
        "prefect-version": prefect.__version__,
        "build": None,
        "push": None,
        "pull": [{"prefect.deployments.steps.set_working_directory": {"directory": "{{ $DRIFTLOOP_CHECKOUT }}"}}],
        "deployments": [_deployment(d) for d in deployments],
    }


def render(settings: Settings | None = None) -> str:
    """The file's text: the header comment, then the document (key order kept, no YAML aliases)."""
    import yaml

    class _NoAliases(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:
            return True

    body = yaml.dump(prefect_yaml(settings), Dumper=_NoAliases, sort_keys=False, width=1000, allow_unicode=True)
    return HEADER + "\n" + body


def write_prefect_yaml(path: Path) -> Path:
    path = Path(path)
    path.write_text(render())
    return path

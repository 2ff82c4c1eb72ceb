"""The three Prefect deployments of driftloop, built from the typed configuration.

* ``training/training``: on demand (UI, ``driftloop run``, ``prefect deployment run``); its default
  parameter ``config`` is the resolved configuration.
* ``drift-check/drift-check``: a cron schedule from ``drift.schedule_cron`` (default every 15 minutes);
  pause and resume it from the UI (a re-deploy keeps the pause). At most one check runs at a time,
  collision strategy ``CANCEL_NEW``: after the scheduler, the server or the worker was down for
  several intervals, the runs scheduled meanwhile are all due at once; the first one starts and
  checks every batch that arrived (the store's ledger makes a second check of a batch impossible
  anyway), the others are cancelled instead of queueing up identical checks. A check that
  overruns its interval likewise cancels the next tick rather than stacking behind it.
* ``retraining/retraining``: an event trigger on ``driftloop.drift.detected`` for this model's
  resource (``driftloop.model.<name>``), parameters templated from the event, at most one run at a time.

Why this dedup (Prefect 3.8.8 and 3.9.1, ``prefect/server/events/triggers.py``): a reactive trigger with
``threshold=1`` and ``within=W > 0`` fires on the first matching event and then opens its next
bucket only after W, so later events in that window are dropped ("late"); ``for_each`` on the
event's ``driftloop.episode.id`` label keeps one bucket per episode, so a new episode (after the
drift cooldown, or for a retrained champion) fires at once even inside another episode's window.
W is ``drift.cooldown_seconds``, the episode length the drift check uses. The deployment's
``concurrency_limit`` of 1 with collision strategy ``ENQUEUE`` then serialises the runs of
different episodes (CANCEL_NEW would drop real new drift while a retraining runs). The retraining
flow also claims its episode in the store, so a redelivery after the window still trains once.

This module builds (Prefect objects, no server); ``deployments/apply.py`` applies them:
:func:`~deployments.apply.deploy_all` (``driftloop deploy``) to a work pool or
:func:`~deployments.apply.serve_all` (``driftloop serve``) from one process without a worker.
``deployments/prefect.yaml`` (for ``prefect deploy --all``) is generated from these builders by
``deployments/prefect_yaml.py`` (``driftloop deploy --write-yaml``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tasks.errors import ConfigError
from tasks.settings import Settings

DRIFT_EVENT = "driftloop.drift.detected"
DEFAULT_WORK_POOL = "driftloop-process"
DEPLOYMENTS = ("training", "drift-check", "retraining")
TAGS = ["driftloop"]
# Keys of the configuration never written into deployment parameters (the Prefect database):
# deployed runs take credentials from the worker's environment (AWS_* / the standard chain).
SECRET_KEYS = {("store", "access_key_id"), ("store", "secret_access_key"), ("store", "session_token")}

# Retraining parameters rendered by the automation from the triggering event. A single ``{{ ... }}``
# expression keeps its JSON type (Prefect wraps it as ``| tojson``): batch_ids stays a list. The
# event id is a UUID, which tojson cannot encode (the action failed with InvalidJinja): ``| string``.
RETRAINING_EVENT_PARAMETERS = {
    "event_id": "{{ event.id | string }}",
    "episode_id": "{{ event.payload.episode_id }}",
    "batch_ids": "{{ event.payload.batch_ids }}",
    "detector": "{{ event.payload.detector }}",
    "model_version": "{{ event.payload.version }}",
}


def _absolute_local(uri: str) -> str:
    # A worker or served run may start in another directory: pin relative local paths to this one.
    if "://" in uri and not uri.startswith("file://"):
        return uri
    if uri.startswith("file://"):
        return uri
    return str(Path(uri).expanduser().resolve())


def settings_parameters(settings: Settings) -> dict[str, Any]:
    """The ``config`` parameter of every deployment: the resolved configuration as JSON, with
    secrets removed (None: the run uses the standard AWS credential chain of its process) and
    relative local store/batch paths made absolute."""
    params = settings.model_dump(mode="json")
    for section, key in SECRET_KEYS:
        params[section][key] = None
    params["store"]["uri"] = _absolute_local(params["store"]["uri"])
    params["drift"]["batches_uri"] = _absolute_local(params["drift"]["batches_uri"])
    src = params["data"].get("source")
    if isinstance(src, str) and src != "digits" and "://" not in src and Path(src).exists():
        params["data"]["source"] = str(Path(src).resolve())
    return params


def drift_schedule(settings: Settings):
    """The drift check's CronSchedule, or None when ``drift.enabled`` is false or the cron is empty.
    An invalid cron raises ConfigError naming ``drift.schedule_cron``."""
    from prefect.client.schemas.schedules import CronSchedule

    cron = (settings.drift.schedule_cron or "").strip()
    if not settings.drift.enabled or not cron:
        return None
    try:
        return CronSchedule(cron=cron, timezone="UTC")
    except (ValueError, TypeError) as e:
        raise ConfigError(f"drift.schedule_cron {cron!r} is not a valid cron expression: {e}") from None


def retraining_trigger(settings: Settings):
    """The DeploymentEventTrigger that starts retraining on this model's drift events (see module
    docstring for the dedup: threshold 1 within ``drift.cooldown_seconds``, for each episode)."""
    from datetime import timedelta

    from prefect.events import DeploymentEventTrigger

    model = settings.registry.model_name
    return DeploymentEventTrigger(
        name=f"driftloop: retrain {model} on drift",
        description=(
            "One retraining run per drift episode: the first driftloop.drift.detected event of an "
            f"episode starts it; the episode's later events within {settings.drift.cooldown_seconds:g} s "
            "are dropped."
        ),
        expect={DRIFT_EVENT},
        match={"prefect.resource.id": f"driftloop.model.{model}"},
        for_each={"driftloop.episode.id"},
        posture="Reactive",
        threshold=1,
        within=timedelta(seconds=settings.drift.cooldown_seconds),
        parameters=dict(RETRAINING_EVENT_PARAMETERS),
        enabled=True,
    )


CRASH_DETECTOR = "driftloop: mark runs crashed when their heartbeats stop"
HEARTBEAT_EVENT = "prefect.flow-run.heartbeat"
# A run that ends says so with one of these; a run whose process died says nothing more.
FINAL_EVENTS = (
    "prefect.flow-run.Completed",
    "prefect.flow-run.Failed",
    "prefect.flow-run.Cancelled",
    "prefect.flow-run.Crashed",
)
DEFAULT_HEARTBEAT_S = 30  # what `driftloop` sets (PREFECT_FLOWS_HEARTBEAT_FREQUENCY; Prefect's minimum)
MISSED_HEARTBEATS = 3


def crash_detector(within_s: float | None = None):
    """The automation that marks a driftloop flow run Crashed when its heartbeats stop.

    A flow run's own process reports Crashed when it can (an exception, SIGTERM), and a runner or
    worker reports it when the run's subprocess dies; nobody reports a run whose process was
    SIGKILLed together with its runner, or whose machine vanished: it would stay Running forever
    (tests/reliability/test_killed_flow.py records exactly that). Prefect's flow engine emits
    ``prefect.flow-run.heartbeat`` every ``PREFECT_FLOWS_HEARTBEAT_FREQUENCY`` seconds; this
    proactive trigger fires when, after a heartbeat, neither another heartbeat nor a final state
    arrives within ``within_s`` (default: 3 heartbeats), for each run of the three driftloop
    deployments (whose runs heartbeat every :func:`heartbeat_seconds`: the deployments set it for
    workers, ``driftloop serve`` for its runs), and sets the run Crashed. The run's results in the
    store are unaffected (nothing is visible before its manifest), so a rerun starts clean."""
    from datetime import timedelta

    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture

    if within_s is None:
        within_s = MISSED_HEARTBEATS * heartbeat_seconds()
    return AutomationCore(
        name=CRASH_DETECTOR,
        description=(
            f"Sets a training, drift-check or retraining run Crashed when no heartbeat or final state "
            f"follows its last heartbeat within {within_s:g} s (its process died without a word)."
        ),
        enabled=True,
        trigger=EventTrigger(
            posture=Posture.Proactive,
            after={HEARTBEAT_EVENT},
            expect={HEARTBEAT_EVENT, *FINAL_EVENTS},
            match={"prefect.resource.id": "prefect.flow-run.*"},
            # Runs of driftloop's deployments only (both must match): they heartbeat at the frequency
            # the deployment sets; a flow someone runs from Python keeps Prefect's 180 s default.
            match_related=[
                {"prefect.resource.role": "flow", "prefect.resource.name": list(DEPLOYMENTS)},
                {"prefect.resource.role": "deployment"},
            ],
            for_each={"prefect.resource.id"},
            threshold=1,
            within=timedelta(seconds=within_s),
        ),
        actions=[
            ChangeFlowRunState(
                state=StateType.CRASHED,
                message=f"no heartbeat for {within_s:g} s: the process running this flow died "
                "(killed, or its machine was lost)",
            )
        ],
    )


def heartbeat_seconds() -> int:
    """Seconds between a deployed run's heartbeats: ``PREFECT_FLOWS_HEARTBEAT_FREQUENCY`` of this
    process (``driftloop`` sets 30), at least Prefect's minimum of 30."""
    from prefect.settings import get_current_settings

    return max(int(get_current_settings().flows.heartbeat_frequency or DEFAULT_HEARTBEAT_S), DEFAULT_HEARTBEAT_S)


def _flows() -> dict[str, Any]:
    from flows.drift_check import drift_check
    from flows.retraining import retraining
    from flows.training import training

    return {"training": training, "drift-check": drift_check, "retraining": retraining}


def build_deployments(
    settings: Settings,
    work_pool: str | None = None,
    paused: dict[str, bool] | None = None,
    only: list[str] | None = None,
) -> list:
    """RunnerDeployments for the three flows (``only`` picks some). ``work_pool`` None builds them
    for :func:`serve_all`; ``paused`` maps a deployment name to its pause state (a re-deploy
    passes the server's state so a pause made in the UI survives)."""
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
    from prefect.deployments.runner import EntrypointType

    names = list(only or DEPLOYMENTS)
    unknown = [n for n in names if n not in DEPLOYMENTS]
    if unknown:
        raise ConfigError(f"unknown deployment(s) {unknown}; choose from {', '.join(DEPLOYMENTS)}")
    params = {"config": settings_parameters(settings)}
    schedule = drift_schedule(settings)
    trigger = retraining_trigger(settings)
    flows = _flows()
    paused = paused or {}
    common = dict(
        parameters=params, tags=TAGS, entrypoint_type=EntrypointType.MODULE_PATH, work_pool_name=work_pool, version=None
    )
    if work_pool is not None:
        # A worker's runs heartbeat as often as the crash detector expects (see crash_detector).
        common["job_variables"] = {"env": {"PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(heartbeat_seconds())}}
    specs = {
        "training": dict(
            description="Train, evaluate and register a model; promote it when it is at least as "
            "good as the champion. Run on demand."
        ),
        "drift-check": dict(
            description=f"Check new batches under {settings.drift.batches_uri} for drift "
            f"(cron {settings.drift.schedule_cron}); pause it here to stop checking.",
            schedules=[schedule] if schedule is not None else [],
            concurrency_limit=ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW),
        ),
        "retraining": dict(
            description="Retrain on the training data plus the drifted batches when a "
            f"{DRIFT_EVENT} event for {settings.registry.model_name} arrives.",
            triggers=[trigger],
            concurrency_limit=ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE),
        ),
    }
    out = []
    for name in names:
        kw = dict(common, **specs[name])
        if name in paused:
            kw["paused"] = paused[name]
        out.append(flows[name].to_deployment(name=name, **kw))
    return out


def fingerprint(deployment, work_pool: str | None) -> str:
    """A short hash of what a deployment declares (flow, entrypoint, parameters, schedules,
    concurrency, triggers, work pool; not its pause state). Stored as the deployment's version, it
    lets a re-deploy of an unchanged declaration write nothing at all."""
    import hashlib
    import json

    doc = {
        "flow": deployment.flow_name,
        "name": deployment.name,
        "entrypoint": deployment.entrypoint,
        "parameters": deployment.model_dump(mode="json", include={"parameters"})["parameters"],
        "description": deployment.description,
        "tags": sorted(deployment.tags or []),
        "work_pool": work_pool,
        "schedules": [s.schedule.model_dump(mode="json") for s in (deployment.schedules or [])],
        "concurrency": [
            deployment.concurrency_limit,
            deployment.concurrency_options.model_dump(mode="json") if deployment.concurrency_options else None,
        ],
        "triggers": [t.model_dump(mode="json") for t in (deployment.triggers or [])],
        "job_variables": deployment.job_variables or {},
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:16]

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

Why this dedup (Prefect 3.8.8, ``prefect/server/events/triggers.py``): a reactive trigger with
``threshold=1`` and ``within=W > 0`` fires on the first matching event and then opens its next
bucket only after W, so later events in that window are dropped ("late"); ``for_each`` on the
event's ``driftloop.episode.id`` label keeps one bucket per episode, so a new episode (after the
drift cooldown, or for a retrained champion) fires at once even inside another episode's window.
W is ``drift.cooldown_seconds``, the episode length the drift check uses. The deployment's
``concurrency_limit`` of 1 with collision strategy ``ENQUEUE`` then serialises the runs of
different episodes (CANCEL_NEW would drop real new drift while a retraining runs). The retraining
flow also claims its episode in the store, so a redelivery after the window still trains once.

Deploy to a work pool with :func:`deploy_all` (``driftloop deploy``) or serve all three from one
process without a worker with :func:`serve_all` (``driftloop serve``). ``deployments/prefect.yaml``
declares the same three for ``prefect deploy --all``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tasks.errors import ConfigError, DriftloopError
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


class DeploymentError(DriftloopError):
    """There is no Prefect server to deploy to or serve from (names the URL and what to run)."""


class DeploymentApplyError(DriftloopError):
    """The server refused a deployment (names the deployment and the server's reason)."""


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
        description=("One retraining run per drift episode: the first driftloop.drift.detected event of an "
                     f"episode starts it; the episode's later events within {settings.drift.cooldown_seconds:g} s "
                     "are dropped."),
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
FINAL_EVENTS = ("prefect.flow-run.Completed", "prefect.flow-run.Failed", "prefect.flow-run.Cancelled",
                "prefect.flow-run.Crashed")
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
    workers, ``driftloop serve`` for its runs), and sets the run Crashed. The run's results in the store are unaffected (nothing is visible
    before its manifest), so a rerun starts clean."""
    from datetime import timedelta

    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture

    if within_s is None:
        within_s = MISSED_HEARTBEATS * heartbeat_seconds()
    return AutomationCore(
        name=CRASH_DETECTOR,
        description=(f"Sets a training, drift-check or retraining run Crashed when no heartbeat or final state "
                     f"follows its last heartbeat within {within_s:g} s (its process died without a word)."),
        enabled=True,
        trigger=EventTrigger(
            posture=Posture.Proactive, after={HEARTBEAT_EVENT}, expect={HEARTBEAT_EVENT, *FINAL_EVENTS},
            match={"prefect.resource.id": "prefect.flow-run.*"},
            # Runs of driftloop's deployments only (both must match): they heartbeat at the frequency
            # the deployment sets; a flow someone runs from Python keeps Prefect's 180 s default.
            match_related=[{"prefect.resource.role": "flow", "prefect.resource.name": list(DEPLOYMENTS)},
                           {"prefect.resource.role": "deployment"}],
            for_each={"prefect.resource.id"}, threshold=1, within=timedelta(seconds=within_s)),
        actions=[ChangeFlowRunState(state=StateType.CRASHED,
                                    message=f"no heartbeat for {within_s:g} s: the process running this flow died "
                                            "(killed, or its machine was lost)")],
    )


def heartbeat_seconds() -> int:
    """Seconds between a deployed run's heartbeats: ``PREFECT_FLOWS_HEARTBEAT_FREQUENCY`` of this
    process (``driftloop`` sets 30), at least Prefect's minimum of 30."""
    from prefect.settings import get_current_settings

    return max(int(get_current_settings().flows.heartbeat_frequency or DEFAULT_HEARTBEAT_S), DEFAULT_HEARTBEAT_S)


def ensure_crash_detector(within_s: float | None = None) -> str:
    """Create or update :func:`crash_detector` on the server (one automation of that name); its id."""
    from prefect.client.orchestration import get_client

    wanted = crash_detector(within_s)
    with get_client(sync_client=True) as client:
        existing = client.read_automations_by_name(CRASH_DETECTOR)
        for extra in existing[1:]:
            client.delete_automation(extra.id)
        if existing:
            cur = existing[0]
            if (cur.trigger.model_dump(mode="json") == wanted.trigger.model_dump(mode="json")
                    and [a.model_dump(mode="json") for a in cur.actions]
                    == [a.model_dump(mode="json") for a in wanted.actions] and cur.enabled):
                return str(cur.id)
            client.update_automation(cur.id, wanted)
            return str(cur.id)
        return str(client.create_automation(wanted))


def _flows() -> dict[str, Any]:
    from flows.drift_check import drift_check
    from flows.retraining import retraining
    from flows.training import training

    return {"training": training, "drift-check": drift_check, "retraining": retraining}


def build_deployments(settings: Settings, work_pool: str | None = None, paused: dict[str, bool] | None = None,
                      only: list[str] | None = None) -> list:
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
    common = dict(parameters=params, tags=TAGS, entrypoint_type=EntrypointType.MODULE_PATH,
                  work_pool_name=work_pool, version=None)
    if work_pool is not None:
        # A worker's runs heartbeat as often as the crash detector expects (see crash_detector).
        common["job_variables"] = {"env": {"PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(heartbeat_seconds())}}
    specs = {
        "training": dict(description="Train, evaluate and register a model; promote it when it is at least as "
                                     "good as the champion. Run on demand."),
        "drift-check": dict(description=f"Check new batches under {settings.drift.batches_uri} for drift "
                                        f"(cron {settings.drift.schedule_cron}); pause it here to stop checking.",
                            schedules=[schedule] if schedule is not None else [],
                            concurrency_limit=ConcurrencyLimitConfig(
                                limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW)),
        "retraining": dict(description="Retrain on the training data plus the drifted batches when a "
                                       f"{DRIFT_EVENT} event for {settings.registry.model_name} arrives.",
                           triggers=[trigger],
                           concurrency_limit=ConcurrencyLimitConfig(
                               limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE)),
    }
    out = []
    for name in names:
        kw = dict(common, **specs[name])
        if name in paused:
            kw["paused"] = paused[name]
        out.append(flows[name].to_deployment(name=name, **kw))
    return out


def api_url() -> str | None:
    """The Prefect API this process talks to (PREFECT_API_URL or the active profile), or None."""
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    return str(url).rstrip("/") if url else None


def check_server(url: str | None = None, timeout: float = 5.0) -> str:
    """Return the API URL when a Prefect server answers there; else DeploymentError saying what to run."""
    import httpx

    url = url or api_url()
    if not url:
        raise DeploymentError("PREFECT_API_URL is not set, so there is no Prefect server to deploy to: run "
                              "`driftloop up` and export the variables it prints (or `prefect server start` and "
                              "`export PREFECT_API_URL=http://127.0.0.1:4200/api`)")
    try:
        r = httpx.get(f"{url}/health", timeout=timeout)
        r.raise_for_status()
    except httpx.HTTPError as e:
        raise DeploymentError(f"no Prefect server at {url} ({type(e).__name__}: {e}): run `driftloop up` "
                              "(or `prefect server start`), or fix PREFECT_API_URL") from None
    # /health answers without credentials; a server started with PREFECT_SERVER_API_AUTH_STRING
    # refuses everything else. Say so before a deploy fails half-way with a bare 401.
    try:
        r = httpx.get(f"{url}/admin/version", headers=_auth_headers(), timeout=timeout)
    except httpx.HTTPError:
        return url
    if r.status_code in (401, 403):
        given = "the credentials in PREFECT_API_AUTH_STRING were refused" if _auth_headers() else \
            "no credentials were given"
        raise DeploymentError(f"the Prefect server at {url} requires authentication and {given}: set "
                              "PREFECT_API_AUTH_STRING='user:password' to the server's PREFECT_SERVER_API_AUTH_STRING")
    return url


def _auth_headers() -> dict[str, str]:
    """The Authorization header the Prefect client sends (basic auth string or API key); never logged."""
    import base64

    from prefect.settings import get_current_settings

    api = get_current_settings().api
    if api.auth_string is not None:
        token = base64.b64encode(api.auth_string.get_secret_value().encode()).decode()
        return {"Authorization": f"Basic {token}"}
    if api.key is not None:
        return {"Authorization": f"Bearer {api.key.get_secret_value()}"}
    return {}


def ensure_work_pool(name: str, pool_type: str = "process") -> dict[str, Any]:
    """Create the work pool when it does not exist (an existing pool is left as it is)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            pool = client.read_work_pool(name)
            return {"name": pool.name, "type": pool.type, "created": False}
        except ObjectNotFound:
            pool = client.create_work_pool(WorkPoolCreate(name=name, type=pool_type))
            return {"name": pool.name, "type": pool.type, "created": True}


def _prune_schedules(deployment_id, wanted: list) -> list[str]:
    """Delete schedules of the deployment that are not (or no longer) wanted; keep one per wanted cron."""
    from prefect.client.orchestration import get_client

    removed = []
    with get_client(sync_client=True) as client:
        keep = {getattr(s, "cron", None) for s in wanted}
        seen = set()
        for s in client.read_deployment_schedules(deployment_id):
            cron = getattr(s.schedule, "cron", None)
            if cron in keep and cron not in seen:
                seen.add(cron)
                continue
            client.delete_deployment_schedule(deployment_id, s.id)
            removed.append(str(s.id))
    return removed


def fingerprint(deployment, work_pool: str | None) -> str:
    """A short hash of what a deployment declares (flow, entrypoint, parameters, schedules,
    concurrency, triggers, work pool; not its pause state). Stored as the deployment's version, it
    lets a re-deploy of an unchanged declaration write nothing at all."""
    import hashlib
    import json

    doc = {"flow": deployment.flow_name, "name": deployment.name, "entrypoint": deployment.entrypoint,
           "parameters": deployment.model_dump(mode="json", include={"parameters"})["parameters"],
           "description": deployment.description, "tags": sorted(deployment.tags or []), "work_pool": work_pool,
           "schedules": [s.schedule.model_dump(mode="json") for s in (deployment.schedules or [])],
           "concurrency": [deployment.concurrency_limit,
                           deployment.concurrency_options.model_dump(mode="json")
                           if deployment.concurrency_options else None],
           "triggers": [t.model_dump(mode="json") for t in (deployment.triggers or [])],
           "job_variables": deployment.job_variables or {}}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _unchanged(current: dict[str, Any] | None, deployment, version: str, work_pool: str) -> bool:
    if not current or not current.get("exists") or current.get("version") != version:
        return False
    if current["work_pool"] != work_pool:
        return False
    wanted_crons = sorted(getattr(s.schedule, "cron", None) for s in (deployment.schedules or []))
    if sorted(s["cron"] for s in current["schedules"]) != wanted_crons:
        return False
    return len(current["automations"]) == len(deployment.triggers or [])


def deploy_all(settings: Settings, work_pool: str = DEFAULT_WORK_POOL, pool_type: str = "process",
               only: list[str] | None = None) -> list[dict[str, Any]]:
    """Create or update the deployments on the configured Prefect server (idempotent).

    Checks the server first (DeploymentError naming the URL and `driftloop up`) and creates the work
    pool when missing. A deployment whose declaration (see :func:`fingerprint`) and schedules and
    automations on the server are as declared is left untouched ("unchanged": nothing is written).
    Otherwise it is applied, keeping its pause state (a pause made in the UI survives), with its
    automations replaced (Prefect deletes those a deployment owns before re-creating them), and
    any schedule left from an earlier configuration deleted. Returns :func:`describe_deployments`
    with an ``action`` (created / updated / unchanged) per deployment.
    """
    names = list(only or DEPLOYMENTS)
    deployments = build_deployments(settings, work_pool=work_pool, only=names)  # config errors before any I/O
    check_server()
    ensure_work_pool(work_pool, pool_type)
    current = {d["name"]: d for d in describe_deployments(names)}
    actions = {}
    for d in deployments:
        full = f"{d.flow_name}/{d.name}"
        version = f"driftloop-{fingerprint(d, work_pool)}"
        cur = current.get(full)
        if _unchanged(cur, d, version, work_pool):
            actions[full] = "unchanged"
            continue
        d.version = version
        # Prefect replaces a version that came from the flow with the git commit when the checkout
        # has a remote (a fresh clone does); ours must stay the declaration's fingerprint.
        d._version_from_flow = False
        if cur and cur.get("exists"):
            d.paused = bool(cur["paused"])
        try:
            dep_id = d.apply(work_pool_name=work_pool)
        except Exception as e:  # noqa: BLE001 - Prefect raises several types; name the deployment
            raise DeploymentApplyError(f"deployment {full} could not be applied on {api_url()}: {e}") from e
        _prune_schedules(dep_id, [s.schedule for s in (d.schedules or [])])
        actions[full] = "updated" if cur and cur.get("exists") else "created"
    ensure_crash_detector()
    return [dict(x, action=actions.get(x["name"])) for x in describe_deployments(names)]


def describe_deployments(names: list[str] | None = None) -> list[dict[str, Any]]:
    """What the server holds for each deployment: id, work pool, paused, parameters' keys, schedules
    (cron, active), concurrency limit and the automations it owns (expect, match, for_each, within)."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    out = []
    with get_client(sync_client=True) as client:
        for name in names or DEPLOYMENTS:
            try:
                d = client.read_deployment_by_name(f"{name}/{name}")
            except ObjectNotFound:
                out.append({"name": f"{name}/{name}", "exists": False})
                continue
            autos = client.read_resource_related_automations(f"prefect.deployment.{d.id}")
            out.append({
                "name": f"{name}/{name}", "exists": True, "id": str(d.id), "work_pool": d.work_pool_name,
                "paused": d.paused, "version": d.version, "entrypoint": d.entrypoint, "parameters": sorted(d.parameters),
                "concurrency_limit": (d.global_concurrency_limit.limit if d.global_concurrency_limit else None),
                "collision_strategy": (str(d.concurrency_options.collision_strategy.value)
                                       if d.concurrency_options else None),
                "schedules": [{"id": str(s.id), "cron": getattr(s.schedule, "cron", None),
                               "timezone": getattr(s.schedule, "timezone", None), "active": s.active}
                              for s in client.read_deployment_schedules(d.id)],
                "automations": [{"id": str(a.id), "name": a.name, "enabled": a.enabled,
                                 "expect": sorted(getattr(a.trigger, "expect", []) or []),
                                 "match": dict(getattr(getattr(a.trigger, "match", None), "root", None) or {}),
                                 "for_each": sorted(getattr(a.trigger, "for_each", []) or []),
                                 "threshold": getattr(a.trigger, "threshold", None),
                                 "within_s": (a.trigger.within.total_seconds()
                                              if getattr(a.trigger, "within", None) is not None else None)}
                                for a in autos],
            })
    return out


def serve_all(settings: Settings, limit: int | None = None, only: list[str] | None = None) -> None:
    """Serve the deployments from this process (no work pool, no worker) until interrupted.

    Checks the server first. Runs start as subprocesses of this one; ``limit`` caps how many at once.
    """
    from prefect import serve

    # The served runs inherit this environment: they heartbeat as often as the crash detector expects.
    os.environ["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] = str(heartbeat_seconds())
    deployments = build_deployments(settings, work_pool=None, only=only)
    check_server()
    ensure_crash_detector()
    serve(*deployments, limit=limit, print_starting_message=True)


def env_for_worker() -> dict[str, str]:
    """The environment a worker or serve process needs besides the code (for documentation/tests)."""
    keys = ("PREFECT_API_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")
    return {k: os.environ[k] for k in keys if k in os.environ}

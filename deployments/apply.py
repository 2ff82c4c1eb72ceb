"""Applying the deployments that ``deployments/build.py`` builds: to a Prefect server and work pool
(:func:`deploy_all`, idempotent), or served from this process (:func:`serve_all`); the server probes
and the crash-detector automation they both install.
"""

from __future__ import annotations

import os
from typing import Any

from deployments.build import (
    CRASH_DETECTOR,
    DEFAULT_WORK_POOL,
    DEPLOYMENTS,
    build_deployments,
    crash_detector,
    fingerprint,
    heartbeat_seconds,
)
from deployments.errors import DeploymentApplyError, DeploymentError
from tasks.settings import Settings


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
            if (
                cur.trigger.model_dump(mode="json") == wanted.trigger.model_dump(mode="json")
                and [a.model_dump(mode="json") for a in cur.actions]
                == [a.model_dump(mode="json") for a in wanted.actions]
                and cur.enabled
            ):
                return str(cur.id)
            client.update_automation(cur.id, wanted)
            return str(cur.id)
        return str(client.create_automation(wanted))


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
        raise DeploymentError(
            "PREFECT_API_URL is not set, so there is no Prefect server to deploy to: run "
            "`driftloop up` and export the variables it prints (or `prefect server start` and "
            "`export PREFECT_API_URL=http://127.0.0.1:4200/api`)"
        )
    try:
        r = httpx.get(f"{url}/health", timeout=timeout)
        r.raise_for_status()
    except httpx.HTTPError as e:
        raise DeploymentError(
            f"no Prefect server at {url} ({type(e).__name__}: {e}): run `driftloop up` "
            "(or `prefect server start`), or fix PREFECT_API_URL"
        ) from None
    # /health answers without credentials; a server started with PREFECT_SERVER_API_AUTH_STRING
    # refuses everything else. Say so before a deploy fails half-way with a bare 401.
    try:
        r = httpx.get(f"{url}/admin/version", headers=_auth_headers(), timeout=timeout)
    except httpx.HTTPError:
        return url
    if r.status_code in (401, 403):
        given = (
            "the credentials in PREFECT_API_AUTH_STRING were refused"
            if _auth_headers()
            else "no credentials were given"
        )
        raise DeploymentError(
            f"the Prefect server at {url} requires authentication and {given}: set "
            "PREFECT_API_AUTH_STRING='user:password' to the server's PREFECT_SERVER_API_AUTH_STRING"
        )
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


def _unchanged(current: dict[str, Any] | None, deployment, version: str, work_pool: str) -> bool:
    if not current or not current.get("exists") or current.get("version") != version:
        return False
    if current["work_pool"] != work_pool:
        return False
    wanted_crons = sorted(getattr(s.schedule, "cron", None) for s in (deployment.schedules or []))
    if sorted(s["cron"] for s in current["schedules"]) != wanted_crons:
        return False
    return len(current["automations"]) == len(deployment.triggers or [])


def deploy_all(
    settings: Settings, work_pool: str = DEFAULT_WORK_POOL, pool_type: str = "process", only: list[str] | None = None
) -> list[dict[str, Any]]:
    """Create or update the deployments on the configured Prefect server (idempotent).

    Checks the server first (DeploymentError naming the URL and `driftloop up`) and creates the work
    pool when missing. A deployment whose declaration (see :func:`fingerprint`) and schedules and
    automations on the server are as declared is left untouched ("unchanged": nothing is written).
    Otherwise it is applied, keeping its pause state (a pause made in the UI survives), with its
    automations replaced (Prefect deletes those a deployment owns before re-creating them), and
    any schedule left from an earlier configuration deleted. Returns :func:`describe_deployments`
    with an ``action`` (created / updated / unchanged) per deployment.
    """
    from prefect.client.schemas.objects import VersionInfo

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
        if cur and cur.get("exists"):
            d.paused = bool(cur["paused"])
        try:
            # An explicit version_info (a public argument of apply) keeps the version ours: without it
            # Prefect infers one and, in a checkout with a git remote, replaces the version with the commit.
            dep_id = d.apply(work_pool_name=work_pool, version_info=VersionInfo(type="prefect:simple", version=version))
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
            out.append(
                {
                    "name": f"{name}/{name}",
                    "exists": True,
                    "id": str(d.id),
                    "work_pool": d.work_pool_name,
                    "paused": d.paused,
                    "version": d.version,
                    "entrypoint": d.entrypoint,
                    "parameters": sorted(d.parameters),
                    "concurrency_limit": (d.global_concurrency_limit.limit if d.global_concurrency_limit else None),
                    "collision_strategy": (
                        str(d.concurrency_options.collision_strategy.value) if d.concurrency_options else None
                    ),
                    "schedules": [
                        {
                            "id": str(s.id),
                            "cron": getattr(s.schedule, "cron", None),
                            "timezone": getattr(s.schedule, "timezone", None),
                            "active": s.active,
                        }
                        for s in client.read_deployment_schedules(d.id)
                    ],
                    "automations": [
                        {
                            "id": str(a.id),
                            "name": a.name,
                            "enabled": a.enabled,
                            "expect": sorted(getattr(a.trigger, "expect", []) or []),
                            "match": dict(getattr(getattr(a.trigger, "match", None), "root", None) or {}),
                            "for_each": sorted(getattr(a.trigger, "for_each", []) or []),
                            "threshold": getattr(a.trigger, "threshold", None),
                            "within_s": (
                                a.trigger.within.total_seconds()
                                if getattr(a.trigger, "within", None) is not None
                                else None
                            ),
                        }
                        for a in autos
                    ],
                }
            )
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

"""`driftloop deploy` against a real `prefect server start`: idempotency, updates without stale
schedules or triggers, a pause that survives, the schedule producing runs, and the event trigger
starting one templated retraining run per drift episode."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import pytest
from typer.testing import CliRunner

from deployments.apply import deploy_all, describe_deployments
from deployments.build import CRASH_DETECTOR, heartbeat_seconds
from flows.cli import app
from tasks.drift.events import DRIFT_EVENT, resource_id
from tasks.settings import load_settings

pytestmark = pytest.mark.integration


def smoke(**over):
    return load_settings(profile="smoke", overrides=over, environ={})


def _deployment_runs(name: str) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    with get_client(sync_client=True) as c:
        dep = c.read_deployment_by_name(name)
        return c.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[dep.id])))


def _strip(ds):
    return [{k: v for k, v in d.items() if k != "action"} for d in ds]


def test_deploy_twice_changes_nothing_and_updates_leave_nothing_stale(on_server):
    first = deploy_all(smoke())
    second = deploy_all(smoke())
    assert {d["action"] for d in second} == {"unchanged"}
    # same ids, same schedule ids, same automation ids: nothing was rewritten
    assert _strip(first) == _strip(second)
    by = {d["name"]: d for d in second}
    assert [s["cron"] for s in by["drift-check/drift-check"]["schedules"]] == ["*/15 * * * *"]
    assert by["training/training"]["schedules"] == [] and by["training/training"]["automations"] == []
    (auto,) = by["retraining/retraining"]["automations"]
    assert auto["expect"] == [DRIFT_EVENT] and auto["for_each"] == ["driftloop.episode.id"]
    assert by["retraining/retraining"]["concurrency_limit"] == 1
    assert by["retraining/retraining"]["collision_strategy"] == "ENQUEUE"

    # a schedule paused in the UI stays paused across a re-deploy that changes the cron;
    # the old cron's schedule is gone, not kept beside the new one
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as c:
        c.pause_deployment(by["drift-check/drift-check"]["id"])
    third = {
        d["name"]: d for d in deploy_all(smoke(**{"drift.schedule_cron": "0 * * * *", "drift.cooldown_seconds": 300}))
    }
    dc = third["drift-check/drift-check"]
    assert dc["action"] == "updated" and dc["paused"] is True
    assert [s["cron"] for s in dc["schedules"]] == ["0 * * * *"]
    (auto2,) = third["retraining/retraining"]["automations"]
    assert auto2["within_s"] == 300.0
    # back to the defaults: one schedule, one automation, still paused until resumed
    fourth = {d["name"]: d for d in deploy_all(smoke())}
    assert [s["cron"] for s in fourth["drift-check/drift-check"]["schedules"]] == ["*/15 * * * *"]
    assert len(fourth["retraining/retraining"]["automations"]) == 1
    with get_client(sync_client=True) as c:
        c.resume_deployment(fourth["drift-check/drift-check"]["id"])
        autos = sorted(a.name for a in c.read_automations() if a.name.startswith("driftloop:"))
    # no automation left over from an earlier deploy: the retraining trigger and one crash detector
    assert autos == [CRASH_DETECTOR, "driftloop: retrain digits-classifier on drift"]
    with get_client(sync_client=True) as c:
        (detector,) = c.read_automations_by_name(CRASH_DETECTOR)
    assert (
        detector.trigger.posture.value == "Proactive"
        and detector.trigger.within.total_seconds() == 3 * heartbeat_seconds()
    )
    assert detector.actions[0].state.value == "CRASHED"


def test_drift_check_schedule_creates_runs_every_15_minutes(on_server):
    deploy_all(smoke(), only=["drift-check"])
    deadline = time.time() + 60
    runs = []
    while time.time() < deadline:
        runs = [r for r in _deployment_runs("drift-check/drift-check") if r.state and r.state.is_scheduled()]
        if len(runs) >= 2:
            break
        time.sleep(1)
    assert len(runs) >= 2, "the scheduler made no runs for the drift-check deployment"
    times = sorted(r.expected_start_time for r in runs)
    assert all(t.minute % 15 == 0 and t.second == 0 for t in times)
    assert (times[1] - times[0]).total_seconds() == 900


async def _emit(api_url: str, events: list[dict]) -> None:
    from prefect.events import Event
    from prefect.events.clients import PrefectEventsClient

    async with PrefectEventsClient(api_url=api_url) as client:
        for e in events:
            await client.emit(Event(**e))


def _event(model: str, episode: str, batches: list[str], version: int = 3) -> dict:
    return {
        "event": DRIFT_EVENT,
        "id": uuid.uuid4(),
        "resource": {"prefect.resource.id": resource_id(model), "driftloop.episode.id": episode},
        "payload": {
            "model": model,
            "version": version,
            "batch_ids": batches,
            "detector": "ks_softmax",
            "episode_id": episode,
            "scores": [],
        },
    }


def test_drift_events_start_one_templated_retraining_run_per_episode(on_server):
    model = f"m-{uuid.uuid4().hex[:6]}"
    deploy_all(smoke(**{"registry.model_name": model}))
    before = {r.id for r in _deployment_runs("retraining/retraining")}
    ep1, ep2 = str(uuid.uuid4()), str(uuid.uuid4())
    burst = [_event(model, ep1, ["b-001"]), _event(model, ep1, ["b-001", "b-002"]), _event(model, ep1, ["b-003"])]
    asyncio.run(_emit(on_server.api_url, burst[:1]))
    time.sleep(1.0)  # the first of the burst arrives first
    asyncio.run(
        _emit(
            on_server.api_url,
            burst[1:] + [_event(model, ep2, ["b-101"], version=4), _event("another-model", str(uuid.uuid4()), ["x"])],
        )
    )
    deadline = time.time() + 45
    new = []
    while time.time() < deadline:
        new = [r for r in _deployment_runs("retraining/retraining") if r.id not in before]
        if len(new) >= 2:
            time.sleep(3)  # give a (wrong) third run time to appear
            new = [r for r in _deployment_runs("retraining/retraining") if r.id not in before]
            break
        time.sleep(0.5)
    assert len(new) == 2, [r.parameters for r in new]
    by_ep = {r.parameters["episode_id"]: r.parameters for r in new}
    assert set(by_ep) == {ep1, ep2}
    p1 = by_ep[ep1]
    assert p1["batch_ids"] == ["b-001"] and p1["model_version"] == 3 and p1["detector"] == "ks_softmax"
    assert p1["event_id"] == str(burst[0]["id"])
    assert by_ep[ep2]["batch_ids"] == ["b-101"] and by_ep[ep2]["model_version"] == 4
    assert p1["config"]["registry"]["model_name"] == model  # the deployment's config parameter goes along


def test_cli_deploy_json_and_errors(on_server, tmp_path, monkeypatch):
    runner = CliRunner()
    monkeypatch.setenv("PREFECT_API_URL", on_server.api_url)
    r = runner.invoke(app, ["deploy", "--smoke", "--json"])
    assert r.exit_code == 0, r.output
    assert {d["name"] for d in json.loads(r.output)} == {
        "training/training",
        "drift-check/drift-check",
        "retraining/retraining",
    }
    r = runner.invoke(app, ["deploy", "--smoke"])
    assert r.exit_code == 0 and r.output.count("unchanged") == 3, r.output
    bad = tmp_path / "bad.toml"
    bad.write_text("[training\nepochs = 3\n")
    r = runner.invoke(app, ["deploy", "--config", str(bad)])
    assert r.exit_code == 2 and "malformed" in r.output and "bad.toml" in r.output
    r = runner.invoke(app, ["deploy", "--smoke", "--only", "trainig"])
    assert r.exit_code == 2 and "unknown deployment" in r.output
    assert {d["name"] for d in describe_deployments()} == {
        "training/training",
        "drift-check/drift-check",
        "retraining/retraining",
    }


def test_cli_deploy_without_a_server_says_what_to_run(monkeypatch):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from deployments.stack import free_port

    url = f"http://127.0.0.1:{free_port()}/api"
    with temporary_settings({PREFECT_API_URL: url}):
        r = CliRunner().invoke(app, ["deploy", "--smoke"])
    assert r.exit_code == 2
    assert f"no Prefect server at {url}" in r.output and "driftloop up" in r.output
    with temporary_settings({PREFECT_API_URL: None}):
        r = CliRunner().invoke(app, ["serve", "--smoke"])
    assert r.exit_code == 2 and "PREFECT_API_URL is not set" in r.output and "driftloop up" in r.output


def test_the_version_stays_the_fingerprint_where_prefect_would_infer_a_commit(on_server, monkeypatch):
    # In CI (GITHUB_* set) or a clone with a remote, Prefect infers a version from git and puts the
    # commit in place of a flow's version; deploy_all hands Prefect an explicit version_info instead.
    monkeypatch.setenv("GITHUB_SHA", "0123456789abcdef0123456789abcdef01234567")
    monkeypatch.setenv("GITHUB_REF_NAME", "main")
    monkeypatch.setenv("GITHUB_REPOSITORY", "someone/driftloop")
    settings = smoke(**{"registry.model_name": f"v-{uuid.uuid4().hex[:6]}"})
    deploy_all(settings, only=["training"])
    (d,) = describe_deployments(["training"])
    assert d["version"].startswith("driftloop-") and "0123456789" not in d["version"]
    assert deploy_all(settings, only=["training"])[0]["action"] == "unchanged"

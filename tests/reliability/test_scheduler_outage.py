"""Orchestration: the scheduler (or the worker / ``driftloop serve``) was down for several drift-check
intervals. When it returns, no batch is checked twice and at most one catch-up check runs.

While nothing executes runs, the server keeps the runs its scheduler made for the missed cron ticks:
they are all due (Late) when a runner comes back. This test recreates exactly that state on a real
``prefect server start``: the drift-check deployment, four runs scheduled 60/45/30/15 minutes ago
(the missed ticks of the default ``*/15`` cron) and six batches that arrived meanwhile; then it starts
``driftloop serve --only drift-check``. The deployment's concurrency limit of 1 with ``CANCEL_NEW``
(``deployments/build.py``) lets the first catch-up run start and cancels the others; the first run
checks all six batches, and the store's write-once ledger records each exactly once.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from deployments.stack import stop_group
from tests.reliability.conftest import smoke_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
MISSED_TICKS = 4
BATCHES = 6


def _runs(deployment_id) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    with get_client(sync_client=True) as c:
        return c.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])))


def test_scheduler_back_after_an_outage_runs_one_catch_up_check(on_server, tmp_path, figures):
    from prefect.client.orchestration import get_client
    from prefect.states import Scheduled

    from deployments.build import build_deployments
    from flows.training import training
    from tasks.drift import ledger
    from tasks.drift.cli import simulate_stream_command
    from tasks.store.artifacts import ArtifactStore

    model = f"outage-{uuid.uuid4().hex[:6]}"
    # A cron that cannot fire during the test: only the missed ticks below are due.
    overrides = {"registry.model_name": model, "drift.schedule_cron": "0 0 1 1 *"}
    s = smoke_settings(tmp_path, **overrides)
    training(s)  # the champion and its drift reference
    simulate_stream_command(
        str(tmp_path / "batches"),
        kind="gaussian_noise",
        onset=2,
        duration=2,
        batches=BATCHES,
        batch_size=100,
        settings=s,
    )

    (dep,) = build_deployments(s, work_pool=None, only=["drift-check"])
    dep_id = dep.apply()
    now = dt.datetime.now(dt.timezone.utc)
    with get_client(sync_client=True) as c:
        for r in _runs(dep_id):  # runs other tests left scheduled for this deployment name
            if r.state and r.state.is_scheduled():
                c.delete_flow_run(r.id)
        missed = [
            c.create_flow_run_from_deployment(
                dep_id, state=Scheduled(scheduled_time=now - dt.timedelta(minutes=15 * (MISSED_TICKS - i)))
            )
            for i in range(MISSED_TICKS)
        ]
    missed_ids = {r.id for r in missed}

    # The runner comes back: `driftloop serve` with the same configuration (same deployment).
    params = []
    for k, v in {
        "tuning.enabled": "false",
        "federated.enabled": "false",
        "adversarial.enabled": "false",
        "training.epochs": "3",
        "store.uri": str(tmp_path / "store"),
        "drift.batches_uri": str(tmp_path / "batches"),
        **overrides,
    }.items():
        params += ["--param", f"{k}={v}"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "DRIFTLOOP_"))}
    env.update(
        PREFECT_API_URL=on_server.api_url,
        PREFECT_HOME=str(tmp_path / "home"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_RUNNER_POLL_FREQUENCY="2",
    )
    log = open(tmp_path / "serve.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "serve", "--smoke", "--only", "drift-check", *params],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline, runs = time.time() + 240, []
        while time.time() < deadline:
            runs = [r for r in _runs(dep_id) if r.id in missed_ids]
            if all(r.state and r.state.is_final() for r in runs):
                break
            time.sleep(1)
        else:
            raise AssertionError(
                f"catch-up runs not final after 240 s: {[(r.name, r.state_name) for r in runs]}; "
                f"serve log:\n{(tmp_path / 'serve.log').read_text()[-3000:]}"
            )
        time.sleep(3)  # nothing else may start afterwards
        after = [r for r in _runs(dep_id) if r.id in missed_ids]
        # runs of this deployment name that other tests finished earlier on the shared server do not count
        others = [
            r
            for r in _runs(dep_id)
            if r.id not in missed_ids
            and r.state
            and not r.state.is_scheduled()
            and r.start_time is not None
            and r.start_time >= now
        ]
    finally:
        stop_group(proc.pid, 15, proc)
        log.close()
    assert proc.poll() is not None

    started = [r for r in after if r.run_count > 0]  # entered Running (Cancelled runs get a start_time too)
    completed = [r for r in after if r.state.is_completed()]
    cancelled = [r for r in after if r.state.is_cancelled()]
    store = ArtifactStore.from_config(s.store)
    history = ledger.check_history(store.backend, model)
    checked = [h["batch_id"] for h in history]
    figures.update(
        missed_intervals=MISSED_TICKS,
        catch_up_runs_started=len(started),
        runs_completed=len(completed),
        runs_cancelled=len(cancelled),
        cancel_reason=sorted({r.state.message for r in cancelled}),
        batches=BATCHES,
        checks_recorded=len(history),
        batch_checked_twice=len(checked) - len(set(checked)),
        objects_lost=0,
    )
    assert not others, [(r.name, r.state_name) for r in others]
    assert len(completed) == 1 and len(started) == 1, [(r.name, r.state_name, r.run_count) for r in after]
    assert len(cancelled) == MISSED_TICKS - 1
    assert all("concurrency limit" in (r.state.message or "") for r in cancelled)
    # the one catch-up check saw every batch that arrived during the outage, each once
    # (ids are the file's key plus a content hash: tasks/drift/discovery.py)
    assert sorted(b.split(".npz-")[0] for b in checked) == [f"batch-{i:05d}" for i in range(BATCHES)]

"""`driftloop serve`: one process, no worker, runs the training deployment on request and the
retraining deployment when a drift event arrives."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from deployments.stack import stop_group
from tasks.store.artifacts import ArtifactStore
from tasks.store.config import StoreConfig
from tests.deployments.test_deploy_server import _deployment_runs

pytestmark = pytest.mark.integration

FAST = [
    "--param",
    "tuning.enabled=false",
    "--param",
    "federated.enabled=false",
    "--param",
    "adversarial.enabled=false",
    "--param",
    "training.epochs=2",
]


def _wait_for(pred, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


# 30-70 s end to end: in the full suite, not in the quick `-m "not slow"` run.
@pytest.mark.slow
def test_serve_closes_the_loop_drift_to_exactly_one_retraining(on_server, tmp_path):
    """Served deployments only: training on demand, then a drifted stream, then the drift-check
    deployment emits an event, the retraining deployment runs once, and the registry shows it."""
    model = f"served-{uuid.uuid4().hex[:6]}"
    store_uri, batches = str(tmp_path / "store"), str(tmp_path / "batches")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "DRIFTLOOP_"))}
    env.update(
        PREFECT_API_URL=on_server.api_url,
        PREFECT_HOME=str(tmp_path / "home"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_RUNNER_POLL_FREQUENCY="2",
    )
    log = open(tmp_path / "serve.log", "wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "flows.cli",
            "serve",
            "--smoke",
            *FAST,
            "--param",
            f"store.uri={store_uri}",
            "--param",
            f"registry.model_name={model}",
            "--param",
            f"drift.batches_uri={batches}",
        ],
        cwd=Path(__file__).resolve().parents[2],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        from prefect.client.orchestration import get_client

        def served():
            with get_client(sync_client=True) as c:
                try:
                    d = c.read_deployment_by_name("retraining/retraining")
                except Exception:  # noqa: BLE001 - not there yet
                    return None
                return d.parameters["config"]["registry"]["model_name"] == model

        _wait_for(served, 90, "the served deployments")

        from prefect.deployments import run_deployment

        run = run_deployment("training/training", timeout=240, poll_interval=1)
        assert run.state.is_completed(), run.state
        store = ArtifactStore.from_config(StoreConfig(uri=store_uri))
        assert len(store.list_runs("training")) == 1  # the served run wrote to the store in the deployment's config

        # A labelled stream that drifts at batches 2-3 (the simulator draws from the test split).
        from tasks.drift.cli import simulate_stream_command
        from tasks.settings import load_settings

        s = load_settings(profile="smoke", environ={}, overrides={"store.uri": store_uri})
        simulate_stream_command(
            batches, kind="gaussian_noise", onset=2, duration=2, batches=5, batch_size=100, settings=s
        )
        before = {r.id for r in _deployment_runs("retraining/retraining")}
        check = run_deployment("drift-check/drift-check", timeout=240, poll_interval=1)
        assert check.state.is_completed(), check.state

        def finished():
            new = [r for r in _deployment_runs("retraining/retraining") if r.id not in before]
            return new if new and all(r.state and r.state.is_final() for r in new) else None

        (rt,) = _wait_for(finished, 240, "the event-triggered retraining run to finish")
        assert rt.state.is_completed(), rt.state
        # Batch ids are the file's key plus a content hash (tasks/drift/discovery.py).
        assert [b.rsplit("-", 1)[0] for b in rt.parameters["batch_ids"]] == ["batch-00002.npz", "batch-00003.npz"]
        assert rt.parameters["model_version"] == 1

        from tasks.store.registry import ModelRegistry

        reg = ModelRegistry(store, model)
        v2 = reg.get(2)
        assert v2["lineage"]["parent_version"] == 1 and v2["lineage"]["trigger"]["event_id"]
        assert reg.champion()["version"] in (1, 2)  # promoted or kept: the gate's call, recorded either way

        # Checking again finds nothing new: no event, still exactly one retraining run.
        again = run_deployment("drift-check/drift-check", timeout=240, poll_interval=1)
        assert again.state.is_completed()
        time.sleep(3)
        assert len([r for r in _deployment_runs("retraining/retraining") if r.id not in before]) == 1
    finally:
        stop_group(proc.pid, 15, proc)
        log.close()
    assert proc.poll() is not None

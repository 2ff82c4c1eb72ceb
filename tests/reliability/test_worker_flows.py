"""Flows on a real worker (issue 17): production Prefect runs deployments with workers, not `serve`.

Real parts: the session's ``prefect server start``, ``driftloop deploy`` (deploy_all) to a process
work pool, and ``prefect worker start --pool ...`` processes started in *another* working directory
(code reaches them as an installed package would: the worker's Python imports ``flows.*`` by module
path; here PYTHONPATH stands in for ``pip install``). One deployment set, three stages:

1. a training run started from the deployment completes on worker A;
2. a drift event starts retraining on worker A (the deployment's event trigger);
3. worker A is SIGKILLed (with its flow-run child) mid-run: the heartbeat detector marks the run
   Crashed, and worker B picks up and completes the next run.

The pool has a name of its own per test: workers poll their pool, and runs other tests scheduled on
the shared server's `driftloop-process` pool must not land here.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
WINDOW_S = 40  # crash detector window (heartbeats every 30 s, Prefect's minimum)


def _read(run_id):
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as c:
        return c.read_flow_run(run_id)


def _wait(pred, timeout, what, logs=()):
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(1)
    tails = "\n".join(f"--- {p}\n{Path(p).read_text(errors='replace')[-2500:]}" for p in logs if Path(p).exists())
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{tails}")


class Worker:
    """``prefect worker start`` in its own process group and working directory; stopped by that group."""

    def __init__(self, api_url: str, pool: str, name: str, tmp_path: Path):
        self.cwd = tmp_path / f"worker-{name}"
        self.cwd.mkdir()
        self.log = self.cwd / "worker.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "DRIFTLOOP_"))}
        env.update(
            PREFECT_API_URL=api_url,
            PREFECT_HOME=str(self.cwd / "prefect-home"),
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            PREFECT_WORKER_QUERY_SECONDS="1",
            PREFECT_LOGGING_LEVEL="INFO",
            # Stands in for an installed driftloop (pip install . / a wheel): see deployments/README.md.
            PYTHONPATH=str(ROOT),
        )
        self.name = f"{pool}-{name}"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "prefect",
                    "worker",
                    "start",
                    "--pool",
                    pool,
                    "--type",
                    "process",
                    "--name",
                    self.name,
                ],
                cwd=self.cwd,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def descendants(self) -> list[int]:
        """Every live process below the worker (its flow-run processes run in sessions of their own)."""
        kids: dict[int, list[int]] = {}
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    with open(f"/proc/{d}/stat") as f:
                        kids.setdefault(int(f.read().rsplit(")", 1)[1].split()[1]), []).append(int(d))
                except (OSError, IndexError, ValueError):
                    pass
        out, todo = [], [self.proc.pid]
        while todo:
            for c in kids.get(todo.pop(), []):
                out.append(c)
                todo.append(c)
        return out

    def kill(self) -> list[int]:
        """SIGKILL the worker and every process below it at once (a lost machine); returns their pids."""
        if self.proc.poll() is not None:
            return []
        below = self.descendants()
        os.killpg(self.proc.pid, signal.SIGKILL)
        for pid in below:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(timeout=30)
        return below


def _batch(batches: Path, d) -> tuple[str, str]:
    """A labelled, drifted batch the retraining run trains on (noise on the pixels): its id and URI."""
    from tasks.drift.discovery import batch_id_for

    batches.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    x = np.clip(d.x[:200] + rng.normal(0, 0.3, d.x[:200].shape), 0, 1).astype(np.float32)
    path = batches / "batch-00001.npz"
    np.savez(path, x=x.reshape(200, -1), y=d.y[:200])
    # Its id as the drift check gives it: the key plus a content hash (tasks/drift/discovery.py).
    return batch_id_for(path.name, hashlib.sha256(path.read_bytes()).hexdigest()), str(path)


def test_deployments_run_on_a_real_worker_and_a_killed_worker_is_replaced(on_server, tmp_path, figures):
    from prefect.deployments import run_deployment
    from prefect.events import Event
    from prefect.events.clients import PrefectEventsClient

    from deployments.apply import deploy_all, ensure_crash_detector
    from deployments.build import settings_parameters
    from tasks.data.sources import load_digits_dataset
    from tasks.drift import ledger
    from tasks.drift.events import DRIFT_EVENT, resource_id
    from tasks.settings import load_settings
    from tasks.store.artifacts import ArtifactStore
    from tasks.store.backends import open_backend
    from tasks.store.registry import ModelRegistry

    pool = f"driftloop-process-{uuid.uuid4().hex[:6]}"
    model = f"wk-{uuid.uuid4().hex[:6]}"
    over = {
        "tuning.enabled": False,
        "federated.enabled": False,
        "adversarial.enabled": False,
        "training.epochs": 2,
        "store.uri": str(tmp_path / "store"),
        "registry.model_name": model,
        "drift.batches_uri": str(tmp_path / "batches"),
        "data.sample_shape": [1, 8, 8],
    }
    settings = load_settings(profile="smoke", environ={}, overrides=over)
    t0 = time.time()
    deployed = deploy_all(settings, work_pool=pool, only=["training", "retraining"])
    ensure_crash_detector(within_s=WINDOW_S)
    assert {d["work_pool"] for d in deployed} == {pool}
    registry = ModelRegistry(ArtifactStore.from_config(settings.store), model)

    a = Worker(on_server.api_url, pool, "a", tmp_path)
    b = None
    try:
        # 1. A training run from the deployment completes on the worker.
        run = run_deployment("training/training", timeout=0)
        done = _wait(
            lambda: (lambda r: r if r.state.is_final() else None)(_read(run.id)),
            300,
            "the training run to finish on worker A",
            [a.log],
        )
        assert done.state.is_completed(), done.state.message
        assert done.work_pool_name == pool and registry.champion_version() == 1
        training_s = (done.end_time - done.start_time).total_seconds()

        # 2. A drift event starts retraining on the worker.
        batch, batch_uri = _batch(tmp_path / "batches", load_digits_dataset())
        # The drift check's record of the batch (what the event's batch id refers to): retraining
        # resolves batch ids through these records.
        ledger.record_check(
            open_backend(settings.store),
            model,
            batch,
            {"status": "checked", "uri": batch_uri, "labelled": True, "drift": True, "key": "batch-00001.npz"},
        )
        episode = str(uuid.uuid4())

        async def emit():
            async with PrefectEventsClient(api_url=on_server.api_url) as c:
                await c.emit(
                    Event(
                        event=DRIFT_EVENT,
                        id=uuid.uuid4(),
                        resource={"prefect.resource.id": resource_id(model), "driftloop.episode.id": episode},
                        payload={
                            "model": model,
                            "version": 1,
                            "batch_ids": [batch],
                            "detector": "ks_softmax",
                            "episode_id": episode,
                            "scores": [],
                        },
                    )
                )

        asyncio.run(emit())
        emitted = time.time()

        def retraining_run():
            from prefect.client.orchestration import get_client
            from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

            with get_client(sync_client=True) as c:
                dep = c.read_deployment_by_name("retraining/retraining")
                runs = c.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[dep.id])))
            mine = [r for r in runs if (r.parameters or {}).get("episode_id") == episode]
            return mine[0] if mine and mine[0].state.is_final() else None

        retrained = _wait(retraining_run, 300, "the drift event's retraining run to finish on worker A", [a.log])
        assert retrained.state.is_completed(), retrained.state.message
        assert retrained.work_pool_name == pool and retrained.parameters["batch_ids"] == [batch]
        assert len(registry.versions()) == 2 and registry.get(2)["lineage"]["trigger"]["episode_id"] == episode
        event_to_done_s = round(time.time() - emitted, 1)

        # 3. Worker A SIGKILLed mid-run: Crashed by the heartbeat detector; worker B takes the next run.
        long_cfg = settings_parameters(
            settings.model_copy(update={"training": settings.training.model_copy(update={"epochs": 5000})})
        )
        long = run_deployment("training/training", timeout=0, parameters={"config": long_cfg})
        _wait(lambda: _read(long.id).state.is_running(), 180, "the long run to be running on worker A", [a.log])
        time.sleep(3)  # its first heartbeat is out
        killed = a.kill()
        assert killed, "worker A had no flow-run process to kill"
        killed_at = time.time()
        state_after_kill = _read(long.id).state_type.value
        crashed = _wait(
            lambda: (lambda r: r if r.state.is_crashed() else None)(_read(long.id)),
            WINDOW_S + 90,
            "the killed run to be marked Crashed",
        )
        detected_s = round(time.time() - killed_at, 1)

        b = Worker(on_server.api_url, pool, "b", tmp_path)
        nxt = run_deployment("training/training", timeout=0)
        after = _wait(
            lambda: (lambda r: r if r.state.is_final() else None)(_read(nxt.id)),
            300,
            "the next run to finish on worker B",
            [b.log],
        )
        assert after.state.is_completed(), after.state.message
        assert "no heartbeat" in (crashed.state.message or "")
        b_log = b.log.read_text(errors="replace")
        assert str(nxt.id) in b_log  # worker B, not a leftover, ran it
    finally:
        a.kill()
        if b is not None:
            b.kill()
    figures.update(
        work_pool=pool,
        workers=2,
        worker_cwd="a directory outside the checkout",
        training_run_state=done.state_type.value,
        training_run_seconds=round(training_s, 1),
        retraining_run_state=retrained.state_type.value,
        seconds_event_to_retrained=event_to_done_s,
        faults_injected=1,
        kill=f"SIGKILL of worker A and its {len(killed)} child processes mid-run",
        state_right_after_kill=state_after_kill,
        state_after=crashed.state_type.value,
        seconds_kill_to_crashed=detected_s,
        next_run_on_worker_b=after.state_type.value,
        versions=len(registry.versions()),
        wall_seconds=round(time.time() - t0, 1),
    )

"""Orchestration: a deployed run whose process is SIGKILLed together with its runner (a lost machine)
is marked Crashed by the heartbeat crash detector, and a run that finished normally is left alone.

SIGKILL cannot be caught, so the run cannot report its own end and there is no runner left to
report it either: without the detector the run stays Running forever (the in-process case is
recorded in test_killed_flow.py). Real parts: ``prefect server start``, ``driftloop serve`` (its
runs heartbeat every 30 s, Prefect's minimum) and the automation ``driftloop deploy``/``serve``
install, here with a 40 s window instead of the default 3 heartbeats to keep the test short.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
WINDOW_S = 40


def _state(run_id):
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as c:
        return c.read_flow_run(run_id)


def _wait(pred, timeout, what, log=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(1)
    tail = Path(log).read_text(errors="replace")[-3000:] if log else ""
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{tail}")


def test_run_killed_with_its_runner_is_marked_crashed_by_missing_heartbeats(on_server, tmp_path, figures):
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    from deployments.apply import ensure_crash_detector
    from deployments.build import CRASH_DETECTOR

    model = f"hb-{uuid.uuid4().hex[:6]}"
    params = []
    for k, v in {
        "tuning.enabled": "false",
        "federated.enabled": "false",
        "adversarial.enabled": "false",
        "training.epochs": "2",
        "store.uri": str(tmp_path / "store"),
        "registry.model_name": model,
        "drift.batches_uri": str(tmp_path / "batches"),
    }.items():
        params += ["--param", f"{k}={v}"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "DRIFTLOOP_"))}
    env.update(
        PREFECT_API_URL=on_server.api_url,
        PREFECT_HOME=str(tmp_path / "home"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_RUNNER_POLL_FREQUENCY="2",
    )
    log_path = tmp_path / "serve.log"
    log = open(log_path, "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "serve", "--smoke", "--only", "training", *params],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    killed = False
    try:

        def served():
            with get_client(sync_client=True) as c:
                try:
                    d = c.read_deployment_by_name("training/training")
                except Exception:  # noqa: BLE001 - not there yet
                    return False
                return d.parameters["config"]["registry"]["model_name"] == model and c.read_automations_by_name(
                    CRASH_DETECTOR
                )

        _wait(served, 120, "the served training deployment", log_path)
        ensure_crash_detector(within_s=WINDOW_S)  # after serve installed the default one

        short = run_deployment("training/training", timeout=0)
        long = run_deployment("training/training", timeout=0, parameters={"config": _long_config(model, tmp_path)})
        _wait(lambda: _state(short.id).state.is_final(), 180, "the short run to finish", log_path)
        _wait(lambda: _state(long.id).state.is_running(), 120, "the long run to be running", log_path)
        time.sleep(2)  # its first heartbeat is out
        os.killpg(proc.pid, signal.SIGKILL)  # the runner and every run it started: a lost machine
        killed_at = time.time()
        killed = True
        proc.wait(timeout=30)
        state_after_kill = _state(long.id).state_type.value
        crashed = _wait(
            lambda: (lambda r: r if r.state.is_crashed() else None)(_state(long.id)),
            WINDOW_S + 60,
            "the killed run to be marked Crashed",
        )
        detected_after = time.time() - killed_at
        short_after = _state(short.id)
    finally:
        if not killed:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        log.close()
    figures.update(
        faults_injected=1,
        kill="SIGKILL of the runner's process group",
        heartbeat_s=30,
        window_s=WINDOW_S,
        state_right_after_kill=state_after_kill,
        state_after=crashed.state_type.value,
        crash_message=crashed.state.message,
        seconds_kill_to_crashed=round(detected_after, 1),
        normal_run_state=short_after.state_type.value,
        false_crashes=int(short_after.state.is_crashed()),
    )
    assert state_after_kill == "RUNNING"  # nobody could report it
    assert "no heartbeat" in (crashed.state.message or "")
    assert short_after.state.is_completed()  # a run that ended normally is never touched


def _long_config(model, tmp_path):
    """The served deployment's configuration with thousands of epochs: it is still training when killed."""
    from deployments.build import settings_parameters
    from tasks.settings import load_settings

    s = load_settings(
        profile="smoke",
        environ={},
        overrides={
            "tuning.enabled": False,
            "federated.enabled": False,
            "adversarial.enabled": False,
            "training.epochs": 5000,
            "store.uri": str(tmp_path / "store"),
            "registry.model_name": model,
            "drift.batches_uri": str(tmp_path / "batches"),
        },
    )
    return settings_parameters(s)

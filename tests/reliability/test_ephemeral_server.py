"""A SIGKILLed `driftloop run` must not leave its temporary Prefect server running (issue 17)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from flows.ephemeral_server import SERVER_MARK

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


def _children(pid: int) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(d))
            except (OSError, IndexError, ValueError):
                pass
    return out


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_sigkilled_run_leaves_no_prefect_server(tmp_path, figures):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DRIFTLOOP_", "PREFECT_API"))}
    env.update(
        PREFECT_HOME=str(tmp_path / "prefect-home"),
        PREFECT_LOGGING_LEVEL="INFO",
        DRIFTLOOP_STORE__URI=str(tmp_path / "store"),
    )
    cmd = [
        sys.executable,
        "-m",
        "flows.cli",
        "run",
        "training",
        "--smoke",
        "-p",
        "tuning.enabled=false",
        "-p",
        "federated.enabled=false",
        "-p",
        "adversarial.enabled=false",
        "-p",
        "training.epochs=200",
    ]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    threading.Thread(target=lambda: [lines.append(x) for x in proc.stdout], daemon=True).start()
    server = None
    started = []
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None:
            server = server or next((c for c in _children(proc.pid) if SERVER_MARK in _cmdline(c)), None)
            if server and any("epoch 1/" in x for x in lines):  # the flow is mid-run, training
                break
            time.sleep(0.3)
        assert server and proc.poll() is None, "".join(lines[-40:])
        started = [c for c in _children(proc.pid)]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        t0 = time.monotonic()
        while _alive(server) and time.monotonic() - t0 < 15:
            time.sleep(0.1)
        gone_after = time.monotonic() - t0
        assert not _alive(server), f"the Prefect server (pid {server}) outlived the SIGKILLed command"
        time.sleep(1.0)
        leftovers = [c for c in started if _alive(c)]
        assert leftovers == [], [(c, _cmdline(c)) for c in leftovers]  # the watchdog is gone too
        assert gone_after < 10
        figures.update(
            faults_injected=1,
            kill="SIGKILL of `driftloop run training` mid-epoch",
            server_pid_alive_after_s=round(gone_after, 1),
            leftover_processes=0,
        )
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid in [server, *started]:
            if pid and _alive(pid) and (SERVER_MARK in _cmdline(pid) or "flows.ephemeral_server" in _cmdline(pid)):
                os.kill(pid, signal.SIGKILL)

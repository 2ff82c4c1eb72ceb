"""tasks/procs.py: process groups are started, recognised and stopped by pid, never by name."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from tasks.procs import cmdline, group_alive, kill_group, pid_alive, start_group, stop_group, stop_pid


def _wait_for(path, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return path.read_text().strip()
        time.sleep(0.05)
    raise AssertionError(f"{path} was not written")


def test_start_group_leads_its_own_group_and_appends_to_the_log(tmp_path):
    log = tmp_path / "out.log"
    log.write_text("before\n")
    p = start_group(
        [sys.executable, "-c", "import sys; print('hello'); print('oops', file=sys.stderr)"], log, cwd=tmp_path
    )
    assert os.getpgid(p.pid) == p.pid != os.getpgid(0)
    assert p.wait(30) == 0
    assert log.read_text().splitlines() == ["before", "hello", "oops"]


def test_stop_group_kills_what_ignores_sigterm_and_children_that_outlive_the_leader(tmp_path):
    # the leader exits on SIGTERM; its child ignores SIGTERM and would be left running
    script = "(trap '' TERM; exec sleep 60) & echo $! > child.pid; exec sleep 60"
    p = start_group(["sh", "-c", script], cwd=tmp_path)
    child = int(_wait_for(tmp_path / "child.pid"))
    assert pid_alive(child) and "sleep 60" in cmdline(child)
    t0 = time.monotonic()
    assert stop_group(p, grace=0.5) is True
    assert time.monotonic() - t0 < 10
    assert p.returncode is not None and not pid_alive(child) and not group_alive(p.pid)
    assert stop_group(p, grace=0.5) is False  # nothing left to stop


def test_stop_group_by_pid_waits_for_sigkill_after_the_grace(tmp_path):
    p = start_group(["sh", "-c", "trap '' TERM; echo up > ready; while :; do sleep 0.1; done"], cwd=tmp_path)
    _wait_for(tmp_path / "ready")
    t0 = time.monotonic()
    assert stop_group(p.pid, 0.5, p) is True
    took = time.monotonic() - t0
    assert p.returncode == -9 and 0.4 < took < 10  # SIGTERM was ignored: killed after the grace


def test_a_zombie_is_not_alive_and_a_recycled_pid_is_left_alone(tmp_path):
    p = subprocess.Popen(["true"])
    deadline = time.monotonic() + 10
    while pid_alive(p.pid) and time.monotonic() < deadline:  # exited, not reaped: a zombie
        time.sleep(0.05)
    assert not pid_alive(p.pid)
    p.wait()
    assert cmdline(p.pid) == "" and "python" in cmdline(os.getpid())

    victim = start_group(["sleep", "60"])
    try:
        # a pid recorded for another command is not signalled
        assert stop_pid(victim.pid, grace=0.1, still_ours=lambda: False) is False
        assert stop_group(victim.pid, 0.1, still_ours=lambda: "not-this-command" in cmdline(victim.pid)) is False
        assert victim.poll() is None
        assert stop_pid(victim, grace=5.0) is True and victim.returncode == -15
    finally:
        kill_group(victim)


def test_kill_group_is_immediate(tmp_path):
    p = start_group(["sh", "-c", "trap '' TERM; sleep 60"])
    t0 = time.monotonic()
    kill_group(p)
    assert p.returncode == -9 and time.monotonic() - t0 < 5
    kill_group(p)  # a second call on a finished process is a no-op

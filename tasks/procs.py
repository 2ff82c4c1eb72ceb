"""Process supervision, in one place: start a command in its own process group, tell whether a pid
is alive and what it runs, and stop a process (group) with SIGTERM, a grace period, then SIGKILL.

Every server and engine driftloop starts (SeaweedFS, the Prefect server of ``driftloop up``, Flower's
SuperLink/SuperNodes, ``flwr run``) runs in its own session (``start_new_session=True``), so its
process group id is its pid and the children it forks (uvicorn workers, ``flower-superexec``) are
stopped with it: some of them outlive their parent otherwise. Processes are only ever found by pid
and group, never by name; where a pid was recorded by another process (``driftloop down``, the
ephemeral server's watchdog), the caller passes ``still_ours`` (e.g. a command-line check) so a
recycled pid is never signalled.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable, Mapping, Sequence

_POLL_S = 0.05


def start_group(
    cmd: Sequence[str],
    log: str | os.PathLike | None = None,
    *,
    cwd: str | os.PathLike | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.Popen:
    """Start ``cmd`` in a new session (a process group led by the new pid), stdin from /dev/null,
    stdout and stderr appended to ``log`` (discarded when None)."""
    out = open(log, "ab") if log is not None else subprocess.DEVNULL
    try:
        return subprocess.Popen(
            list(cmd),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=dict(env) if env is not None else None,
            start_new_session=True,
        )
    finally:
        if not isinstance(out, int):
            out.close()  # the child holds its own copy of the descriptor


def cmdline(pid: int) -> str:
    """The command line of ``pid``, arguments joined by spaces; "" when it is gone or unreadable."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs; a zombie (exited, not yet reaped by its parent) counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def group_alive(pgid: int) -> bool:
    """Whether any process (a zombie too) is left in process group ``pgid``."""
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _signal(pid: int, sig: int, group: bool) -> bool:
    try:
        (os.killpg if group else os.kill)(pid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _wait_gone(pid: int, process: subprocess.Popen | None, timeout: float) -> None:
    if process is not None:
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        return
    deadline = time.monotonic() + timeout
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(_POLL_S)


def _stop(
    target: int | subprocess.Popen,
    grace: float,
    process: subprocess.Popen | None,
    group: bool,
    kill_wait: float,
    still_ours: Callable[[], bool] | None,
) -> bool:
    if isinstance(target, subprocess.Popen):
        process, pid = target, target.pid
    else:
        pid = target
    ours = still_ours or (lambda: True)
    if not ours():
        return False
    if process is not None and process.poll() is not None and not group:
        return False
    # A group is signalled even when its leader has exited: its children may still run.
    if not _signal(pid, signal.SIGTERM, group):
        if process is not None:
            process.poll()  # reap a leader that exited on its own
        return False
    _wait_gone(pid, process, grace)
    if group:
        # What ignored SIGTERM, and the children that outlive the leader. No ``still_ours`` check
        # here: the leader may be gone (its command line with it) while its children are not, and a
        # group id is not handed out again while any member of the group lives.
        _signal(pid, signal.SIGKILL, True)
    elif pid_alive(pid) and ours():
        _signal(pid, signal.SIGKILL, False)
    _wait_gone(pid, process, kill_wait)
    if group:  # until the group's last member is gone (orphans are reaped by init a moment later)
        deadline = time.monotonic() + kill_wait
        while group_alive(pid) and time.monotonic() < deadline:
            time.sleep(_POLL_S)
    return True


def stop_group(
    target: int | subprocess.Popen,
    grace: float = 10.0,
    process: subprocess.Popen | None = None,
    *,
    kill_wait: float = 5.0,
    still_ours: Callable[[], bool] | None = None,
) -> bool:
    """Stop the process group led by ``target`` (a pid or the Popen of a :func:`start_group` child):
    SIGTERM the group, wait up to ``grace`` seconds for the leader to exit, SIGKILL the group (what
    ignored SIGTERM, and children that outlive the leader), then wait up to ``kill_wait`` until it is
    gone. ``process`` is the leader's Popen when ``target`` is its pid (so it is reaped);
    ``still_ours`` is checked before signalling a pid this process did not start. True if the group
    was there to stop."""
    return _stop(target, grace, process, True, kill_wait, still_ours)


def stop_pid(
    target: int | subprocess.Popen,
    grace: float = 10.0,
    *,
    kill_wait: float = 5.0,
    still_ours: Callable[[], bool] | None = None,
) -> bool:
    """Like :func:`stop_group` for one process that does not lead its group (its group may be a
    terminal's job): SIGTERM, ``grace`` seconds, SIGKILL if it is still there and ``still_ours()``."""
    return _stop(target, grace, None, False, kill_wait, still_ours)


def kill_group(proc: subprocess.Popen, wait: float = 10.0) -> None:
    """SIGKILL ``proc``'s process group at once (a process dying mid-work, for fault tests) and reap it."""
    if proc.poll() is None:
        _signal(proc.pid, signal.SIGKILL, True)
        proc.wait(timeout=wait)

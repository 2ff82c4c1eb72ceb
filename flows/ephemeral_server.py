"""Tie the temporary Prefect server of ``driftloop run`` to the command's life.

Without ``PREFECT_API_URL`` a flow run starts Prefect's ephemeral API server
(``prefect.server.api.server.SubprocessASGIServer``, a ``uvicorn`` child process) and stops it with
an ``atexit`` hook. A SIGKILLed command runs no hook: the server went on running, re-parented to
PID 1, holding its port and SQLite database. So ``driftloop run`` starts that server itself, before
the flow (Prefect's own calls get the same instance: it is a per-port singleton), and starts a small
watchdog process beside it that stops the server as soon as the command's process is gone, however
it ended. The watchdog exits when the server does.

PR_SET_PDEATHSIG on the server was the other option; it fires when the *thread* that started the
child exits, and Prefect may start the server from a worker thread, so the watchdog is the robust one.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

from tasks.procs import cmdline, pid_alive, start_group, stop_pid

POLL_S = 0.5
_watchdog: subprocess.Popen | None = None  # kept referenced for the life of the command
SERVER_MARK = "prefect.server.api.server:create_app"  # in the uvicorn command line Prefect runs (3.8.8, 3.9.1)


def watch(parent_pid: int, server_pid: int) -> int:
    """Wait until ``parent_pid`` is gone, then stop ``server_pid`` (SIGTERM, SIGKILL after 5 s).
    Returns when the server is gone. Only a process whose command line is Prefect's server is
    signalled, so a recycled pid is never hit. The server shares the command's process group (a
    terminal's job, maybe), so it is stopped alone, by pid."""

    def is_server() -> bool:
        return pid_alive(server_pid) and SERVER_MARK in cmdline(server_pid)

    while is_server():
        if os.getppid() != parent_pid or not pid_alive(parent_pid):
            stop_pid(server_pid, grace=5.0, still_ours=is_server)
            return 0
        time.sleep(POLL_S)
    return 0


def start_tied_ephemeral_server() -> int | None:
    """Start Prefect's ephemeral server now, with a watchdog tied to this process; returns the
    server's pid, or None when a server is configured (``PREFECT_API_URL``) or ephemeral mode is off."""
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_ENABLED

    if PREFECT_API_URL.value() or not PREFECT_SERVER_EPHEMERAL_ENABLED.value():
        return None
    server = SubprocessASGIServer()
    server.start()
    if server.server_process is None:
        raise RuntimeError("Prefect's ephemeral server reported started but holds no server process")
    pid = server.server_process.pid
    # Its own session: a Ctrl-C to the terminal's process group must not kill the watchdog first.
    global _watchdog
    _watchdog = start_group([sys.executable, "-m", "flows.ephemeral_server", str(os.getpid()), str(pid)])
    return pid


if __name__ == "__main__":
    sys.exit(watch(int(sys.argv[1]), int(sys.argv[2])))

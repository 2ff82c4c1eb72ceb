"""A local stack on 127.0.0.1 for ``driftloop up`` / ``driftloop down`` (and the tests): a real
``prefect server start`` and a SeaweedFS S3 server, with all their data under one directory.

Each server runs in its own process group; ``state.json`` in the stack directory records the
process ids, ports and URLs, and ``down`` stops each group by that id (after checking the process
is still the one it started, so a reused pid is never signalled).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.errors import DriftloopError
from tasks.procs import cmdline, pid_alive, start_group, stop_group  # pid_alive, stop_group: re-exported for tests

DEFAULT_STACK_DIR = ".driftloop/stack"
DEFAULT_PREFECT_PORT = 4200
DEFAULT_S3_PORT = 8333
DEFAULT_BUCKET = "driftloop"
STATE_FILE = "state.json"


class StackError(DriftloopError):
    """The local stack cannot start or stop (names the port, file or process)."""


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def quiet_prefect_env(home: Path) -> dict[str, str]:
    """Environment of a local Prefect server: its own home (database, logs), no analytics
    (SQLite reported "database is locked" with them on), nothing from the user's profile."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        {
            "PREFECT_HOME": str(home),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_SERVER_API_HOST": "127.0.0.1",
            "PREFECT_LOGGING_LEVEL": "WARNING",
        }
    )
    return env


@dataclass
class PrefectServer:
    """A ``prefect server start`` process (its own process group) and where it answers."""

    pid: int
    port: int
    home: str
    log_path: str
    process: Any = None

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    @property
    def ui_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self, timeout: float = 15.0) -> None:
        stop_group(self.pid, timeout, self.process)


def start_prefect_server(
    home: str | os.PathLike, port: int | None = None, extra_env: dict[str, str] | None = None, timeout: float = 120.0
) -> PrefectServer:
    """Start ``prefect server start`` on 127.0.0.1 (scheduler, triggers and UI included) with its data
    under ``home``; wait until ``/api/health`` answers. ``extra_env`` e.g. sets
    ``PREFECT_API_DATABASE_CONNECTION_URL`` for PostgreSQL."""
    import httpx

    home = Path(home).resolve()
    home.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    if not port_free(port):
        raise StackError(f"port {port} on 127.0.0.1 is in use: stop what listens there or choose another port")
    env = quiet_prefect_env(home)
    # The UI asks this URL for its data; it defaults to port 4200 whatever port the server has.
    env["PREFECT_UI_API_URL"] = f"http://127.0.0.1:{port}/api"
    env.update(extra_env or {})
    log_path = home / "server.log"
    prefect_bin = Path(sys.executable).parent / "prefect"
    cmd = [
        str(prefect_bin) if prefect_bin.exists() else "prefect",
        "server",
        "start",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    proc = start_group(cmd, log_path, env=env, cwd=home)
    server = PrefectServer(proc.pid, port, str(home), str(log_path), proc)
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise StackError(f"prefect server exited with code {proc.returncode}; see {log_path}")
        try:
            if httpx.get(f"{server.api_url}/health", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    server.stop()
    raise StackError(f"prefect server did not answer on {server.api_url} within {timeout:.0f} s; see {log_path}")


# ---- the `up` / `down` stack


def state_path(stack_dir: str | os.PathLike) -> Path:
    return Path(stack_dir) / STATE_FILE


def read_state(stack_dir: str | os.PathLike) -> dict[str, Any] | None:
    p = state_path(stack_dir)
    if not p.exists():
        return None
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise StackError(f"{p} is not valid JSON ({e}); stop the servers by hand and delete it") from None


def stack_env(state: dict[str, Any]) -> dict[str, str]:
    """The variables to export so driftloop, Prefect and boto3 use the stack."""
    s3 = state["seaweedfs"]
    return {
        "PREFECT_API_URL": state["prefect"]["api_url"],
        "DRIFTLOOP_STORE__URI": f"s3://{state['bucket']}/driftloop",
        "DRIFTLOOP_STORE__ENDPOINT_URL": s3["endpoint_url"],
        "DRIFTLOOP_STORE__REGION": "us-east-1",
        "DRIFTLOOP_STORE__ACCESS_KEY_ID": s3["access_key"],
        "DRIFTLOOP_STORE__SECRET_ACCESS_KEY": s3["secret_key"],
        "DRIFTLOOP_DRIFT__BATCHES_URI": f"s3://{state['bucket']}/batches",
        # deployed/served runs get the configuration without secrets: boto3's standard chain
        "AWS_ACCESS_KEY_ID": s3["access_key"],
        "AWS_SECRET_ACCESS_KEY": s3["secret_key"],
        "AWS_DEFAULT_REGION": "us-east-1",
    }


def _running(entry: dict[str, Any] | None) -> bool:
    return bool(entry) and pid_alive(entry["pid"]) and entry.get("cmd_marker", "") in cmdline(entry["pid"])


def stack_status(stack_dir: str | os.PathLike) -> dict[str, Any]:
    """The recorded state with ``running`` per server (checked by pid and command line)."""
    state = read_state(stack_dir)
    if state is None:
        return {"stack_dir": str(Path(stack_dir).resolve()), "running": False}
    for key in ("prefect", "seaweedfs"):
        state[key]["running"] = _running(state[key])
    state["running"] = state["prefect"]["running"] and state["seaweedfs"]["running"]
    return state


def stack_up(
    stack_dir: str | os.PathLike = DEFAULT_STACK_DIR,
    prefect_port: int = DEFAULT_PREFECT_PORT,
    s3_port: int = DEFAULT_S3_PORT,
    bucket: str = DEFAULT_BUCKET,
) -> dict[str, Any]:
    """Start a Prefect server and a SeaweedFS S3 (with ``bucket``) on 127.0.0.1, data under
    ``stack_dir``; write ``state.json`` and ``env.sh`` there. Already running: returns the state.
    Ports in use raise StackError naming the port before anything starts."""
    from tasks.store.seaweed import start_seaweedfs

    stack_dir = Path(stack_dir).resolve()
    status = stack_status(stack_dir)
    if status.get("running"):
        status["already_running"] = True
        return status
    if status.get("prefect") or status.get("seaweedfs"):  # half up: stop what is left, then start clean
        stack_down(stack_dir)
    for name, port in (
        ("Prefect server", prefect_port),
        ("SeaweedFS S3", s3_port),
        ("SeaweedFS S3 gRPC", s3_port + 10000),
    ):
        if not port_free(port):
            raise StackError(
                f"port {port} on 127.0.0.1 ({name}) is in use: run `driftloop down`, stop what "
                f"listens there, or pass --{'prefect-port' if 'Prefect' in name else 's3-port'}"
            )
    stack_dir.mkdir(parents=True, exist_ok=True)
    weed = start_seaweedfs(stack_dir / "seaweedfs", s3_port=s3_port)
    try:
        weed.create_bucket(bucket)
        prefect = start_prefect_server(stack_dir / "prefect", prefect_port)
    except BaseException:
        weed.stop()
        raise
    state = {
        "stack_dir": str(stack_dir),
        "bucket": bucket,
        "started_at": time.time(),
        "prefect": {
            "pid": prefect.pid,
            "port": prefect.port,
            "api_url": prefect.api_url,
            "ui_url": prefect.ui_url,
            "home": prefect.home,
            "log": prefect.log_path,
            "cmd_marker": "server start",
        },
        "seaweedfs": {
            "pid": weed.pid,
            "port": weed.s3_port,
            "endpoint_url": weed.endpoint_url,
            "access_key": weed.access_key,
            "secret_key": weed.secret_key,
            "ports": weed.ports,
            "data_dir": str(weed.data_dir),
            "log": str(weed.log_path),
            "cmd_marker": "weed",
        },
    }
    state_path(stack_dir).write_text(json.dumps(state, indent=2))
    env = stack_env(state)
    (stack_dir / "env.sh").write_text("".join(f"export {k}={v}\n" for k, v in env.items()))
    state["env"] = env
    return state


def stack_down(stack_dir: str | os.PathLike = DEFAULT_STACK_DIR) -> dict[str, Any]:
    """Stop the stack's servers by their recorded process groups; the data stays. Returns what was stopped."""
    stack_dir = Path(stack_dir).resolve()
    state = read_state(stack_dir)
    if state is None:
        return {"stack_dir": str(stack_dir), "stopped": [], "note": "nothing recorded: the stack is not up"}
    stopped = []
    for key in ("prefect", "seaweedfs"):
        entry = state.get(key)
        # the recorded pid is stopped only while it still runs the command recorded for it
        if _running(entry) and stop_group(entry["pid"], 15.0, still_ours=lambda e=entry: _running(e)):
            stopped.append(key)
    state_path(stack_dir).unlink(missing_ok=True)
    return {"stack_dir": str(stack_dir), "stopped": stopped}

"""Process supervision for the Flower engines: free ports, waiting for a listener, stopping a
process and its whole group, log tails, and the environment every Flower child process gets.

Every process the engines start runs in its own session (``start_new_session=True``) and is stopped
by its group id: Flower's ``flower-superexec`` children outlive their parent otherwise
(../shared/STACK.md), and Ray's workers live in the simulation subprocess's group.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Mapping

from tasks.errors import ConfigError, DriftloopError
from tasks.procs import stop_group  # noqa: F401 - the engines stop their groups with it
from tasks.ray_security import token_auth_env

BIN = Path(sys.executable).parent
PROJECT_ROOT = Path(__file__).resolve().parents[2]


class FederatedEngineError(DriftloopError):
    """The Flower engine could not be started or reached, or stopped without a result."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def split_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"federated.superlink_address {address!r} must be host:port")
    return host.strip("[]") or "127.0.0.1", int(port)


def check_reachable(address: str, key: str = "federated.superlink_address", timeout: float = 3.0) -> None:
    """Raise :class:`FederatedEngineError` naming ``key`` unless a TCP connection to ``address`` opens."""
    host, port = split_address(address)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return
    except OSError as e:
        raise FederatedEngineError(f"{key} {address!r} cannot be reached: {e}") from None


def wait_port(address: str, timeout: float, proc: subprocess.Popen | None = None, what: str = "server") -> None:
    deadline = time.monotonic() + timeout
    host, port = split_address(address)
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise FederatedEngineError(f"{what} exited with status {proc.returncode} before listening on {address}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise FederatedEngineError(f"{what} did not listen on {address} within {timeout:.0f} s")


def tail(path: Path, lines: int = 40) -> str:
    if not path.is_file():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def child_env(extra: dict[str, str] | None = None, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if environ is None else environ)
    # Never attach to another Ray cluster (Tune's): the simulation starts its own, with token
    # authentication (set before the subprocess imports Ray; kept when the parent set it already).
    env.pop("RAY_ADDRESS", None)
    env.update(token_auth_env(env))
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    env.setdefault("RAY_DISABLE_DOCKER_CPU_WARNING", "1")
    env["PYTHONPATH"] = os.pathsep.join(
        [str(PROJECT_ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    )
    # Flower's SuperLink/SuperNode start `flower-superexec` by name: the venv's bin must come first.
    env["PATH"] = os.pathsep.join([str(BIN), env.get("PATH", "")])
    env.update(extra or {})
    return env

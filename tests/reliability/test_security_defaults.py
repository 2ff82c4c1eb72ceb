"""Security defaults, checked on real processes.

* The local Ray that driftloop starts serves no dashboard, runs no Ray Client server, and has token
  authentication: a process without the token cannot join it, one with the token can. (Ray 2.55
  cannot bind its gRPC ports to loopback; the test records which sockets listen where.)
* A Prefect server started with ``PREFECT_SERVER_API_AUTH_STRING`` refuses clients without the
  credentials; ``driftloop`` says which variable to set; flows run with them; the secret never
  appears in the server's log or in the error.
(Flower TLS + SuperNode authentication: tests/federated/test_deployment.py.)
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _listening_sockets() -> dict[str, tuple[str, int]]:
    """inode -> (address, port) of every TCP socket in LISTEN state (from /proc/net/tcp{,6})."""
    out = {}
    for path, fam in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        try:
            lines = Path(path).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if f[3] != "0A":
                continue
            host, port = f[1].split(":")
            raw = b"".join(struct.pack("<I", int(host[i : i + 8], 16)) for i in range(0, len(host), 8))
            out[f[9]] = (socket.inet_ntop(fam, raw), int(port, 16))
    return out


def _socket_owners(pids: set[int]) -> dict[str, int]:
    owners = {}
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    link = os.readlink(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
                if link.startswith("socket:["):
                    owners[link[8:-1]] = pid
        except OSError:
            continue
    return owners


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


_JOIN = """
import ray
try:
    ray.init(address={address!r}, log_to_driver=False)
    print("JOINED", ray.get(ray.remote(lambda: 41 + 1).remote()))
except Exception as e:
    print("REFUSED", type(e).__name__)
"""


# 30-70 s end to end: in the full suite, not in the quick `-m "not slow"` run.
@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc to list sockets")
def test_local_ray_has_no_dashboard_no_client_server_and_requires_its_token(figures):
    """connect_ray in a process prepared like the `driftloop` command (tests/conftest.py calls the
    same enable_token_auth before Ray is imported)."""
    import ray

    from tasks.ray_security import token_auth_active
    from tasks.tuning.config import TuningConfig
    from tasks.tuning.search import connect_ray

    if ray.is_initialized():
        ray.shutdown()
    assert token_auth_active(), "tests/conftest.py must enable Ray token auth before ray is imported"
    token = os.environ["RAY_AUTH_TOKEN"]
    assert len(token) == 64
    try:
        assert connect_ray(TuningConfig()) is True
        node = ray._private.worker._global_node
        session, address = node.get_session_dir_path(), node.gcs_address
        time.sleep(2)  # let the raylet's helper processes open their ports
        ray_pids = {int(p) for p in os.listdir("/proc") if p.isdigit() and session in _cmdline(int(p))}
        ray_pids.add(os.getpid())
        owners = _socket_owners(ray_pids)
        listening = [
            (addr, port, Path(_cmdline(owners[ino]).split(" ")[0]).name or "?")
            for ino, (addr, port) in _listening_sockets().items()
            if ino in owners
        ]
        names = " ".join(_cmdline(p) for p in ray_pids)

        base = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
        code = _JOIN.format(address=address)
        # The three joiners at once: a refused one keeps retrying until Ray's connect timeout.
        envs = [
            base,
            dict(base, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN="0" * 64),
            dict(base, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token),
        ]
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", code], env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
            for e in envs
        ]
        without, wrong, holder = (subprocess.CompletedProcess(p.args, 0, *p.communicate(timeout=180)) for p in procs)
    finally:
        ray.shutdown()
    all_interfaces = sorted({f"{a}:{p} ({n})" for a, p, n in listening if a not in ("127.0.0.1", "::1")})
    figures.update(
        listening_sockets=len(listening),
        bound_beyond_loopback=all_interfaces,
        dashboard_process="dashboard/dashboard.py" in names,
        dashboard_http_listening=any(p == 8265 for _, p, _ in listening),
        client_server_running="client.server" in names,
        join_without_token=without.stdout.strip().split("\n")[-1:],
        join_with_wrong_token=wrong.stdout.strip().split("\n")[-1:],
        join_with_token=holder.stdout.strip().split("\n")[-1:],
        token_in_outputs=token in (without.stdout + without.stderr + wrong.stdout + wrong.stderr),
    )
    # Ray keeps its dashboard *process* (head-side APIs) even with include_dashboard=False, but no
    # HTTP port: nothing answers on the dashboard's or the Ray Client server's port.
    assert "client.server" not in names
    assert not [p for _, p, _ in listening if p in (8265, 10001)]  # dashboard / Ray Client default ports
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", 8265), timeout=2).close()
    assert "REFUSED" in without.stdout and "JOINED" not in without.stdout, without.stdout + without.stderr[-2000:]
    assert "REFUSED" in wrong.stdout and "JOINED" not in wrong.stdout, wrong.stdout + wrong.stderr[-2000:]
    assert "JOINED 42" in holder.stdout, holder.stdout + holder.stderr[-2000:]
    assert token not in without.stdout + without.stderr + wrong.stdout + wrong.stderr


def test_the_driftloop_command_turns_on_ray_token_auth_before_ray_is_imported():
    code = (
        "import sys\nfrom flows import cli\nassert 'ray' not in sys.modules\ncli.prepare_environment()\n"
        "from tasks.ray_security import token_auth_active\nprint('TOKEN' if token_auth_active() else 'OFF')\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    r = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "TOKEN", r.stdout + r.stderr[-2000:]


def test_token_auth_respects_a_users_ray_auth_setting():
    from tasks.ray_security import enable_token_auth, token_auth_env

    env: dict[str, str] = {}
    assert enable_token_auth(env) and env["RAY_AUTH_MODE"] == "token" and len(env["RAY_AUTH_TOKEN"]) == 64
    assert token_auth_env({}) != token_auth_env({})  # a fresh token per Ray start
    user = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "users-own"}
    assert not enable_token_auth(user) and user["RAY_AUTH_TOKEN"] == "users-own"


def test_flower_simulation_ray_has_no_dashboard_and_token_auth():
    """The simulation subprocess's Ray: its backend config and the environment the engine gives it."""
    from tasks.federated import engine, simulate

    cfg = simulate.backend_config(2)
    assert cfg["init_args"]["include_dashboard"] is False
    env = engine._child_env(environ={"PATH": os.environ.get("PATH", "")})
    assert env["RAY_AUTH_MODE"] == "token" and len(env["RAY_AUTH_TOKEN"]) == 64 and "RAY_ADDRESS" not in env
    mine = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "a" * 64, "RAY_ADDRESS": "10.0.0.1:6379"}
    env = engine._child_env(environ=mine)  # a parent's own token is passed on; Tune's cluster is not
    assert env["RAY_AUTH_TOKEN"] == "a" * 64 and "RAY_ADDRESS" not in env


@pytest.mark.integration
def test_prefect_server_with_an_auth_string_refuses_anonymous_clients(tmp_path, figures):
    import httpx

    from deployments.apply import DeploymentError, check_server
    from deployments.stack import start_prefect_server
    from tests.fixtures.servers import using_server

    secret = "driftloop:" + os.urandom(12).hex()
    server = start_prefect_server(tmp_path / "prefect", extra_env={"PREFECT_SERVER_API_AUTH_STRING": secret})
    try:
        api = server.api_url
        health = httpx.get(f"{api}/health", timeout=10).status_code
        anonymous = httpx.post(f"{api}/flows/filter", json={}, timeout=10).status_code
        wrong = httpx.post(f"{api}/flows/filter", json={}, auth=("driftloop", "guess"), timeout=10).status_code
        user, password = secret.split(":", 1)
        right = httpx.post(f"{api}/flows/filter", json={}, auth=(user, password), timeout=10).status_code

        with using_server(api), pytest.raises(DeploymentError, match="PREFECT_API_AUTH_STRING") as err:
            check_server()
        assert secret not in str(err.value) and password not in str(err.value)

        # A flow run by a client holding the credentials is recorded; one without them cannot start.
        code = (
            "from prefect import flow\n@flow(name='auth-probe')\ndef probe():\n    return 7\nprint('RESULT', probe())\n"
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env.update(
            PREFECT_API_URL=api, PREFECT_HOME=str(tmp_path / "client-home"), PREFECT_SERVER_ANALYTICS_ENABLED="false"
        )
        ok = subprocess.run(
            [sys.executable, "-c", code],
            env=dict(env, PREFECT_API_AUTH_STRING=secret),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=180,
        )
        refused = subprocess.run(
            [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=180
        )
        counted = httpx.post(f"{api}/flow_runs/filter", json={}, auth=(user, password), timeout=10).json()
        log = Path(server.log_path).read_text(errors="replace")
    finally:
        server.stop()
    probes = [r for r in counted if r.get("state_type") == "COMPLETED"]
    figures.update(
        health_without_auth=health,
        anonymous_api_status=anonymous,
        wrong_credentials_status=wrong,
        right_credentials_status=right,
        flow_with_credentials_rc=ok.returncode,
        flow_without_credentials_rc=refused.returncode,
        completed_runs_recorded=len(probes),
        secret_in_server_log=secret in log or password in log,
        secret_in_client_output=password in ok.stdout + ok.stderr + refused.stdout + refused.stderr,
    )
    assert health == 200 and anonymous == 401 and wrong == 401 and right == 200
    assert ok.returncode == 0 and "RESULT 7" in ok.stdout, ok.stderr[-3000:]
    assert refused.returncode != 0 and "RESULT" not in refused.stdout
    assert "401" in refused.stderr or "Unauthorized" in refused.stderr, refused.stderr[-3000:]
    assert len(probes) == 1
    assert password not in log and password not in ok.stdout + ok.stderr + refused.stdout + refused.stderr

"""A Ray cluster of separate ``ray start`` processes on 127.0.0.1: one head and worker nodes, for the
cluster tests and the scale-out benchmark (what a user gets from ``ray start`` on several machines,
short of the network between them).

Every node is one ``ray start --block`` in its own process group (its raylet, GCS and workers are
its children), with every port chosen free, its own temporary directory (so the
``ray_current_cluster`` file of this cluster never lands in ``/tmp/ray``, where it would redirect
other drivers on the machine) and, when a token is given, ``RAY_AUTH_MODE=token`` with that token.
:meth:`LocalCluster.kill_node` SIGKILLs one node's group (a machine lost); :meth:`LocalCluster.stop`
ends every group by process id. The nodes get this interpreter's ``PYTHONPATH`` (and the current
directory's checkout first on it), which is how the trials' code reaches them here; a real
cluster installs driftloop in its node image (infra/ray/README.md).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tasks.errors import DriftloopError

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ray_binary() -> str:
    cand = Path(sys.executable).parent / "ray"
    return str(cand) if cand.exists() else "ray"


@dataclass
class Node:
    name: str
    process: subprocess.Popen
    log_path: Path
    num_cpus: int
    num_gpus: int
    node_id: str | None = None  # Ray's node id, known once the node joined

    def alive(self) -> bool:
        return self.process.poll() is None


@dataclass
class LocalCluster:
    """Handle on the running cluster: ``address`` (``127.0.0.1:PORT``, the GCS) and its nodes."""

    address: str
    temp_dir: Path
    token: str | None
    env: dict[str, str]
    nodes: list[Node] = field(default_factory=list)

    def add_worker(self, name: str, num_cpus: int = 1, num_gpus: int = 0, wait_s: float = 90.0) -> Node:
        """Start a worker node and wait until the cluster lists it."""
        node = _start_node(name, self, head=False, num_cpus=num_cpus, num_gpus=num_gpus)
        self.nodes.append(node)
        self.wait_for_nodes(sum(n.alive() for n in self.nodes), wait_s)
        return node

    def kill_node(self, node: Node) -> None:
        """SIGKILL the node's whole process group (raylet, workers, trials): the machine is gone."""
        _kill_group(node.process, signal.SIGKILL)

    def stop(self) -> None:
        """Stop every node: SIGTERM to each process group, SIGKILL after 10 s."""
        for node in reversed(self.nodes):
            _kill_group(node.process, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for node in self.nodes:
            try:
                node.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            _kill_group(node.process, signal.SIGKILL)

    def wait_for_nodes(self, count: int, wait_s: float = 90.0) -> None:
        """Wait until ``count`` nodes are alive in the GCS (asked by a short subprocess with the
        cluster's token, so this process's Ray state is left alone)."""
        code = (
            "import ray,sys; ray.init(address=sys.argv[1], log_to_driver=False); "
            "print('ALIVE', ' '.join(n['NodeID'] for n in ray.nodes() if n['Alive'])); ray.shutdown()"
        )
        deadline = time.monotonic() + wait_s
        last = ""
        while time.monotonic() < deadline:
            dead = [n.name for n in self.nodes if not n.alive() and n.process.returncode not in (None, -9)]
            if dead:
                raise DriftloopError(f"ray node(s) {dead} exited; see {self.nodes[-1].log_path}")
            out = subprocess.run(
                [sys.executable, "-c", code, self.address], env=self.env, capture_output=True, text=True, timeout=120
            )
            lines = [x for x in out.stdout.splitlines() if x.startswith("ALIVE")]
            ids = lines[-1].split()[1:] if lines else []
            last = str(len(ids))
            if len(ids) >= count:
                # Nodes join one at a time: the id not seen before is the newest node's.
                known = {n.node_id for n in self.nodes if n.node_id}
                new = [i for i in ids if i not in known]
                pending = [n for n in self.nodes if n.node_id is None]
                if len(new) == 1 and len(pending) == 1:
                    pending[0].node_id = new[0]
                return
            time.sleep(1.0)
        raise DriftloopError(
            f"the local Ray cluster at {self.address} has {last or '?'} of {count} nodes "
            f"after {wait_s:.0f} s; logs in {self.temp_dir}"
        )


def _kill_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)  # the node leads its own group (start_new_session)
    except (ProcessLookupError, PermissionError):
        pass


# A lost node is declared dead after about 3 s instead of Ray's default ~30 s (tests kill nodes).
FAST_HEALTH_CHECKS = {
    "RAY_health_check_initial_delay_ms": "1000",
    "RAY_health_check_period_ms": "1000",
    "RAY_health_check_timeout_ms": "1000",
    "RAY_health_check_failure_threshold": "3",
}


def node_env(token: str | None, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a node (and of a driver that should reach it): token authentication when
    ``token`` is given, none otherwise; this checkout first on PYTHONPATH."""
    env = dict(os.environ if base is None else base)
    for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS"):
        env.pop(k, None)
    if token:
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    return env


def _start_node(name: str, cluster: LocalCluster, head: bool, num_cpus: int, num_gpus: int) -> Node:
    log_path = cluster.temp_dir / f"{name}.log"
    cmd = [
        ray_binary(),
        "start",
        "--block",
        "--node-ip-address",
        "127.0.0.1",
        f"--num-cpus={num_cpus}",
        f"--num-gpus={num_gpus}",
        "--disable-usage-stats",
        f"--dashboard-agent-listen-port={free_port()}",
        f"--dashboard-agent-grpc-port={free_port()}",
        f"--runtime-env-agent-port={free_port()}",
        f"--metrics-export-port={free_port()}",
    ]
    if head:
        port = int(cluster.address.rsplit(":", 1)[1])
        cmd += [
            "--head",
            f"--port={port}",
            "--include-dashboard=false",
            f"--ray-client-server-port={free_port()}",
            f"--temp-dir={cluster.temp_dir / 'ray'}",
        ]
    else:
        cmd += [f"--address={cluster.address}"]
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            cmd, env=cluster.env, stdout=log, stderr=subprocess.STDOUT, cwd=str(ROOT), start_new_session=True
        )
    return Node(name, proc, log_path, num_cpus, num_gpus)


def start_cluster(
    workers: list[dict],
    head_cpus: int = 0,
    token: str | None = None,
    wait_s: float = 120.0,
    extra_env: dict[str, str] | None = None,
) -> LocalCluster:
    """Start a head (``head_cpus`` CPUs: 0 keeps trials off it, as on a real cluster whose head only
    coordinates) and one worker per entry of ``workers`` (``{"num_cpus": 1, "num_gpus": 0}``);
    returns once every node has joined. Stops what it started when a node fails to come up."""
    temp = Path(tempfile.mkdtemp(prefix="dlray-", dir="/tmp"))  # short: Ray's socket paths have a length limit
    cluster = LocalCluster(
        address=f"127.0.0.1:{free_port()}", temp_dir=temp, token=token, env={**node_env(token), **(extra_env or {})}
    )
    try:
        cluster.nodes.append(_start_node("head", cluster, head=True, num_cpus=head_cpus, num_gpus=0))
        cluster.wait_for_nodes(1, wait_s)
        # One node at a time: raylets of one session started together race for the same socket
        # name in the session directory ("bind: Address already in use").
        for i, w in enumerate(workers):
            cluster.add_worker(
                f"worker{i + 1}", num_cpus=int(w.get("num_cpus", 1)), num_gpus=int(w.get("num_gpus", 0)), wait_s=wait_s
            )
    except BaseException:
        cluster.stop()
        raise
    return cluster

"""Run federated rounds on one of two Flower engines, with the same ServerApp and ClientApp code.

- ``simulation``: ``python -m tasks.federated.simulate WORKDIR`` in its own subprocess (and process
  group), so Flower's Ray runtime never meets Ray Tune's in one process (../shared/STACK.md).
  :func:`run_simulations` runs several such runs (a clean run and faulty variants) one after
  another in one subprocess, sharing its start-up.
- ``deployment``: a real ``flower-superlink`` and N ``flower-supernode`` processes on 127.0.0.1 over
  gRPC (TLS and SuperNode authentication when configured), each in its own process group with
  ``FLWR_HOME`` in a temporary directory, driven by ``flwr run APP_DIR NAME --stream``; or an existing
  SuperLink (``federated.superlink_address``).

Either way the apps read their inputs from a work dir (:mod:`tasks.federated.workspace`) and the
ServerApp writes the global model per round, the per-round records and a status file back there:
results come back as files (safetensors, JSON), never pickles.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from tasks.errors import ConfigError, DriftloopError
from tasks.federated.partition import partition_from_config, partition_summary
from tasks.federated.strategies import RoundFailed
from tasks.federated.workspace import RUN_CONFIG_KEY, Fault, write_workspace
from tasks.ray_security import token_auth_env

log = logging.getLogger("driftloop.federated")

BIN = Path(sys.executable).parent
PROJECT_ROOT = Path(__file__).resolve().parents[2]


class FederatedEngineError(DriftloopError):
    """The Flower engine could not be started or reached, or stopped without a result."""


@dataclass
class FederatedResult:
    """What a federated run hands on: the final global weights, per-round records, the partition."""

    state_dict: dict[str, torch.Tensor]
    rounds: list[dict[str, Any]]
    partition: dict[str, Any]
    strategy: str
    engine: str
    model_spec: dict[str, Any]
    checkpoints: dict[int, bytes] = field(default_factory=dict)
    log_tail: str = ""

    def weights_bytes(self) -> bytes:
        from tasks.models.serialize import state_dict_to_bytes

        return state_dict_to_bytes(self.state_dict)

    @property
    def final_metrics(self) -> dict[str, float]:
        last = self.rounds[-1] if self.rounds else {}
        return {k: float(last[k]) for k in ("val_accuracy", "val_loss", "test_accuracy", "test_loss")
                if last.get(k) is not None}

    def summary(self) -> dict[str, Any]:
        """JSON-ready: everything but the weights."""
        return {"strategy": self.strategy, "engine": self.engine, "rounds": self.rounds,
                "partition": self.partition, "final_metrics": self.final_metrics, "model_spec": self.model_spec}


# ---------------------------------------------------------------------------------------------
# helpers


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _split_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"federated.superlink_address {address!r} must be host:port")
    return host.strip("[]") or "127.0.0.1", int(port)


def check_reachable(address: str, key: str = "federated.superlink_address", timeout: float = 3.0) -> None:
    """Raise :class:`FederatedEngineError` naming ``key`` unless a TCP connection to ``address`` opens."""
    host, port = _split_address(address)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return
    except OSError as e:
        raise FederatedEngineError(f"{key} {address!r} cannot be reached: {e}") from None


def _wait_port(address: str, timeout: float, proc: subprocess.Popen | None = None, what: str = "server") -> None:
    deadline = time.monotonic() + timeout
    host, port = _split_address(address)
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise FederatedEngineError(f"{what} exited with status {proc.returncode} before listening on {address}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise FederatedEngineError(f"{what} did not listen on {address} within {timeout:.0f} s")


def _stop_group(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """Stop a process started with ``start_new_session=True`` and everything in its group."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    # Flower's flower-superexec children can outlive their parent (STACK.md): kill the group.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if proc.poll() is None:
        proc.wait(timeout=grace)
    # Wait until the group's last member is gone (orphans are reaped by init a moment later).
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.05)


def _tail(path: Path, lines: int = 40) -> str:
    if not path.is_file():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _child_env(extra: dict[str, str] | None = None, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if environ is None else environ)
    # Never attach to another Ray cluster (Tune's): the simulation starts its own, with token
    # authentication (set before the subprocess imports Ray; kept when the parent set it already).
    env.pop("RAY_ADDRESS", None)
    env.update(token_auth_env(env))
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    env.setdefault("RAY_DISABLE_DOCKER_CPU_WARNING", "1")
    env["PYTHONPATH"] = os.pathsep.join([str(PROJECT_ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    # Flower's SuperLink/SuperNode start `flower-superexec` by name: the venv's bin must come first.
    env["PATH"] = os.pathsep.join([str(BIN), env.get("PATH", "")])
    env.update(extra or {})
    return env


# ---------------------------------------------------------------------------------------------
# deployment: a real SuperLink and SuperNodes


@dataclass
class TlsFiles:
    ca_cert: Path
    server_cert: Path
    server_key: Path

    @classmethod
    def from_config(cls, fed) -> "TlsFiles | None":
        if not fed.tls_ca_cert:
            return None
        files = cls(Path(fed.tls_ca_cert), Path(fed.tls_server_cert), Path(fed.tls_server_key))
        for key, p in (("tls_ca_cert", files.ca_cert), ("tls_server_cert", files.server_cert),
                       ("tls_server_key", files.server_key)):
            if not p.is_file():
                raise ConfigError(f"federated.{key}: file {str(p)!r} does not exist (make it with infra/flower/make_certs.sh)")
        return files


def _auth_keys(auth_dir: str | None, n: int) -> list[tuple[Path, Path]] | None:
    if not auth_dir:
        return None
    keys = []
    for i in range(n):
        priv = Path(auth_dir) / f"client_credentials_{i}"
        pub = priv.with_name(priv.name + ".pub")
        if not priv.is_file() or not pub.is_file():
            raise ConfigError(f"federated.supernode_auth_dir: {str(priv)!r} or its .pub is missing; "
                              f"{n} SuperNodes need client_credentials_0..{n - 1} (infra/flower/make_certs.sh)")
        keys.append((priv, pub))
    return keys


class FlowerCluster:
    """A SuperLink (started here, or an existing one) and N SuperNodes on 127.0.0.1.

    Every process runs in its own process group and is stopped by group id; ``FLWR_HOME`` is
    ``home``, so nothing lands in the user's home directory. Use as a context manager.
    """

    CONNECTION = "driftloop"

    def __init__(self, num_supernodes: int, home: str | os.PathLike, *, tls: TlsFiles | None = None,
                 auth_keys: list[tuple[Path, Path]] | None = None, superlink_address: str | None = None,
                 fleet_address: str | None = None, start_supernodes: bool = True, startup_timeout: float = 60.0):
        self.n = num_supernodes
        self.home = Path(home)
        self.tls = tls
        self.auth_keys = auth_keys
        self.external = superlink_address is not None
        self.control_address = superlink_address or f"127.0.0.1:{free_port()}"
        self.fleet_address = fleet_address or (None if self.external else f"127.0.0.1:{free_port()}")
        self.start_supernodes = start_supernodes and self.fleet_address is not None
        self.startup_timeout = startup_timeout
        self.superlink: subprocess.Popen | None = None
        self.supernodes: list[subprocess.Popen | None] = []
        self.extra_supernodes: list[subprocess.Popen] = []
        (self.home / "logs").mkdir(parents=True, exist_ok=True)

    @classmethod
    def from_config(cls, fed, home: str | os.PathLike) -> "FlowerCluster":
        """The cluster ``federated.*`` describes; checks files and reachability before starting anything."""
        tls = TlsFiles.from_config(fed)
        keys = _auth_keys(fed.supernode_auth_dir, fed.num_clients)
        if fed.superlink_address:
            check_reachable(fed.superlink_address)
            if fed.superlink_fleet_address:
                check_reachable(fed.superlink_fleet_address, "federated.superlink_fleet_address")
        return cls(fed.num_clients, home, tls=tls, auth_keys=keys, superlink_address=fed.superlink_address,
                   fleet_address=fed.superlink_fleet_address, startup_timeout=fed.startup_timeout_s)

    # -- processes ------------------------------------------------------------------------------
    def _env(self) -> dict[str, str]:
        return _child_env({"FLWR_HOME": str(self.home)})

    def _spawn(self, cmd: list[str], logname: str) -> subprocess.Popen:
        logf = open(self.home / "logs" / logname, "ab")
        try:
            return subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, env=self._env(),
                                    cwd=str(self.home), start_new_session=True)
        finally:
            logf.close()

    def _write_connection(self) -> None:
        lines = ["[superlink]", f'default = "{self.CONNECTION}"', "", f"[superlink.{self.CONNECTION}]",
                 f'address = "{self.control_address}"']
        if self.tls is not None:
            lines.append(f'root-certificates = "{self.tls.ca_cert.resolve()}"')
        else:
            lines.append("insecure = true")
        (self.home / "config.toml").write_text("\n".join(lines) + "\n")

    def start(self) -> "FlowerCluster":
        self._write_connection()
        try:
            if not self.external:
                cmd = [str(BIN / "flower-superlink"), "--fleet-api-address", self.fleet_address,
                       "--control-api-address", self.control_address,
                       "--serverappio-api-address", f"127.0.0.1:{free_port()}",
                       "--disable-runtime-dependency-installation"]
                cmd += (["--ssl-ca-certfile", str(self.tls.ca_cert), "--ssl-certfile", str(self.tls.server_cert),
                         "--ssl-keyfile", str(self.tls.server_key)] if self.tls else ["--insecure"])
                if self.auth_keys:
                    cmd.append("--enable-supernode-auth")
                self.superlink = self._spawn(cmd, "superlink.log")
                _wait_port(self.control_address, self.startup_timeout, self.superlink, "flower-superlink")
                _wait_port(self.fleet_address, self.startup_timeout, self.superlink, "flower-superlink")
            if self.start_supernodes:
                for i in range(self.n):
                    self.supernodes.append(self._start_supernode(i))
                self.wait_for_nodes(self.n)
        except BaseException:
            self.stop()
            raise
        return self

    def _start_supernode(self, i: int) -> subprocess.Popen:
        priv, pub = self.auth_keys[i] if self.auth_keys else (None, None)
        return self._supernode(i, priv, pub, f"supernode-{i}.log")

    def _supernode(self, partition_id: int, private_key: Path | None, register: Path | None,
                   logname: str) -> subprocess.Popen:
        cmd = [str(BIN / "flower-supernode"), "--superlink", self.fleet_address,
               "--clientappio-api-address", f"127.0.0.1:{free_port()}",
               "--node-config", f"partition-id={partition_id} num-partitions={self.n}"]
        cmd += ["--root-certificates", str(self.tls.ca_cert)] if self.tls else ["--insecure"]
        if register is not None:
            self.flwr(["supernode", "register", str(register), self.CONNECTION], timeout=self.startup_timeout)
        if private_key is not None:
            cmd += ["--auth-supernode-private-key", str(private_key)]
        return self._spawn(cmd, logname)

    def start_extra_supernode(self, partition_id: int, private_key: Path | None = None, *,
                              register_public_key: Path | None = None, logname: str = "supernode-extra.log") -> subprocess.Popen:
        """Start one more ``flower-supernode`` against this cluster's Fleet API (own process group, log in
        ``logs/logname``) and return it; :meth:`stop` stops it too.

        ``private_key``: the key it authenticates with. Its public key is registered with the SuperLink
        only when given as ``register_public_key``: a SuperNode whose key was never registered is
        refused by a SuperLink started with ``--enable-supernode-auth`` (the deployment tests check it).
        """
        if self.fleet_address is None:
            raise FederatedEngineError("this cluster has no Fleet API address to start a SuperNode against")
        proc = self._supernode(partition_id, private_key, register_public_key, logname)
        self.extra_supernodes.append(proc)
        return proc

    def flwr(self, args: list[str], timeout: float) -> subprocess.CompletedProcess:
        """Run the ``flwr`` CLI against this cluster; raise naming the command when it fails."""
        try:
            proc = subprocess.run([str(BIN / "flwr"), *args], capture_output=True, text=True, env=self._env(),
                                  cwd=str(self.home), timeout=timeout)
        except subprocess.TimeoutExpired:
            raise FederatedEngineError(f"`flwr {' '.join(args)}` got no answer from the SuperLink at "
                                       f"{self.control_address} within {timeout:.0f} s") from None
        if proc.returncode != 0:
            raise FederatedEngineError(f"`flwr {' '.join(args)}` failed ({proc.returncode}): "
                                       f"{(proc.stderr or proc.stdout).strip()[-800:]}")
        return proc

    def online_nodes(self, timeout: float = 30.0) -> int:
        out = self.flwr(["supernode", "list", self.CONNECTION, "--format", "json"], timeout=timeout).stdout
        data = json.loads(out[out.index("{"):]) if "{" in out else {}
        nodes = data.get("nodes", [])
        return sum(1 for nd in nodes if str(nd.get("status", "online")).lower() == "online")

    def wait_for_nodes(self, n: int) -> None:
        deadline = time.monotonic() + self.startup_timeout
        seen = 0
        while time.monotonic() < deadline:
            if self.superlink is not None and self.superlink.poll() is not None:
                raise FederatedEngineError(f"flower-superlink exited with status {self.superlink.returncode}: "
                                           f"{_tail(self.home / 'logs' / 'superlink.log', 15)}")
            for i, p in enumerate(self.supernodes):
                if p is not None and p.poll() is not None:
                    raise FederatedEngineError(f"flower-supernode {i} exited with status {p.returncode}: "
                                               f"{_tail(self.home / 'logs' / f'supernode-{i}.log', 15)}")
            seen = self.online_nodes(timeout=max(5.0, deadline - time.monotonic()))
            if seen >= n:
                return
            time.sleep(0.5)
        raise FederatedEngineError(f"only {seen} of {n} SuperNodes connected within {self.startup_timeout:.0f} s")

    def kill_supernode(self, i: int) -> None:
        """Kill SuperNode ``i`` and its children at once (SIGKILL): a client dying mid-run."""
        p = self.supernodes[i]
        if p is not None and p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=10)

    def run_app(self, app_dir: Path, timeout: float, logname: str = "flwr-run.log") -> int:
        """``flwr run APP_DIR NAME --stream``; returns its exit status (logs to ``logs/logname``)."""
        with open(self.home / "logs" / logname, "ab") as logf:
            proc = subprocess.Popen([str(BIN / "flwr"), "run", str(app_dir), self.CONNECTION, "--stream"],
                                    stdout=logf, stderr=subprocess.STDOUT, env=self._env(), cwd=str(self.home),
                                    start_new_session=True)
            try:
                return proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _stop_group(proc)
                raise FederatedEngineError(f"`flwr run` did not finish within {timeout:.0f} s") from None

    def stop(self) -> None:
        for p in [*self.supernodes, *self.extra_supernodes]:
            if p is not None:
                _stop_group(p)
        if self.superlink is not None:
            _stop_group(self.superlink)

    def __enter__(self) -> "FlowerCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


APP_MODULE = '''"""Flower app components of driftloop (generated: the code lives in tasks.federated)."""
# Plain assignments: Flower checks the component names statically (AST), not by importing.
from tasks.federated import client_app as _client_module
from tasks.federated import server_app as _server_module

client_app = _client_module.app
server_app = _server_module.app
'''


def write_app_dir(root: Path, workdir: Path) -> Path:
    """A minimal Flower app (pyproject + a module naming the components) whose run config points at ``workdir``."""
    app = root / "app"
    app.mkdir(parents=True, exist_ok=True)
    (app / "driftloop_flower_app.py").write_text(APP_MODULE)
    (app / "pyproject.toml").write_text(f"""[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "driftloop-federated"
version = "1.0.0"
description = "driftloop federated rounds"
license = "Apache-2.0"
dependencies = []

[tool.flwr.app]
publisher = "driftloop"

[tool.flwr.app.components]
serverapp = "driftloop_flower_app:server_app"
clientapp = "driftloop_flower_app:client_app"

[tool.flwr.app.config]
{RUN_CONFIG_KEY} = {json.dumps(str(workdir.resolve()))}
""")
    return app


# ---------------------------------------------------------------------------------------------
# the entry point


def _run_simulation(workdirs: Sequence[Path], timeout: float, logpath: Path) -> str:
    """``python -m tasks.federated.simulate WORKDIR...``: the runs of ``workdirs``, one after another, in one subprocess."""
    logpath.parent.mkdir(parents=True, exist_ok=True)
    with open(logpath, "ab") as logf:
        proc = subprocess.Popen([sys.executable, "-m", "tasks.federated.simulate", *map(str, workdirs)], stdout=logf,
                                stderr=subprocess.STDOUT, env=_child_env({"DRIFTLOOP_FED_WORKDIR": str(workdirs[0])}),
                                cwd=str(PROJECT_ROOT), start_new_session=True)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _stop_group(proc)
            raise FederatedEngineError(f"the Flower simulation did not finish within {timeout:.0f} s; "
                                       f"log {logpath}:\n{_tail(logpath)}") from None
        finally:
            # Ray's workers run in the same session: make sure none outlives the run.
            _stop_group(proc, grace=1.0)
    return _tail(logpath)


def _run_deployment(workdir: Path, fed, cluster: FlowerCluster | None, timeout: float) -> str:
    app = write_app_dir(workdir, workdir)
    if cluster is not None:
        rc = cluster.run_app(app, timeout)
        return f"flwr run exit status {rc}\n" + _tail(cluster.home / "logs" / "flwr-run.log")
    home = Path(tempfile.mkdtemp(prefix="flwr-home-", dir=workdir))
    with FlowerCluster.from_config(fed, home) as own:
        rc = own.run_app(app, timeout)
    return f"flwr run exit status {rc}\n" + _tail(home / "logs" / "flwr-run.log")


@dataclass
class _StagedRun:
    """A run whose inputs passed every cheap check, ready to be written to a work dir."""

    settings: Any
    engine: str
    spec: dict[str, Any]
    summary: dict[str, Any]
    initial_weights: bytes
    parts: list

    @property
    def timeout(self) -> float:
        fed = self.settings.federated
        return fed.startup_timeout_s + fed.rounds * (fed.round_timeout_s + 60.0)

    def write(self, root: Path, splits, faults: Sequence[Fault]) -> None:
        write_workspace(root, settings_json=self.settings.resolved(), model_spec=self.spec,
                        initial_weights=self.initial_weights, train=(splits.train.x, splits.train.y), parts=self.parts,
                        val=(splits.val.x, splits.val.y), test=(splits.test.x, splits.test.y), faults=faults,
                        extra={"engine": self.engine, "partition": self.summary})

    def collect(self, root: Path, tail: str) -> FederatedResult:
        return _collect(root, self.settings.federated, self.engine, self.spec, self.summary, tail)


def _stage(settings, splits, initial_state, engine: str, cluster: FlowerCluster | None) -> _StagedRun:
    """Check a run's inputs (cheap checks, before any process starts) and build its initial model."""
    from tasks.models.serialize import build_from_spec, model_spec, state_dict_from_bytes, state_dict_to_bytes
    from tasks.models.standardize import fit_standardization
    from tasks.seeding import derive_seed

    fed = settings.federated
    if engine not in ("simulation", "deployment"):
        raise ConfigError(f"federated.engine: unknown engine {engine!r}; use simulation or deployment")
    train, val, test = splits.train, splits.val, splits.test
    num_classes = int(max(int(train.y.max()), int(val.y.max()) if len(val) else 0, int(test.y.max()) if len(test) else 0) + 1)
    # Checks that can fail cheaply, before any process starts.
    parts = partition_from_config(train.y, fed, derive_seed(settings.seed, "federated", "partition"))
    if engine == "deployment" and cluster is None:
        TlsFiles.from_config(fed)
        _auth_keys(fed.supernode_auth_dir, fed.num_clients)
        if fed.superlink_address:
            check_reachable(fed.superlink_address)
    # Standardization from the whole training split, shared by every client through the spec.
    spec = model_spec(settings.model, train.sample_shape, num_classes, fit_standardization(train.x))
    torch.manual_seed(derive_seed(settings.seed, "federated", "init"))
    model = build_from_spec(spec)
    if initial_state is not None:
        state = state_dict_from_bytes(initial_state) if isinstance(initial_state, (bytes, bytearray)) else initial_state
        try:
            model.load_state_dict(state)
        except RuntimeError as e:
            raise ConfigError(f"the initial model does not fit model={settings.model.model_dump()}: {e}") from e
    summary = partition_summary(train.y, parts, num_classes, fed.partition)
    return _StagedRun(settings, engine, spec, summary, state_dict_to_bytes(model), list(parts))


def run_federated(settings, splits, initial_state: dict[str, torch.Tensor] | bytes | None = None, *,
                  workdir: str | os.PathLike | None = None, faults: Sequence[Fault] = (),
                  cluster: FlowerCluster | None = None, engine: str | None = None) -> FederatedResult:
    """Run ``settings.federated.rounds`` federated rounds over client partitions of ``splits.train``.

    ``initial_state``: the starting global weights (a state dict or safetensors bytes, e.g. the tuned
    model's), else a fresh model from ``settings.model`` seeded by ``settings.seed``. The global model
    is evaluated on ``splits.val`` and ``splits.test`` before round one and after every round.
    ``engine`` overrides ``settings.federated.engine``; ``cluster`` runs the deployment engine on a
    :class:`FlowerCluster` the caller started (tests kill its SuperNodes). ``workdir`` keeps the
    inputs, logs and per-round checkpoints (default: a temporary directory, deleted afterwards).
    ``faults``: injected client faults (tests, drills, benchmarks).

    Bad input (more clients than samples, missing TLS files, an unreachable SuperLink) raises
    before round one. A round with fewer than ``min_fit_clients`` usable replies raises
    :class:`RoundFailed`; an engine that stops without a result raises :class:`FederatedEngineError`.
    No result means no model: nothing is returned to publish.
    """
    fed = settings.federated
    staged = _stage(settings, splits, initial_state, engine or fed.engine, cluster)
    own_dir = workdir is None
    root = Path(tempfile.mkdtemp(prefix="driftloop-fed-")) if own_dir else Path(workdir)
    root.mkdir(parents=True, exist_ok=True)
    try:
        staged.write(root, splits, faults)
        log.info("federated: %s engine, %s, %d clients, %d rounds", staged.engine, fed.strategy, fed.num_clients,
                 fed.rounds)
        if staged.engine == "simulation":
            tail = _run_simulation([root], staged.timeout, root / "logs" / "simulation.log")
        else:
            tail = _run_deployment(root, fed, cluster, staged.timeout)
        return staged.collect(root, tail)
    finally:
        if own_dir:
            shutil.rmtree(root, ignore_errors=True)


def run_simulations(runs: Sequence[tuple[Any, Sequence[Fault]]], splits,
                    initial_state: dict[str, torch.Tensor] | bytes | None = None, *,
                    workdir: str | os.PathLike | None = None) -> list[FederatedResult]:
    """Several simulation-engine runs over the same ``splits`` in ONE simulation subprocess.

    ``runs``: ``(settings, faults)`` pairs, e.g. a clean run and faulty variants of it to compare.
    Each run is what :func:`run_federated` with ``engine="simulation"`` would do (same checks, same
    work-dir layout, in ``workdir/run-<i>``, same result), but the runs share one
    ``python -m tasks.federated.simulate`` process and run one after another in it: each still gets
    its own Ray runtime; what is saved is the process start-up and imports, a few seconds per run on
    2 cores. Every run is checked before the subprocess starts. All runs are attempted; then the
    results come back in order, or the first failed run raises as :func:`run_federated` would.
    """
    if not runs:
        raise ConfigError("run_simulations: no runs given")
    staged = [_stage(s, splits, initial_state, "simulation", None) for s, _ in runs]
    own_dir = workdir is None
    root = Path(tempfile.mkdtemp(prefix="driftloop-fed-")) if own_dir else Path(workdir)
    roots = [root / f"run-{i}" for i in range(len(runs))]
    try:
        for st, wd, (_, faults) in zip(staged, roots, runs):
            wd.mkdir(parents=True, exist_ok=True)
            st.write(wd, splits, faults)
        log.info("federated: %d simulation runs in one process", len(runs))
        tail = _run_simulation(roots, sum(st.timeout for st in staged), root / "logs" / "simulation.log")
        return [st.collect(wd, tail) for st, wd in zip(staged, roots)]
    finally:
        if own_dir:
            shutil.rmtree(root, ignore_errors=True)


def _collect(root: Path, fed, engine: str, spec: dict, summary: dict, tail: str) -> FederatedResult:
    from tasks.models.serialize import state_dict_from_bytes

    out = root / "out"
    status = json.loads((out / "status.json").read_text()) if (out / "status.json").is_file() else {"state": "missing"}
    if status.get("state") != "completed":
        if status.get("type") == "RoundFailed":
            raise RoundFailed(status.get("error", "a federated round failed"))
        reason = status.get("error") or "the ServerApp wrote no result"
        raise FederatedEngineError(f"the federated run ({engine}) failed: {reason}\n--- log tail ---\n{tail}")
    rounds = json.loads((out / "rounds.json").read_text())
    checkpoints = {int(p.stem.split("-")[1]): p.read_bytes() for p in sorted((out / "checkpoints").glob("round-*.safetensors"))}
    state = state_dict_from_bytes((out / "final.safetensors").read_bytes())
    return FederatedResult(state_dict=state, rounds=rounds, partition=summary, strategy=fed.strategy, engine=engine,
                           model_spec=spec, checkpoints=checkpoints, log_tail=tail)

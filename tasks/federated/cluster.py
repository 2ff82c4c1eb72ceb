"""A Flower federation on real processes: a ``flower-superlink`` (started here, or an existing one)
and ``flower-supernode`` processes, each SuperNode given its own data (``data-path`` in its node
config), driven by ``flwr run APP_DIR NAME --stream``.

:func:`supernode_command` is the one place a SuperNode's command line is built: the local cluster
here and ``driftloop supernode`` (a data owner joining a federation) both use it.

Over 400 lines (``ruff format`` layout): the SuperLink/SuperNode topology and its TLS/auth set-up
are one lifecycle.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from tasks.errors import ConfigError
from tasks.federated.processes import (
    BIN,
    FederatedEngineError,
    check_reachable,
    child_env,
    free_port,
    stop_group,
    tail,
    wait_port,
)
from tasks.procs import kill_group, start_group

DATA_PATH_KEY = "data-path"
CLIENT_ID_KEY = "partition-id"


def node_config_string(
    data_path: str, client_id: int | None = None, s3_endpoint: str | None = None, new_data_path: str | None = None
) -> str:
    """The ``--node-config`` value of a SuperNode serving ``data_path`` (Flower parses it as TOML-ish
    ``key=value`` pairs separated by spaces, so the values are quoted)."""
    items = [f'{DATA_PATH_KEY}="{data_path}"']
    if client_id is not None:
        items.append(f"{CLIENT_ID_KEY}={int(client_id)}")
    if s3_endpoint:
        items.append(f's3-endpoint="{s3_endpoint}"')
    if new_data_path:
        items.append(f'new-data-path="{new_data_path}"')
    return " ".join(items)


def supernode_command(
    superlink: str,
    data_path: str,
    *,
    clientappio_address: str | None = None,
    root_certificates: str | os.PathLike | None = None,
    auth_private_key: str | os.PathLike | None = None,
    client_id: int | None = None,
    s3_endpoint: str | None = None,
    new_data_path: str | None = None,
) -> list[str]:
    """``flower-supernode`` connecting to the Fleet API at ``superlink`` and serving ``data_path`` (a
    local file or an ``s3://`` URI, read on this node with this node's credentials).

    TLS when ``root_certificates`` (the federation's CA) is given, else ``--insecure``;
    ``auth_private_key``: the node's ECDSA key when the SuperLink authenticates SuperNodes;
    ``new_data_path``: the node's new data, for federated drift checks.
    """
    if any(c in str(p) for p in (data_path, new_data_path or "") for c in '"\n'):
        raise ConfigError(f"data path {data_path!r}: quotes and newlines are not allowed in a SuperNode's data path")
    cmd = [
        str(BIN / "flower-supernode"),
        "--superlink",
        superlink,
        "--clientappio-api-address",
        clientappio_address or f"127.0.0.1:{free_port()}",
        "--node-config",
        node_config_string(str(data_path), client_id, s3_endpoint, str(new_data_path) if new_data_path else None),
    ]
    cmd += ["--root-certificates", str(root_certificates)] if root_certificates else ["--insecure"]
    if auth_private_key is not None:
        cmd += ["--auth-supernode-private-key", str(auth_private_key)]
    return cmd


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
        for key, p in (
            ("tls_ca_cert", files.ca_cert),
            ("tls_server_cert", files.server_cert),
            ("tls_server_key", files.server_key),
        ):
            if not p.is_file():
                raise ConfigError(
                    f"federated.{key}: file {str(p)!r} does not exist (make it with infra/flower/make_certs.sh)"
                )
        return files


def auth_keys(auth_dir: str | None, n: int) -> list[tuple[Path, Path]] | None:
    if not auth_dir:
        return None
    keys = []
    for i in range(n):
        priv = Path(auth_dir) / f"client_credentials_{i}"
        pub = priv.with_name(priv.name + ".pub")
        if not priv.is_file() or not pub.is_file():
            raise ConfigError(
                f"federated.supernode_auth_dir: {str(priv)!r} or its .pub is missing; "
                f"{n} SuperNodes need client_credentials_0..{n - 1} (infra/flower/make_certs.sh)"
            )
        keys.append((priv, pub))
    return keys


class FlowerCluster:
    """A SuperLink (started here, or an existing one) and N SuperNodes on 127.0.0.1.

    SuperNode ``i`` serves ``data_paths[i]`` (its own file, in its own directory) and identifies as
    client ``client_ids[i]`` (default ``i``). Against an existing SuperLink (``superlink_address``) nothing is
    started: the
    SuperNodes are their data owners' (``driftloop supernode``). Every process runs in its own
    process group and is stopped by group id; ``FLWR_HOME`` is ``home``, so nothing lands in the
    user's home directory. ``node_env``: extra environment of the SuperNodes (tests' fault
    injection, :mod:`tasks.federated.faults`). Use as a context manager.
    """

    CONNECTION = "driftloop"

    def __init__(
        self,
        num_supernodes: int,
        home: str | os.PathLike,
        *,
        data_paths: Sequence[str | os.PathLike] = (),
        tls: TlsFiles | None = None,
        auth_keys: list[tuple[Path, Path]] | None = None,
        superlink_address: str | None = None,
        fleet_address: str | None = None,
        node_env: dict[str, str] | None = None,
        client_ids: Sequence[int] | None = None,
        new_data_paths: Sequence[str | os.PathLike | None] = (),
        startup_timeout: float = 60.0,
    ):
        self.n = num_supernodes
        self.home = Path(home)
        self.tls = tls
        self.auth_keys = auth_keys
        self.external = superlink_address is not None
        self.control_address = superlink_address or f"127.0.0.1:{free_port()}"
        self.fleet_address = fleet_address or (None if self.external else f"127.0.0.1:{free_port()}")
        self.data_paths = [str(p) for p in data_paths]
        if not self.external and len(self.data_paths) != num_supernodes:
            raise ConfigError(
                f"{num_supernodes} SuperNodes need {num_supernodes} data paths, got {len(self.data_paths)}"
            )
        self.node_env = dict(node_env or {})
        self.client_ids = list(client_ids) if client_ids is not None else list(range(num_supernodes))
        self.new_data_paths = [str(p) if p else None for p in new_data_paths] or [None] * num_supernodes
        self.startup_timeout = startup_timeout
        self.superlink: subprocess.Popen | None = None
        self.supernodes: list[subprocess.Popen | None] = []
        self.extra_supernodes: list[subprocess.Popen] = []
        (self.home / "logs").mkdir(parents=True, exist_ok=True)

    @classmethod
    def from_config(
        cls,
        fed,
        home: str | os.PathLike,
        data_paths: Sequence[str | os.PathLike] = (),
        node_env: dict[str, str] | None = None,
    ) -> "FlowerCluster":
        """The cluster ``federated.*`` describes; checks files and reachability before starting anything.

        With ``fed.superlink_address`` the federation exists already (nothing is started);
        otherwise a local demo: a SuperLink and ``fed.num_clients`` SuperNodes serving ``data_paths``.
        """
        tls = TlsFiles.from_config(fed)
        if fed.superlink_address:
            check_reachable(fed.superlink_address)
            if fed.superlink_fleet_address:
                check_reachable(fed.superlink_fleet_address, "federated.superlink_fleet_address")
            return cls(
                fed.num_clients,
                home,
                tls=tls,
                superlink_address=fed.superlink_address,
                fleet_address=fed.superlink_fleet_address,
                startup_timeout=fed.startup_timeout_s,
            )
        keys = auth_keys(fed.supernode_auth_dir, fed.num_clients)
        return cls(
            fed.num_clients,
            home,
            data_paths=data_paths,
            tls=tls,
            auth_keys=keys,
            node_env=node_env,
            startup_timeout=fed.startup_timeout_s,
        )

    # -- processes ------------------------------------------------------------------------------
    def _env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return child_env({"FLWR_HOME": str(self.home), **(extra or {})})

    def _spawn(self, cmd: list[str], logname: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        return start_group(cmd, self.home / "logs" / logname, env=self._env(env), cwd=self.home)

    def _write_connection(self) -> None:
        lines = [
            "[superlink]",
            f'default = "{self.CONNECTION}"',
            "",
            f"[superlink.{self.CONNECTION}]",
            f'address = "{self.control_address}"',
        ]
        if self.tls is not None:
            lines.append(f'root-certificates = "{self.tls.ca_cert.resolve()}"')
        else:
            lines.append("insecure = true")
        (self.home / "config.toml").write_text("\n".join(lines) + "\n")

    def _fleet(self) -> str:
        """The Fleet API address SuperNodes connect to (unknown only for an external SuperLink given
        without ``fleet_address``)."""
        if self.fleet_address is None:
            raise FederatedEngineError("this cluster has no Fleet API address to start a SuperNode against")
        return self.fleet_address

    def start(self) -> "FlowerCluster":
        self._write_connection()
        try:
            if not self.external:
                cmd = [
                    str(BIN / "flower-superlink"),
                    "--fleet-api-address",
                    self._fleet(),
                    "--control-api-address",
                    self.control_address,
                    "--serverappio-api-address",
                    f"127.0.0.1:{free_port()}",
                    "--disable-runtime-dependency-installation",
                ]
                cmd += (
                    [
                        "--ssl-ca-certfile",
                        str(self.tls.ca_cert),
                        "--ssl-certfile",
                        str(self.tls.server_cert),
                        "--ssl-keyfile",
                        str(self.tls.server_key),
                    ]
                    if self.tls
                    else ["--insecure"]
                )
                if self.auth_keys:
                    cmd.append("--enable-supernode-auth")
                self.superlink = self._spawn(cmd, "superlink.log")
                wait_port(self.control_address, self.startup_timeout, self.superlink, "flower-superlink")
                wait_port(self._fleet(), self.startup_timeout, self.superlink, "flower-superlink")
                for i in range(self.n):
                    self.supernodes.append(self._start_supernode(i))
                self.wait_for_nodes(self.n)
        except BaseException:
            self.stop()
            raise
        return self

    def _start_supernode(self, i: int) -> subprocess.Popen:
        priv, pub = self.auth_keys[i] if self.auth_keys else (None, None)
        return self._supernode(
            self.client_ids[i], self.data_paths[i], priv, pub, f"supernode-{i}.log", self.new_data_paths[i]
        )

    def _supernode(
        self,
        client_id: int,
        data_path: str,
        private_key: Path | None,
        register: Path | None,
        logname: str,
        new_data_path: str | None = None,
    ) -> subprocess.Popen:
        cmd = supernode_command(
            self._fleet(),
            data_path,
            client_id=client_id,
            root_certificates=self.tls.ca_cert if self.tls else None,
            auth_private_key=private_key,
            new_data_path=new_data_path,
        )
        if register is not None:
            self.flwr(["supernode", "register", str(register), self.CONNECTION], timeout=self.startup_timeout)
        return self._spawn(cmd, logname, self.node_env)

    def start_extra_supernode(
        self,
        client_id: int,
        data_path: str | os.PathLike,
        private_key: Path | None = None,
        *,
        register_public_key: Path | None = None,
        logname: str = "supernode-extra.log",
    ) -> subprocess.Popen:
        """Start one more ``flower-supernode`` against this cluster's Fleet API (own process group, log in
        ``logs/logname``) and return it; :meth:`stop` stops it too.

        ``private_key``: the key it authenticates with. Its public key is registered with the SuperLink
        only when given as ``register_public_key``: a SuperNode whose key was never registered is
        refused by a SuperLink started with ``--enable-supernode-auth`` (the deployment tests check it).
        """
        proc = self._supernode(client_id, str(data_path), private_key, register_public_key, logname)
        self.extra_supernodes.append(proc)
        return proc

    def flwr(self, args: list[str], timeout: float) -> subprocess.CompletedProcess:
        """Run the ``flwr`` CLI against this cluster; raise naming the command when it fails."""
        try:
            proc = subprocess.run(
                [str(BIN / "flwr"), *args],
                capture_output=True,
                text=True,
                env=self._env(),
                cwd=str(self.home),
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            raise FederatedEngineError(
                f"`flwr {' '.join(args)}` got no answer from the SuperLink at "
                f"{self.control_address} within {timeout:.0f} s"
            ) from None
        if proc.returncode != 0:
            raise FederatedEngineError(
                f"`flwr {' '.join(args)}` failed ({proc.returncode}): {(proc.stderr or proc.stdout).strip()[-800:]}"
            )
        return proc

    def online_nodes(self, timeout: float = 30.0) -> int:
        out = self.flwr(["supernode", "list", self.CONNECTION, "--format", "json"], timeout=timeout).stdout
        data = json.loads(out[out.index("{") :]) if "{" in out else {}
        nodes = data.get("nodes", [])
        return sum(1 for nd in nodes if str(nd.get("status", "online")).lower() == "online")

    def wait_for_nodes(self, n: int) -> None:
        deadline = time.monotonic() + self.startup_timeout
        seen = 0
        while time.monotonic() < deadline:
            if self.superlink is not None and self.superlink.poll() is not None:
                raise FederatedEngineError(
                    f"flower-superlink exited with status {self.superlink.returncode}: "
                    f"{tail(self.home / 'logs' / 'superlink.log', 15)}"
                )
            for i, p in enumerate(self.supernodes):
                if p is not None and p.poll() is not None:
                    raise FederatedEngineError(
                        f"flower-supernode {i} exited with status {p.returncode}: "
                        f"{tail(self.home / 'logs' / f'supernode-{i}.log', 15)}"
                    )
            seen = self.online_nodes(timeout=max(5.0, deadline - time.monotonic()))
            if seen >= n:
                return
            time.sleep(0.5)
        raise FederatedEngineError(f"only {seen} of {n} SuperNodes connected within {self.startup_timeout:.0f} s")

    def kill_supernode(self, i: int) -> None:
        """Kill SuperNode ``i`` and its children at once (SIGKILL): a client dying mid-run."""
        p = self.supernodes[i]
        if p is not None:
            kill_group(p)

    def run_app(self, app_dir: Path, timeout: float, logname: str = "flwr-run.log") -> int:
        """``flwr run APP_DIR NAME --stream``; returns its exit status (logs to ``logs/logname``)."""
        proc = self._spawn([str(BIN / "flwr"), "run", str(app_dir), self.CONNECTION, "--stream"], logname)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            stop_group(proc)
            raise FederatedEngineError(f"`flwr run` did not finish within {timeout:.0f} s") from None

    def stop(self) -> None:
        for p in [*self.supernodes, *self.extra_supernodes]:
            if p is not None:
                stop_group(p)
        if self.superlink is not None:
            stop_group(self.superlink)

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

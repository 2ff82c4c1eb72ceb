"""The ServerApp's workspace: the orchestrator's side of a federated run, and only that, in a store.

Flower starts the ServerApp in a process driftloop does not control (the simulation subprocess, or
``flwr-serverapp`` under a SuperLink that may run on another machine). So the server's inputs are
written to a store prefix as JSON, safetensors and npz (never pickles): the resolved settings, the
model spec and initial weights, the schema clients validate against, and the orchestrator's
held-out splits for the server-side evaluation; the ServerApp writes its results under ``out/``
of the same prefix, and the orchestrator collects them from there.

Which store: the deployment engine uses the artifact store (``store.uri``: S3, or a path), under
``federated/staging/<run id>/``, and names it in the Flower run config (``driftloop-store-uri``,
``-endpoint``, ``-region``, ``-prefix``; never credentials: the ServerApp's host uses the standard
AWS chain); nothing in the run config is a directory of the orchestrator's (with a local store
the SuperLink must see that path, as every user of a local store must). The simulation, which runs
in the orchestrator's own subprocess and gets an empty run config from ``run_simulation``, uses
its work dir as a local store, named by ``DRIFTLOOP_FED_WORKDIR``.

No client's training data is written here: a ClientApp reads its rows on its own node
(:mod:`tasks.federated.client_data`) and gets everything else in the message
(:mod:`tasks.federated.protocol`). (The simulation, which has no nodes with data of their own, cuts
per-client files from the central split into a separate directory: :func:`write_simulation_clients`.)
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from tasks.errors import DataError

ENV_WORKDIR = "DRIFTLOOP_FED_WORKDIR"
STORE_KEYS = {
    "uri": "driftloop-store-uri",
    "endpoint_url": "driftloop-store-endpoint",
    "region": "driftloop-store-region",
    "prefix": "driftloop-store-prefix",
}
STAGING_PREFIX = "federated/staging/"


@dataclass
class Workspace:
    """A run's inputs and results under ``prefix`` of ``backend`` (a tasks.store backend)."""

    backend: Any
    prefix: str
    spec: dict[str, Any]

    def read(self, name: str) -> bytes:
        return self.backend.get_bytes(self.prefix + name)

    def write(self, name: str, data: bytes) -> None:
        self.backend.put_bytes(self.prefix + name, data)  # atomic: readers never see half an object

    def write_json(self, name: str, obj: Any) -> None:
        self.write(name, json.dumps(obj, indent=1).encode())

    def exists(self, name: str) -> bool:
        return self.backend.exists(self.prefix + name)

    def read_json(self, name: str, default: Any = None) -> Any:
        return json.loads(self.read(name)) if self.exists(name) else default

    def names(self, under: str = "") -> list[str]:
        return [k[len(self.prefix) :] for k in self.backend.list(self.prefix + under)]

    def settings(self):
        from tasks.settings import Settings

        return Settings.model_validate(self.spec["settings"])

    def schema(self):
        from tasks.data.schema import Schema

        return Schema.from_json(self.read("schema.json").decode())

    def initial_state(self) -> dict[str, torch.Tensor]:
        from tasks.store.codecs import state_dict_from_bytes

        return state_dict_from_bytes(self.read("initial.safetensors"))

    def arrays(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        with np.load(io.BytesIO(self.read(f"{name}.npz")), allow_pickle=False) as z:
            return z["x"], z["y"]

    def run_config(self, store_cfg) -> dict[str, str]:
        """The Flower run config that names this workspace (store URI, endpoint, region, prefix)."""
        from tasks.store.backends import LocalBackend

        # a local store by its absolute path: the ServerApp's working directory is not ours
        uri = str(self.backend.root) if isinstance(self.backend, LocalBackend) else store_cfg.uri
        return {
            STORE_KEYS["uri"]: uri,
            STORE_KEYS["endpoint_url"]: store_cfg.endpoint_url or "",
            STORE_KEYS["region"]: store_cfg.region or "",
            STORE_KEYS["prefix"]: self.prefix,
        }

    def clear(self) -> None:
        """Delete everything under the prefix (the staging of a finished deployment run)."""
        for k in self.backend.list(self.prefix):
            self.backend.delete(k)


def local_workspace(root: str | os.PathLike, spec: dict[str, Any] | None = None) -> Workspace:
    from tasks.store.backends import LocalBackend

    return Workspace(LocalBackend(root), "", spec if spec is not None else {})


def staging_workspace(store_cfg) -> Workspace:
    """A fresh prefix ``federated/staging/<id>/`` in the artifact store of ``store_cfg``."""
    import uuid

    from tasks.store.backends import open_backend

    return Workspace(open_backend(store_cfg), f"{STAGING_PREFIX}{uuid.uuid4().hex}/", {})


def write_spec(ws: Workspace, spec: dict[str, Any]) -> Workspace:
    ws.spec = spec
    ws.write("spec.json", json.dumps(spec, indent=1, sort_keys=True).encode())
    return ws


def _npz(x: np.ndarray, y: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, x=x, y=y)
    return buf.getvalue()


def write_workspace(
    ws: Workspace,
    *,
    settings_json: dict[str, Any],
    model_spec: dict[str, Any],
    initial_weights: bytes,
    schema_json: str,
    val: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    extra: dict[str, Any] | None = None,
) -> Workspace:
    """Write the ServerApp's inputs to ``ws`` and return it."""
    ws.write("val.npz", _npz(*val))
    ws.write("test.npz", _npz(*test))
    ws.write("initial.safetensors", initial_weights)
    ws.write("schema.json", schema_json.encode())
    return write_spec(ws, {"settings": settings_json, "model_spec": model_spec, **(extra or {})})


def write_simulation_clients(
    root: str | os.PathLike, x: np.ndarray, y: np.ndarray, parts: Sequence[np.ndarray]
) -> Path:
    """The simulation's stand-in for nodes with data of their own: ``client-<i>.npz`` per partition."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for i, idx in enumerate(parts):
        np.savez(root / f"client-{i}.npz", x=x[idx], y=y[idx])
    return root


def load_workspace(root: str) -> Workspace:
    """The simulation's workspace: its work dir as a local store."""
    ws = local_workspace(root)
    if not ws.exists("spec.json"):
        raise DataError(f"federated work dir {root!r} has no spec.json (was it written by write_workspace?)")
    ws.spec = json.loads(ws.read("spec.json"))
    return ws


def workspace_from(run_config: dict | None) -> Workspace:
    """The workspace named by the run config (deployment: a store URI and prefix) or, for the
    simulation, by ``$DRIFTLOOP_FED_WORKDIR``."""
    rc = run_config or {}
    if rc.get(STORE_KEYS["uri"]):
        from tasks.store.backends import open_backend
        from tasks.store.config import StoreConfig

        cfg = StoreConfig(
            uri=str(rc[STORE_KEYS["uri"]]),
            endpoint_url=str(rc.get(STORE_KEYS["endpoint_url"]) or "") or None,
            region=str(rc.get(STORE_KEYS["region"]) or "") or None,
        )
        ws = Workspace(open_backend(cfg), str(rc.get(STORE_KEYS["prefix"]) or ""), {})
        if not ws.exists("spec.json"):
            raise DataError(f"the federated workspace {cfg.uri} prefix {ws.prefix!r} has no spec.json")
        ws.spec = json.loads(ws.read("spec.json"))
        return ws
    if os.environ.get(ENV_WORKDIR):
        return load_workspace(os.environ[ENV_WORKDIR])
    raise DataError(f"no federated workspace: set run config {STORE_KEYS['uri']!r} (and -prefix) or ${ENV_WORKDIR}")

"""The work directory through which a federated run's settings, data and results travel.

Flower starts the ServerApp and ClientApps in processes driftloop does not control (a simulation
subprocess and Ray actors, or ``flwr-serverapp`` / ``flwr-clientapp`` children of a SuperLink and
SuperNodes), and ``run_simulation`` passes them an empty run config. So the resolved settings,
the model spec and initial weights, the training split with its client partitions and the held-out
splits are written here as JSON, safetensors and npz (never pickles), and the apps find the
directory through the run config key ``driftloop-workdir`` or the environment variable
``DRIFTLOOP_FED_WORKDIR``. The ServerApp writes its results to ``out/`` in the same directory.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from tasks.errors import DataError

ENV_WORKDIR = "DRIFTLOOP_FED_WORKDIR"
RUN_CONFIG_KEY = "driftloop-workdir"


@dataclass
class Fault:
    """An injected client fault (tests, drills, the robust-aggregation benchmark).

    ``kind``: ``nan`` / ``shape`` / ``sign_flip`` / ``scale`` (a bad or poisoned reply), ``crash``
    (the ClientApp raises), ``hang`` (replies only after the round timeout), ``exit`` (the client
    process dies). ``rounds``: the rounds it applies to, None for every round.
    """

    client: int
    kind: str
    rounds: list[int] | None = None
    factor: float = 10.0

    def applies(self, client: int, server_round: int) -> bool:
        return client == self.client and (self.rounds is None or server_round in self.rounds)


@dataclass
class Workspace:
    root: Path
    spec: dict[str, Any]
    faults: list[Fault] = field(default_factory=list)

    @property
    def out(self) -> Path:
        return self.root / "out"

    def settings(self):
        from tasks.settings import Settings

        return Settings.model_validate(self.spec["settings"])

    def initial_state(self) -> dict[str, torch.Tensor]:
        from tasks.models.serialize import state_dict_from_bytes

        return state_dict_from_bytes((self.root / "initial.safetensors").read_bytes())

    def arrays(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        with np.load(self.root / f"{name}.npz", allow_pickle=False) as z:
            return z["x"], z["y"]

    def client_indices(self, client: int) -> np.ndarray:
        with np.load(self.root / "partitions.npz", allow_pickle=False) as z:
            key = f"client_{client}"
            if key not in z.files:
                raise DataError(f"{self.root / 'partitions.npz'}: no partition for client {client} "
                                f"({len(z.files)} clients)")
            return z[key]

    def fault_for(self, client: int, server_round: int) -> Fault | None:
        return next((f for f in self.faults if f.applies(client, server_round)), None)


def write_workspace(root: str | os.PathLike, *, settings_json: dict[str, Any], model_spec: dict[str, Any],
                    initial_weights: bytes, train: tuple[np.ndarray, np.ndarray], parts: Sequence[np.ndarray],
                    val: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray],
                    faults: Sequence[Fault] = (), extra: dict[str, Any] | None = None) -> Workspace:
    """Write everything a run's apps need under ``root`` and return the :class:`Workspace`."""
    root = Path(root)
    (root / "out" / "checkpoints").mkdir(parents=True, exist_ok=True)
    np.savez(root / "train.npz", x=train[0], y=train[1])
    np.savez(root / "val.npz", x=val[0], y=val[1])
    np.savez(root / "test.npz", x=test[0], y=test[1])
    np.savez(root / "partitions.npz", **{f"client_{i}": np.asarray(p, np.int64) for i, p in enumerate(parts)})
    (root / "initial.safetensors").write_bytes(initial_weights)
    spec = {"settings": settings_json, "model_spec": model_spec, "num_clients": len(parts), **(extra or {})}
    (root / "spec.json").write_text(json.dumps(spec, indent=1, sort_keys=True))
    (root / "faults.json").write_text(json.dumps([f.__dict__ for f in faults]))
    return Workspace(root, spec, list(faults))


@lru_cache(maxsize=4)
def load_workspace(root: str) -> Workspace:
    """Read the workspace a run's apps were given (cached per process: each app call reuses it)."""
    p = Path(root)
    if not (p / "spec.json").is_file():
        raise DataError(f"federated work dir {root!r} has no spec.json (was it written by write_workspace?)")
    spec = json.loads((p / "spec.json").read_text())
    faults = [Fault(**f) for f in json.loads((p / "faults.json").read_text())] if (p / "faults.json").is_file() else []
    return Workspace(p, spec, faults)


def workdir_from(run_config: dict | None) -> str:
    """The work dir named by the run config (deployment) or the environment (simulation)."""
    wd = (run_config or {}).get(RUN_CONFIG_KEY) or os.environ.get(ENV_WORKDIR)
    if not wd:
        raise DataError(f"no federated work dir: set run config {RUN_CONFIG_KEY!r} or ${ENV_WORKDIR}")
    return str(wd)

"""The ServerApp's work directory: the orchestrator's side of a federated run, and only that.

Flower starts the ServerApp in a process driftloop does not control (the simulation subprocess, or
``flwr-serverapp`` under the SuperLink), and ``run_simulation`` passes it an empty run config. So the
server's inputs are written here as JSON, safetensors and npz (never pickles): the resolved
settings, the model spec and initial weights, the schema clients validate against, and the
orchestrator's held-out splits for the server-side evaluation. The ServerApp finds the directory
through the run config key ``driftloop-workdir`` or ``DRIFTLOOP_FED_WORKDIR`` and writes its results
to ``out/``.

No client's training data is written here: a ClientApp reads its rows on its own node
(:mod:`tasks.federated.client_data`) and gets everything else in the message
(:mod:`tasks.federated.protocol`). (The simulation, which has no nodes with data of their own, cuts
per-client files from the central split into a separate directory: :func:`write_simulation_clients`.)
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from tasks.errors import DataError

ENV_WORKDIR = "DRIFTLOOP_FED_WORKDIR"
RUN_CONFIG_KEY = "driftloop-workdir"


@dataclass
class Workspace:
    root: Path
    spec: dict[str, Any]

    @property
    def out(self) -> Path:
        return self.root / "out"

    def settings(self):
        from tasks.settings import Settings

        return Settings.model_validate(self.spec["settings"])

    def schema(self):
        from tasks.data.schema import Schema

        return Schema.from_json((self.root / "schema.json").read_text())

    def initial_state(self) -> dict[str, torch.Tensor]:
        from tasks.models.serialize import state_dict_from_bytes

        return state_dict_from_bytes((self.root / "initial.safetensors").read_bytes())

    def arrays(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        with np.load(self.root / f"{name}.npz", allow_pickle=False) as z:
            return z["x"], z["y"]


def write_workspace(root: str | os.PathLike, *, settings_json: dict[str, Any], model_spec: dict[str, Any],
                    initial_weights: bytes, schema_json: str, val: tuple[np.ndarray, np.ndarray],
                    test: tuple[np.ndarray, np.ndarray], extra: dict[str, Any] | None = None) -> Workspace:
    """Write the ServerApp's inputs under ``root`` and return the :class:`Workspace`."""
    root = Path(root)
    (root / "out" / "checkpoints").mkdir(parents=True, exist_ok=True)
    np.savez(root / "val.npz", x=val[0], y=val[1])
    np.savez(root / "test.npz", x=test[0], y=test[1])
    (root / "initial.safetensors").write_bytes(initial_weights)
    (root / "schema.json").write_text(schema_json)
    spec = {"settings": settings_json, "model_spec": model_spec, **(extra or {})}
    (root / "spec.json").write_text(json.dumps(spec, indent=1, sort_keys=True))
    return Workspace(root, spec)


def write_simulation_clients(root: str | os.PathLike, x: np.ndarray, y: np.ndarray,
                             parts: Sequence[np.ndarray]) -> Path:
    """The simulation's stand-in for nodes with data of their own: ``client-<i>.npz`` per partition."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for i, idx in enumerate(parts):
        np.savez(root / f"client-{i}.npz", x=x[idx], y=y[idx])
    return root


@lru_cache(maxsize=4)
def load_workspace(root: str) -> Workspace:
    """Read the workspace a run's ServerApp was given (cached per process)."""
    p = Path(root)
    if not (p / "spec.json").is_file():
        raise DataError(f"federated work dir {root!r} has no spec.json (was it written by write_workspace?)")
    return Workspace(p, json.loads((p / "spec.json").read_text()))


def workdir_from(run_config: dict | None) -> str:
    """The work dir named by the run config (deployment) or the environment (simulation)."""
    wd = (run_config or {}).get(RUN_CONFIG_KEY) or os.environ.get(ENV_WORKDIR)
    if not wd:
        raise DataError(f"no federated work dir: set run config {RUN_CONFIG_KEY!r} or ${ENV_WORKDIR}")
    return str(wd)

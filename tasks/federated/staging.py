"""Staging a federated run: the cheap checks before any process starts, the initial model, the
ServerApp's workspace (a store prefix: :mod:`tasks.federated.workspace`), the Flower app dir whose
run config names it, the clients' data of a simulation or a local demo federation, and collecting
the result the ServerApp wrote back."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from tasks.errors import ConfigError
from tasks.federated.cluster import TlsFiles, auth_keys
from tasks.federated.faults import Fault, faults_env
from tasks.federated.partition import partition_from_config, partition_summary
from tasks.federated.processes import FederatedEngineError, check_reachable
from tasks.federated.strategies import RoundFailed
from tasks.federated.workspace import write_simulation_clients, write_workspace


@dataclass
class FederatedResult:
    """What a federated run hands on: the final global weights, per-round records, the partition
    (for client-local data: each client's row count), each client's validation status."""

    state_dict: dict[str, torch.Tensor]
    rounds: list[dict[str, Any]]
    partition: dict[str, Any]
    strategy: str
    engine: str
    model_spec: dict[str, Any]
    checkpoints: dict[int, bytes] = field(default_factory=dict)
    log_tail: str = ""
    validation: list[dict[str, Any]] = field(default_factory=list)

    def weights_bytes(self) -> bytes:
        from tasks.store.codecs import state_dict_to_bytes

        return state_dict_to_bytes(self.state_dict)

    @property
    def final_metrics(self) -> dict[str, float]:
        last = self.rounds[-1] if self.rounds else {}
        return {
            k: float(last[k])
            for k in (
                "val_accuracy",
                "val_loss",
                "test_accuracy",
                "test_loss",
                "client_eval_accuracy",
                "client_eval_loss",
            )
            if last.get(k) is not None
        }

    def summary(self) -> dict[str, Any]:
        """JSON-ready: everything but the weights."""
        return {
            "strategy": self.strategy,
            "engine": self.engine,
            "rounds": self.rounds,
            "partition": self.partition,
            "validation": self.validation,
            "final_metrics": self.final_metrics,
            "model_spec": self.model_spec,
        }


def client_local_summary(validation: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The partition summary of a federation whose clients hold their own data: the server knows
    each client's row count (from its validation reply) and nothing about its labels."""
    sizes = [int(c["rows"]) for c in validation if c.get("rows") is not None]
    return {
        "scheme": "client-local",
        "num_clients": len(validation),
        "label_counts": None,
        "sizes": sizes,
        "min_size": min(sizes) if sizes else 0,
        "max_size": max(sizes) if sizes else 0,
        "mean_labels_per_client": None,
    }


@dataclass
class StagedRun:
    """A run whose inputs passed every cheap check, ready to be written to a work dir."""

    settings: Any
    engine: str
    spec: dict[str, Any]
    summary: dict[str, Any] | None  # None: the clients' data are their own (an existing federation)
    initial_weights: bytes
    parts: list
    schema_json: str

    @property
    def timeout(self) -> float:
        fed = self.settings.federated
        # one validation exchange, then per round a train and an evaluate exchange
        return fed.startup_timeout_s + fed.round_timeout_s + fed.rounds * (2 * fed.round_timeout_s + 60.0)

    def write(self, ws, splits, faults: Sequence[Fault], num_clients: int, clients_dir: Path | None = None) -> None:
        """The ServerApp's inputs, to the workspace ``ws``; for the simulation also its clients' files
        (``clients_dir``, on the orchestrator's disk: the simulation has no nodes of its own)."""
        client_env = faults_env(faults, self.settings.federated.round_timeout_s + 5.0)
        write_workspace(
            ws,
            settings_json=self.settings.resolved(),
            model_spec=self.spec,
            initial_weights=self.initial_weights,
            schema_json=self.schema_json,
            val=(splits.val.x, splits.val.y),
            test=(splits.test.x, splits.test.y),
            extra={"engine": self.engine, "num_clients": num_clients, "client_env": client_env},
        )
        if self.engine == "simulation" and clients_dir is not None:
            write_simulation_clients(clients_dir, splits.train.x, splits.train.y, self.parts)

    def write_node_data(self, splits, dirs: Sequence[Path]) -> list[Path]:
        """The local demo federation: each SuperNode's own file, cut from the training split, in its own directory."""
        paths = []
        for d, idx in zip(dirs, self.parts):
            d.mkdir(parents=True, exist_ok=True)
            np.savez(d / "data.npz", x=splits.train.x[idx], y=splits.train.y[idx])
            paths.append(d / "data.npz")
        return paths

    def collect(self, ws, tail: str) -> FederatedResult:
        return collect(ws, self.settings.federated, self.engine, self.spec, self.summary, tail)


def stage(settings, splits, initial_state, engine: str, cluster, schema=None) -> StagedRun:
    """Check a run's inputs (cheap checks, before any process starts) and build its initial model.

    ``schema``: what clients validate their data against (the pipeline's; default: inferred from
    ``splits.train``, the orchestrator's central proxy set). Against an existing federation
    (``federated.superlink_address`` or a ``cluster`` the caller started) ``splits.train`` gives only
    the schema, the sample shape and the classes; no rows of it go anywhere.
    """
    from tasks.data.schema import infer_schema
    from tasks.models.serialize import build_from_spec, model_spec
    from tasks.models.standardize import fit_standardization
    from tasks.models.trained import num_classes_of
    from tasks.seeding import derive_seed
    from tasks.store.codecs import state_dict_from_bytes, state_dict_to_bytes

    fed = settings.federated
    if engine not in ("simulation", "deployment"):
        raise ConfigError(f"federated.engine: unknown engine {engine!r}; use simulation or deployment")
    train, val, test = splits.train, splits.val, splits.test
    num_classes = num_classes_of(train.y, val.y, test.y)
    existing = engine == "deployment" and (cluster is not None or bool(fed.superlink_address))
    parts: list = []
    summary = None
    if not existing:  # the task cuts the clients' data from the central split (simulation, local demo)
        parts = list(partition_from_config(train.y, fed, derive_seed(settings.seed, "federated", "partition")))
        summary = partition_summary(train.y, parts, num_classes, fed.partition)
    if engine == "deployment" and cluster is None:
        TlsFiles.from_config(fed)
        if fed.superlink_address:
            check_reachable(fed.superlink_address)
        else:
            auth_keys(fed.supernode_auth_dir, fed.num_clients)
    # Standardization from the orchestrator's training split, shared by every client through the spec.
    spec = model_spec(settings.model, train.sample_shape, num_classes, fit_standardization(train.x))
    torch.manual_seed(derive_seed(settings.seed, "federated", "init"))
    model = build_from_spec(spec)
    if initial_state is not None:
        state = state_dict_from_bytes(initial_state) if isinstance(initial_state, (bytes, bytearray)) else initial_state
        try:
            model.load_state_dict(state)
        except RuntimeError as e:
            raise ConfigError(f"the initial model does not fit model={settings.model.model_dump()}: {e}") from e
    schema_json = (schema if schema is not None else infer_schema(train)).to_json(indent=None)
    return StagedRun(settings, engine, spec, summary, state_dict_to_bytes(model), parts, schema_json)


def collect(ws, fed, engine: str, spec: dict, summary: dict | None, tail: str) -> FederatedResult:
    """The result the ServerApp wrote to ``out/`` of the workspace ``ws``; raises naming the engine's or the "
    "round's error."""
    from tasks.federated.simulate import ENGINE_ERROR
    from tasks.store.codecs import state_dict_from_bytes

    err = ws.read_json(f"out/{ENGINE_ERROR}")
    if err is not None:
        raise FederatedEngineError(
            f"the Flower {engine} runtime crashed (not a client failure): {err['error']}\n--- log tail ---\n{tail}"
        )
    status = ws.read_json("out/status.json", {"state": "missing"})
    if status.get("state") != "completed":
        if status.get("type") == "RoundFailed":
            raise RoundFailed(status.get("error", "a federated round failed"))
        reason = status.get("error") or "the ServerApp wrote no result"
        raise FederatedEngineError(f"the federated run ({engine}) failed: {reason}\n--- log tail ---\n{tail}")
    rounds = ws.read_json("out/rounds.json")
    validation = ws.read_json("out/validation.json", [])
    checkpoints = {
        int(n.rsplit("/", 1)[-1].split(".")[0].split("-")[1]): ws.read(n)
        for n in sorted(ws.names("out/checkpoints/"))
        if n.endswith(".safetensors")
    }
    state = state_dict_from_bytes(ws.read("out/final.safetensors"))
    return FederatedResult(
        state_dict=state,
        rounds=rounds,
        partition=summary or client_local_summary(validation),
        strategy=fed.strategy,
        engine=engine,
        model_spec=spec,
        checkpoints=checkpoints,
        log_tail=tail,
        validation=validation,
    )


def write_app(root: Path, run_config: dict[str, str]) -> Path:
    """A minimal Flower app (pyproject + a module naming the components) under ``root/app`` whose
    run config is ``run_config`` (the workspace's store URI and prefix: no directory of ours)."""
    from tasks.federated.cluster import APP_MODULE

    app = root / "app"
    app.mkdir(parents=True, exist_ok=True)
    (app / "driftloop_flower_app.py").write_text(APP_MODULE)
    config = "\n".join(f"{k} = {json.dumps(str(v))}" for k, v in sorted(run_config.items()))
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
{config}
""")
    return app

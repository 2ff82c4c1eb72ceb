"""Store a finished federated run: the final global model (``model.json`` + ``model.safetensors``,
what the registry loads), the global model of every round, the per-round records, the partition
and the plots, under one run of kind ``federated`` with its provenance in the manifest."""

from __future__ import annotations

from typing import Any, Mapping

from tasks.federated.engine import FederatedResult
from tasks.federated.report import partition_plot_png, round_plot_png, round_rows
from tasks.store.artifacts import MODEL_SPEC, MODEL_WEIGHTS, ArtifactStore, write_run
from tasks.store.config import StoreConfig

RUN_KIND = "federated"


def publish_federated(
    result: FederatedResult,
    store_cfg: StoreConfig,
    *,
    config: Mapping[str, Any] | None = None,
    data_fingerprint: str | None = None,
    parent_model: Any = None,
    central_baseline: float | None = None,
) -> dict[str, Any]:
    """Write ``result`` as one committed store run; returns the manifest (``["run_id"]``, ``["metrics"]``).

    Only a completed run reaches here (``run_federated`` raises otherwise), so a failed federation
    never leaves a model in the store.
    """
    objects: dict[str, Any] = {
        MODEL_SPEC: result.model_spec,
        MODEL_WEIGHTS: result.weights_bytes(),
        "rounds.json": result.rounds,
        "round_table.json": round_rows(result.rounds),
        "partition.json": result.partition,
        "validation.json": result.validation,
        "rounds.png": round_plot_png(result.rounds, f"{result.strategy}: global model per round", central_baseline),
        "partition.png": partition_plot_png(result.partition),
    }
    for rnd, data in sorted(result.checkpoints.items()):
        objects[f"checkpoints/round-{rnd:03d}.safetensors"] = data
    manifest = {
        "config": dict(config) if config is not None else None,
        "data_fingerprint": data_fingerprint,
        "parent_model": parent_model,
        "metrics": {
            **result.final_metrics,
            "rounds": max(0, len(result.rounds) - 1),
            **({"central_baseline_accuracy": central_baseline} if central_baseline is not None else {}),
        },
        "federated": {
            "strategy": result.strategy,
            "engine": result.engine,
            "partition": result.partition["scheme"],
            "clients": result.partition["num_clients"],
        },
    }
    return write_run(ArtifactStore.from_config(store_cfg), RUN_KIND, objects, manifest)

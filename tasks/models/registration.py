"""Storing a candidate with its provenance, registering it, and the plain accuracy gate."""

from __future__ import annotations

import json
from typing import Any

from tasks.data.dataset import Splits, fingerprint
from tasks.data.schema import Schema
from tasks.errors import ObjectNotFound
from tasks.models.report import learning_curve_png
from tasks.models.trained import TrainedModel
from tasks.settings import Settings
from tasks.store.artifacts import ArtifactStore
from tasks.store.registry import ModelRegistry


def open_registry(settings: Settings) -> tuple[ArtifactStore, ModelRegistry]:
    store = ArtifactStore.from_config(settings.store)
    assert settings.registry.model_name is not None  # Settings derives it from data.source
    return store, ModelRegistry(store, settings.registry.model_name)


def load_schema(store: ArtifactStore, record: dict) -> Schema:
    """The schema stored with a registered version (sha256-verified)."""
    return Schema.from_json(store.get_bytes(record["run_id"], "schema.json"))


def load_trained(store: ArtifactStore, record: dict) -> TrainedModel:
    """A registered version as a TrainedModel (spec + verified safetensors weights)."""
    spec = json.loads(store.get_bytes(record["run_id"], "model.json"))
    return TrainedModel(spec, store.get_bytes(record["run_id"], "model.safetensors"), {}, origin="champion")


def load_trained_rows(store: ArtifactStore, record: dict):
    """The row ids (uint64) a registered version's lineage trained on, from its ``split_ids.npz``;
    None when the run has none (registered before splits were recorded)."""
    from tasks.data.splits import SPLIT_IDS_NAME, SplitIds

    try:
        return SplitIds.from_npz_bytes(store.get_bytes(record["run_id"], SPLIT_IDS_NAME)).trained_on
    except ObjectNotFound:
        return None


def register_candidate(
    store: ArtifactStore,
    registry: ModelRegistry,
    settings: Settings,
    model: TrainedModel,
    schema: Schema,
    splits: Splits,
    metrics: dict,
    extras: dict,
    parent: dict | None,
    trigger: dict,
    extra_files: dict[str, bytes] | None = None,
    idempotency_key: str | None = None,
) -> dict[str, Any]:
    """Write weights, architecture, schema, metrics, plots and ``extra_files`` (the drift reference)
    under one run prefix, publish the manifest last, then add a registry version pointing at that run.

    ``idempotency_key`` (the Prefect task run's id): a version already registered under the same
    key is returned as it is, nothing written, so a retried registration never adds a second run."""
    if idempotency_key is not None:
        for record in reversed(registry.versions()):
            if (record.get("lineage") or {}).get("idempotency_key") == idempotency_key:
                run_id = record["run_id"]
                names = sorted(store.manifest(run_id).get("objects", {})) + ["manifest.json"]
                return {
                    "run_id": run_id,
                    "version": int(record["version"]),
                    "manifest_uri": store.object_url(run_id, "manifest.json"),
                    "artifacts": {n: store.object_url(run_id, n) for n in names},
                }
    with store.begin_run("training") as w:
        for name, data in (extra_files or {}).items():
            w.put_bytes(name, data)
        w.put_bytes("model.safetensors", model.weights)
        w.put_json("model.json", model.spec)
        w.put_bytes("schema.json", schema.to_json().encode())
        w.put_json("metrics.json", metrics)
        if model.history.get("epoch"):
            w.put_json("history.json", model.history)
            w.put_bytes("learning_curve.png", learning_curve_png(model.history))
        # The test split's fingerprint is what makes two gate decisions comparable: same
        # fingerprint, same rows.
        data_fp = {"train": fingerprint(splits.train), "val": fingerprint(splits.val), "test": fingerprint(splits.test)}
        manifest = w.commit(
            {
                "config": settings.resolved(),
                "seed": settings.seed,
                "data_fingerprint": data_fp,
                "metrics": metrics,
                "parent_model": (
                    {"model": settings.registry.model_name, "version": parent["version"], "run_id": parent["run_id"]}
                    if parent
                    else None
                ),
                "trigger": trigger,
                "extra": extras,
            }
        )
    lineage = {
        "parent_version": parent["version"] if parent else None,
        "trigger": trigger,
        "stages": extras.get("stages"),
        "data_fingerprint": data_fp,
    }
    if idempotency_key is not None:
        lineage["idempotency_key"] = idempotency_key
    version = registry.register(w.run_id, metrics, lineage=lineage)
    names = sorted(manifest["objects"]) + ["manifest.json"]
    return {
        "run_id": w.run_id,
        "version": version,
        "manifest_uri": store.object_url(w.run_id, "manifest.json"),
        "artifacts": {n: store.object_url(w.run_id, n) for n in names},
    }

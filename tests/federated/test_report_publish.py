"""Report rows and plots, the store run of a federated result, and the Prefect task's artifacts."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import torch

from tasks.federated.engine import FederatedResult
from tasks.federated.partition import partition_indices, partition_summary
from tasks.federated.report import markdown_report, partition_plot_png, partition_rows, round_plot_png, round_rows
from tasks.models.config import ModelConfig
from tasks.models.serialize import build_from_spec, model_spec
from tasks.store.codecs import state_dict_to_bytes

PNG = b"\x89PNG\r\n\x1a\n"
ROUNDS = [
    {
        "round": 0,
        "train_loss": None,
        "val_loss": 2.3,
        "val_accuracy": 0.1,
        "test_loss": 2.3,
        "test_accuracy": 0.1,
        "participants": [],
        "failures": [],
    },
    {
        "round": 1,
        "train_loss": 1.5,
        "val_loss": 1.2,
        "val_accuracy": 0.6,
        "test_loss": 1.1,
        "test_accuracy": 0.62,
        "participants": [0, 1],
        "failures": [{"node": 9, "client": 2, "reason": "array 'w' holds 3 NaN/inf values"}],
    },
]


def _summary():
    y = np.repeat(np.arange(10), 10)
    return partition_summary(y, partition_indices(y, 5, "shards", seed=0), 10, "shards")


def test_rows_and_plots():
    rows = round_rows(ROUNDS)
    assert rows[1]["clients"] == 2 and rows[1]["participants"] == "0 1" and "client 2: array 'w'" in rows[1]["failures"]
    assert rows[0]["train_loss"] is None and rows[1]["test_accuracy"] == 0.62
    prow = partition_rows(_summary())
    assert len(prow) == 5 and all(r["labels"] <= 2 for r in prow) and sum(r["size"] for r in prow) == 100
    assert round_plot_png(ROUNDS).startswith(PNG) and partition_plot_png(_summary()).startswith(PNG)
    md = markdown_report(ROUNDS, _summary(), "fedavg", "simulation")
    assert md.count("data:image/png;base64,") == 2 and "0.1000 -> 0.6200" in md


def _result():
    spec = model_spec(ModelConfig(arch="mlp", width=8, depth=1), (1, 8, 8), 10)
    model = build_from_spec(spec)
    return FederatedResult(
        state_dict=model.state_dict(),
        rounds=ROUNDS,
        partition=_summary(),
        strategy="fedavg",
        engine="simulation",
        model_spec=spec,
        checkpoints={1: state_dict_to_bytes(model)},
    )


def test_publish_writes_model_checkpoints_and_records(s3_store_config):
    from tasks.federated.publish import publish_federated
    from tasks.store.artifacts import ArtifactStore

    res = _result()
    man = publish_federated(res, s3_store_config, config={"seed": 1}, data_fingerprint="abc", parent_model=None)
    store = ArtifactStore.from_config(s3_store_config)
    assert man["kind"] == "federated" and man["metrics"]["test_accuracy"] == 0.62 and man["metrics"]["rounds"] == 1
    assert {
        "model.json",
        "model.safetensors",
        "rounds.json",
        "partition.json",
        "rounds.png",
        "partition.png",
        "checkpoints/round-001.safetensors",
    } <= set(man["objects"])
    back = store.get_state_dict(man["run_id"], "model.safetensors")
    assert all(torch.equal(back[k], res.state_dict[k]) for k in back)
    assert store.get_json(man["run_id"], "rounds.json")[1]["participants"] == [0, 1]


def test_pure_modules_do_not_import_prefect():
    pkg = Path(__file__).resolve().parents[2] / "tasks" / "federated"
    for f in pkg.glob("*.py"):
        if f.name == "steps.py":
            continue
        names = [a.name for n in ast.walk(ast.parse(f.read_text())) if isinstance(n, ast.Import) for a in n.names]
        names += [n.module or "" for n in ast.walk(ast.parse(f.read_text())) if isinstance(n, ast.ImportFrom)]
        assert not any(x == "prefect" or x.startswith("prefect.") for x in names), f.name

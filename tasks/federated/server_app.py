"""The Flower ServerApp: read the run's settings from its workspace (a store prefix the run config
names, :mod:`tasks.federated.workspace`; never a directory of the orchestrator's), ask every client to validate its
local data
against the schema (clients whose data fail are left out), build the strategy, run
``strategy.start`` with federated evaluation (clients' held-out rows) and a central evaluation of
the global model on the orchestrator's held-out splits every round, checkpoint the global model
every round, and write the result (weights, per-round records, client validation, status) to ``out/`` of the
workspace."""

from __future__ import annotations

import logging
import random
import time
import traceback

from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp

from tasks.federated.protocol import client_task
from tasks.federated.strategies import build_strategy
from tasks.federated.validation_round import ExcludingGrid, validate_clients
from tasks.federated.workspace import Workspace, workspace_from
from tasks.models.serialize import build_from_spec
from tasks.models.train import evaluate, select_device
from tasks.seeding import derive_seed, seed_everything
from tasks.store.codecs import state_dict_to_bytes

app = ServerApp()


def run_server(grid: Grid, ws: Workspace) -> None:
    """Run every round of the configured strategy on ``grid``; results go to ``out/`` of ``ws``."""
    settings = ws.settings()
    fed, tr = settings.federated, settings.training
    seed_everything(derive_seed(settings.seed, "federated", "server"))
    # Flower's node sampling uses Python's global random: seed it so client selection reproduces
    # (ExcludingGrid lists the nodes in client order: their ids are random, drawn anew every run).
    random.seed(derive_seed(settings.seed, "federated", "sampling"))
    strategy = build_strategy(fed)
    model = build_from_spec(ws.spec["model_spec"])
    # In the model's own key order (safetensors stores keys sorted): FedAvgM/FedAdam pair the global
    # arrays with the aggregate by position, and the clients reply in the model's order.
    model.load_state_dict(ws.initial_state())
    initial = {k: v.detach().clone() for k, v in model.state_dict().items()}
    device = select_device(tr.device)
    num_classes = int(ws.spec["model_spec"]["num_classes"])
    val, test = ws.arrays("val"), ws.arrays("test")
    task_config = client_task(settings, ws.spec["model_spec"], ws.schema()).to_config()
    rows: list[dict] = []

    def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        model.load_state_dict(arrays.to_torch_state_dict())
        model.to(device)
        ev_val = evaluate(model, val[0], val[1], device, num_classes)
        ev_test = evaluate(model, test[0], test[1], device, num_classes)
        entry = strategy.round_log.get(server_round, {})
        row = {
            "round": server_round,
            "train_loss": entry.get("train_loss"),
            "val_loss": ev_val.loss,
            "val_accuracy": ev_val.accuracy,
            "test_loss": ev_test.loss,
            "test_accuracy": ev_test.accuracy,
            "participants": entry.get("participants", []),
            "failures": entry.get("failures", []),
            "sampled": len(entry.get("sampled_nodes", [])),
            "clients": entry.get("clients", {}),
            "client_eval": entry.get("client_eval", {}),
            "client_eval_accuracy": entry.get("client_eval_accuracy"),
            "client_eval_loss": entry.get("client_eval_loss"),
            "client_eval_examples": entry.get("client_eval_examples"),
            "wall_time": time.time(),
        }
        if server_round > 0:
            ckpt = f"round-{server_round:03d}.safetensors"
            ws.write(f"out/checkpoints/{ckpt}", state_dict_to_bytes(model))
            row["checkpoint"] = ckpt
        rows.append(row)
        ws.write_json("out/rounds.json", rows)
        return MetricRecord(
            {
                "val_accuracy": ev_val.accuracy,
                "val_loss": ev_val.loss,
                "test_accuracy": ev_test.accuracy,
                "test_loss": ev_test.loss,
            }
        )

    ws.write_json("out/status.json", {"state": "running"})
    try:
        # Federated validation first: a client whose data fail the schema is never sampled.
        clients = validate_clients(
            grid, task_config, timeout=fed.round_timeout_s, min_valid=fed.min_fit_clients, wait_s=fed.startup_timeout_s
        )
        ws.write_json("out/validation.json", [c.to_dict() for c in clients])
        excluded = {c.node for c in clients if c.status != "valid"}
        result = strategy.start(
            grid=ExcludingGrid(grid, excluded, {c.node: c.client for c in clients}),
            initial_arrays=ArrayRecord(initial),
            num_rounds=fed.rounds,
            timeout=fed.round_timeout_s,
            train_config=ConfigRecord(task_config),
            evaluate_config=ConfigRecord(task_config),
            evaluate_fn=evaluate_fn,
        )
        ws.write("out/final.safetensors", state_dict_to_bytes(result.arrays.to_torch_state_dict()))
        ws.write_json("out/status.json", {"state": "completed", "rounds": fed.rounds})
    except BaseException as e:
        ws.write_json(
            "out/status.json",
            {"state": "failed", "error": str(e), "type": type(e).__name__, "traceback": traceback.format_exc()},
        )
        raise


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Entry point Flower calls in the simulation and in ``flwr-serverapp``."""
    logger = logging.getLogger("driftloop")
    if not logger.handlers:  # Flower configures only its own "flwr" logger
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    ws = workspace_from(context.run_config)
    if ws.spec.get("mode") == "drift":
        run_drift_check(grid, ws)
    else:
        run_server(grid, ws)


def run_drift_check(grid: Grid, ws: Workspace) -> None:
    """A federated drift check instead of training rounds (:mod:`tasks.federated.drift_round`)."""
    from tasks.federated.drift_round import drift_query

    fed = ws.settings().federated
    ws.write_json("out/status.json", {"state": "running"})
    try:
        reports = drift_query(
            grid, ws, timeout=fed.round_timeout_s, min_nodes=fed.min_fit_clients, wait_s=fed.startup_timeout_s
        )
        ws.write_json("out/drift.json", [r.to_dict() for r in reports])
        ws.write_json("out/status.json", {"state": "completed"})
    except BaseException as e:
        ws.write_json(
            "out/status.json",
            {"state": "failed", "error": str(e), "type": type(e).__name__, "traceback": traceback.format_exc()},
        )
        raise

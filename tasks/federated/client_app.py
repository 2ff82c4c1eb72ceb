"""The Flower ClientApp: load the global weights from the message, load this client's partition,
run the plain client update (``tasks.models.train.train_one_epoch``), reply with weights and counts."""

from __future__ import annotations

import os
import time

import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from tasks.federated.algorithms import client_update, poison_update
from tasks.federated.workspace import load_workspace, workdir_from
from tasks.models.serialize import build_from_spec
from tasks.models.train import select_device
from tasks.seeding import derive_seed

app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    """One ClientUpdate (FedAvg; FedProx when the config carries ``proximal-mu`` > 0)."""
    ws = load_workspace(workdir_from(context.run_config))
    settings = ws.settings()
    fed, tr = settings.federated, settings.training
    client = int(context.node_config["partition-id"])
    cfg = msg.content["config"]
    server_round = int(cfg["server-round"])
    fault = ws.fault_for(client, server_round)
    if fault is not None and fault.kind == "crash":
        raise RuntimeError(f"injected crash of client {client} in round {server_round}")
    if fault is not None and fault.kind == "exit":
        os._exit(17)  # a client process dying mid-round, without a reply
    torch.set_num_threads(tr.num_threads or 1)
    idx = ws.client_indices(client)
    x, y = ws.arrays("train")
    x, y = x[idx], y[idx]
    model = build_from_spec(ws.spec["model_spec"])
    global_state = msg.content["arrays"].to_torch_state_dict()
    state, loss = client_update(
        model, global_state, x, y,
        epochs=int(cfg.get("local-epochs", fed.local_epochs)), batch_size=int(cfg.get("batch-size", fed.batch_size)),
        optimizer=str(cfg.get("optimizer", fed.client_optimizer or tr.optimizer)),
        lr=float(cfg.get("lr", fed.client_lr or tr.lr)), seed=derive_seed(settings.seed, "federated", "client",
                                                                         client, "round", server_round),
        device=select_device(tr.device), proximal_mu=float(cfg.get("proximal-mu", 0.0)),
        weight_decay=tr.weight_decay, momentum=tr.momentum)
    if fault is not None and fault.kind in ("nan", "shape", "sign_flip", "scale"):
        state = poison_update(global_state, state, fault.kind, fault.factor)
    if fault is not None and fault.kind == "hang":
        time.sleep(fed.round_timeout_s + 5.0)
    content = RecordDict({"arrays": ArrayRecord(state),
                          "metrics": MetricRecord({"train_loss": float(loss), "num-examples": int(len(y)),
                                                   "partition-id": client})})
    return Message(content=content, reply_to=msg)

"""The Flower ClientApp. Its data are its node's own (``data-path`` in the node config); everything
else (model spec, weights, schema, training settings) comes in the message (:mod:`tasks.federated.protocol`).

- ``query``: validate the local data against the schema the server sent; reply with the redacted
  report (row count, rule names, counts, feature names).
- ``train``: load the global weights, load the local training rows, run the plain client update
  (``tasks.federated.algorithms.client_update``), reply with weights and counts.
- ``evaluate``: the global model on the local held-out rows; reply with loss, accuracy, counts.

A client whose data fail validation never trains: it replies with its report instead of weights.
Faults for tests are injected around the app by :func:`tasks.federated.faults.fault_mod`.
"""

from __future__ import annotations

import json

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from tasks.errors import DataError
from tasks.federated.client_data import LocalData, data_path_for, load_local_data, node_store_config
from tasks.federated.faults import fault_mod
from tasks.federated.protocol import CLIENT_KEY, VALIDATION_KEY, WEIGHT_KEY, ClientTask, as_bytes, as_float, as_int
from tasks.seeding import derive_seed

app = ClientApp(mods=[fault_mod])
_CACHE: dict[tuple, LocalData] = {}


def _client_id(context: Context) -> int:
    """The client's number: ``partition-id`` when its node config names one, else its node id."""
    return int(context.node_config.get(CLIENT_KEY, context.node_id))


def _local(task: ClientTask, context: Context) -> LocalData:
    """This node's data, validated and split (cached per process: every message reuses it)."""
    path = data_path_for(dict(context.node_config))
    key = (
        path,
        task.schema.fingerprint,
        task.validation.model_dump_json(),
        task.label_column,
        task.held_out_fraction,
        task.seed,
    )
    if key not in _CACHE:
        _CACHE[key] = load_local_data(
            path,
            task.schema,
            task.validation,
            label_column=task.label_column,
            held_out_fraction=task.held_out_fraction,
            seed=task.seed,
            store_cfg=node_store_config(dict(context.node_config)),
        )
    return _CACHE[key]


def _validation_reply(msg: Message, data: LocalData, client: int) -> Message:
    content = RecordDict(
        {
            VALIDATION_KEY: ConfigRecord({"report": json.dumps(data.validation.to_dict())}),
            "metrics": MetricRecord(
                {CLIENT_KEY: client, "rows": data.validation.rows, "passed": int(data.validation.passed)}
            ),
        }
    )
    return Message(content=content, reply_to=msg)


@app.query()
def query(msg: Message, context: Context) -> Message:
    """Federated validation: the local data against the server's schema."""
    task = ClientTask.from_config(msg.content.config_records["config"])
    return _validation_reply(msg, _local(task, context), _client_id(context))


@app.query("drift")
def drift(msg: Message, context: Context) -> Message:
    """Per-client drift report: the champion (message arrays) and its drift reference (message
    config) on this node's new data; replies p-values and verdicts only."""
    from tasks.federated.client_drift import ClientDrift, check_local_drift, new_data_path_for
    from tasks.models.serialize import build_from_spec

    cfg, client = msg.content.config_records["config"], _client_id(context)
    try:
        model = build_from_spec(json.loads(str(cfg["model-spec"])))
        model.load_state_dict(msg.content.array_records["arrays"].to_torch_state_dict())
        report = check_local_drift(
            new_data_path_for(dict(context.node_config)),
            {
                "drift_reference.npz": as_bytes(cfg["reference-npz"], "reference-npz"),
                "drift_reference.json": as_bytes(cfg["reference-json"], "reference-json"),
            },
            model,
            label_column=str(cfg["label-column"]),
            detectors=json.loads(str(cfg["detectors"])) or None,
            client=client,
            store_cfg=node_store_config(dict(context.node_config)),
        )
    except DataError as e:  # says what is missing, never what the data hold
        report = ClientDrift(client, 0, False, error=str(e))
    return Message(content=RecordDict({"drift": ConfigRecord({"report": json.dumps(report.to_dict())})}), reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """One ClientUpdate (FedAvg; FedProx when the config carries ``proximal-mu`` > 0)."""
    from tasks.federated.algorithms import client_update
    from tasks.models.serialize import build_from_spec
    from tasks.models.train import select_device

    cfg = msg.content.config_records["config"]
    task, client = ClientTask.from_config(cfg), _client_id(context)
    server_round = as_int(cfg["server-round"], "server-round")
    data = _local(task, context)
    if not data.validation.passed:
        return _validation_reply(msg, data, client)
    torch.set_num_threads(task.num_threads)
    x, y = data.train.x, data.train.y
    state, loss = client_update(
        build_from_spec(task.model_spec),
        msg.content.array_records["arrays"].to_torch_state_dict(),
        x,
        y,
        epochs=task.local_epochs,
        batch_size=task.batch_size,
        optimizer=task.optimizer,
        lr=task.lr,
        seed=derive_seed(task.seed, "federated", "client", client, "round", server_round),
        device=select_device(task.device),
        proximal_mu=as_float(cfg.get("proximal-mu", 0.0), "proximal-mu"),
        weight_decay=task.weight_decay,
        momentum=task.momentum,
    )
    content = RecordDict(
        {
            "arrays": ArrayRecord(state),
            "metrics": MetricRecord(
                {
                    "train_loss": float(loss),
                    WEIGHT_KEY: int(len(y)),
                    CLIENT_KEY: client,
                    "held_out_examples": len(data.held_out),
                }
            ),
        }
    )
    return Message(content=content, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Federated evaluation: the global model on this client's held-out rows."""
    from tasks.models.serialize import build_from_spec
    from tasks.models.train import evaluate as evaluate_model
    from tasks.models.train import select_device

    task, client = ClientTask.from_config(msg.content.config_records["config"]), _client_id(context)
    data = _local(task, context)
    if not data.validation.passed or len(data.held_out) == 0:
        return _validation_reply(msg, data, client)
    torch.set_num_threads(task.num_threads)
    model = build_from_spec(task.model_spec)
    model.load_state_dict(msg.content.array_records["arrays"].to_torch_state_dict())
    ev = evaluate_model(
        model, data.held_out.x, data.held_out.y, select_device(task.device), int(task.model_spec["num_classes"])
    )
    content = RecordDict(
        {
            "metrics": MetricRecord(
                {
                    "eval_loss": float(ev.loss),
                    "eval_accuracy": float(ev.accuracy),
                    WEIGHT_KEY: int(len(data.held_out)),
                    CLIENT_KEY: client,
                }
            )
        }
    )
    return Message(content=content, reply_to=msg)

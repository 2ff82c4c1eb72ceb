"""What the server sends a client, besides the global weights: :class:`ClientTask`, carried in the
``config`` ConfigRecord of every query, train and evaluate message (plain str/int/float values:
the model spec, schema and validation settings as JSON text). A ClientApp needs nothing else from
the orchestrator: no work dir, no run config, no shared disk.

Message types: ``query`` (validate the local data, reply :class:`~tasks.federated.client_data.ClientValidation`),
``train`` (one ClientUpdate on the local training rows) and ``evaluate`` (the global model on the
local held-out rows).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Mapping

from tasks.data.config import ValidationConfig
from tasks.data.schema import Schema

WEIGHT_KEY = "num-examples"
CLIENT_KEY = "partition-id"
VALIDATION_KEY = "validation"


def as_int(value: object, key: str) -> int:
    """``int(value)`` for a record value the protocol defines as a number (a Flower record value
    may also be a list); anything else is a TypeError that names ``key``."""
    if isinstance(value, (int, float, str, bytes)):
        return int(value)
    raise TypeError(f"record value {key!r}: expected a number, got {type(value).__name__}")


def as_float(value: object, key: str) -> float:
    """``float(value)`` for a record value the protocol defines as a number (see :func:`as_int`)."""
    if isinstance(value, (int, float, str, bytes)):
        return float(value)
    raise TypeError(f"record value {key!r}: expected a number, got {type(value).__name__}")


def as_bytes(value: object, key: str) -> bytes:
    """A record value the protocol defines as bytes; anything else is a TypeError that names ``key``."""
    if isinstance(value, bytes):
        return value
    raise TypeError(f"record value {key!r}: expected bytes, got {type(value).__name__}")


@dataclass
class ClientTask:
    """Everything a client needs to validate, train and evaluate on its own data."""

    model_spec: dict[str, Any]
    schema: Schema
    validation: ValidationConfig
    label_column: str
    seed: int
    local_epochs: int
    batch_size: int
    optimizer: str
    lr: float
    weight_decay: float
    momentum: float
    num_threads: int
    device: str
    held_out_fraction: float

    def to_config(self) -> dict[str, Any]:
        """Flat ConfigRecord values."""
        return {
            "model-spec": json.dumps(self.model_spec),
            "schema": self.schema.to_json(indent=None),
            "validation": self.validation.model_dump_json(),
            "label-column": self.label_column,
            "seed": int(self.seed),
            "local-epochs": int(self.local_epochs),
            "batch-size": int(self.batch_size),
            "optimizer": self.optimizer,
            "lr": float(self.lr),
            "weight-decay": float(self.weight_decay),
            "momentum": float(self.momentum),
            "num-threads": int(self.num_threads),
            "device": self.device,
            "held-out-fraction": float(self.held_out_fraction),
        }

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> "ClientTask":
        return cls(
            model_spec=json.loads(str(cfg["model-spec"])),
            schema=Schema.from_json(str(cfg["schema"])),
            validation=ValidationConfig.model_validate_json(str(cfg["validation"])),
            label_column=str(cfg["label-column"]),
            seed=int(cfg["seed"]),
            local_epochs=int(cfg["local-epochs"]),
            batch_size=int(cfg["batch-size"]),
            optimizer=str(cfg["optimizer"]),
            lr=float(cfg["lr"]),
            weight_decay=float(cfg["weight-decay"]),
            momentum=float(cfg["momentum"]),
            num_threads=int(cfg["num-threads"]),
            device=str(cfg["device"]),
            held_out_fraction=float(cfg["held-out-fraction"]),
        )


def client_task(settings, model_spec: dict[str, Any], schema: Schema) -> ClientTask:
    """The :class:`ClientTask` of a run's resolved ``settings``."""
    fed, tr = settings.federated, settings.training
    return ClientTask(
        model_spec=dict(model_spec),
        schema=schema,
        validation=settings.data.validation,
        label_column=settings.data.label_column,
        seed=int(settings.seed),
        local_epochs=fed.local_epochs,
        batch_size=fed.batch_size,
        optimizer=fed.client_optimizer or tr.optimizer,
        lr=fed.client_learning_rate(tr.lr),
        weight_decay=float(tr.weight_decay),
        momentum=float(tr.momentum),
        num_threads=int(tr.num_threads or 1),
        device=tr.device,
        held_out_fraction=float(fed.local_eval_fraction),
    )

"""Flower (1.32, Message API) server strategies built from the configuration, behind a reply filter.

:func:`build_strategy` returns one of Flower's ``flwr.serverapp.strategy`` classes (FedAvg, FedProx,
FedMedian, FedTrimmedAvg, Krum, MultiKrum) extended by :class:`ReplyFilter`, which, before the
strategy aggregates a round:

- rejects replies carrying NaN/inf weights, missing or extra arrays, or arrays whose shapes differ
  from the global model's, each with a logged reason;
- records who was sampled, who replied, who failed (error reply, rejected, or no reply before the
  round timeout) in :attr:`ReplyFilter.round_log`;
- raises :class:`RoundFailed` when fewer than ``min_fit_clients`` usable replies remain, so a round
  nobody (or too few) answered stops the run instead of silently keeping the old model.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Iterable

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import (
    FedAdam,
    FedAvg,
    FedAvgM,
    FedMedian,
    FedProx,
    FedTrimmedAvg,
    Krum,
    MultiKrum,
    Strategy,
)

from tasks.errors import DriftloopError
from tasks.federated.config import FederatedConfig
from tasks.federated.protocol import CLIENT_KEY, VALIDATION_KEY, WEIGHT_KEY, as_float, as_int

log = logging.getLogger("driftloop.federated")
# Per-client counts the clients report beside their metrics: not averaged.
_COUNT_KEYS = (WEIGHT_KEY, CLIENT_KEY, "held_out_examples", "rows", "passed")


class RoundFailed(DriftloopError):
    """A federated round ended with fewer usable client replies than ``federated.min_fit_clients``."""


def screen_reply(content: RecordDict, expected: dict[str, tuple[int, ...]]) -> str | None:
    """Why a training reply must not be aggregated, or None when it is usable.

    ``expected`` maps each array name of the global model to its shape.
    """
    arecs = list(content.array_records.values())
    if len(arecs) != 1:
        return f"expected exactly one ArrayRecord, got {len(arecs)}"
    mrecs = list(content.metric_records.values())
    if len(mrecs) != 1:
        return f"expected exactly one MetricRecord, got {len(mrecs)}"
    n = mrecs[0].get(WEIGHT_KEY)
    if not isinstance(n, (int, float)) or isinstance(n, bool) or not math.isfinite(n) or n <= 0:
        return f"metric {WEIGHT_KEY!r} must be a positive number, got {n!r}"
    arrays = arecs[0]
    keys = set(arrays.keys())
    if keys != set(expected):
        missing, extra = sorted(set(expected) - keys), sorted(keys - set(expected))
        return f"array names differ from the global model (missing {missing[:3]}, unexpected {extra[:3]})"
    for name, shape in expected.items():
        a = arrays[name].numpy()
        if tuple(a.shape) != tuple(shape):
            return f"array {name!r} has shape {tuple(a.shape)}, the global model's is {tuple(shape)}"
        if np.issubdtype(a.dtype, np.floating) and not np.all(np.isfinite(a)):
            bad = int(np.size(a) - np.count_nonzero(np.isfinite(a)))
            return f"array {name!r} holds {bad} NaN/inf values"
    return None


def _validation_summary(content: RecordDict) -> str:
    import json

    from tasks.federated.client_data import ClientValidation

    try:
        return ClientValidation.from_dict(json.loads(str(content[VALIDATION_KEY]["report"]))).summary()
    except (KeyError, ValueError, TypeError) as e:
        return f"unreadable validation report ({e})"


def aggregate_train_metrics(records: list[RecordDict], weight_key: str) -> MetricRecord:
    """Example-weighted mean of each training metric, leaving out the weight and the client id."""
    weights: list[float] = []
    rows: list[MetricRecord] = []
    for rec in records:
        m = next(iter(rec.metric_records.values()))
        weights.append(as_float(m[weight_key], weight_key))
        rows.append(m)
    total = sum(weights)
    out = MetricRecord()
    for key in rows[0].keys():
        if key in (weight_key, *_COUNT_KEYS) or isinstance(rows[0][key], list):
            continue
        out[key] = float(sum(w * as_float(r[key], key) for w, r in zip(weights, rows)) / total)
    out["examples"] = int(total)
    return out


class ReplyFilter:
    """Mixin placed before a Flower strategy class: screens replies, logs rounds, enforces the minimum."""

    round_log: dict[int, dict[str, Any]]

    def _init_filter(self) -> None:
        self.round_log = {}
        self._expected: dict[str, tuple[int, ...]] = {}
        self._node_to_client: dict[int, int] = {}

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid) -> Iterable[Message]:
        messages = list(super().configure_train(server_round, arrays, config, grid))  # type: ignore[misc]
        self._expected = {k: tuple(v.shape) for k, v in arrays.items()}
        self.round_log[server_round] = {
            "sampled_nodes": [int(m.metadata.dst_node_id) for m in messages],
            "participants": [],
            "failures": [],
        }
        return messages

    def aggregate_train(self, server_round: int, replies: Iterable[Message]):
        replies = list(replies)
        entry = self.round_log.setdefault(server_round, {"sampled_nodes": [], "participants": [], "failures": []})
        accepted: list[tuple[tuple[int, int], Message]] = []
        replied_nodes = set()
        for msg in replies:
            node = int(msg.metadata.src_node_id)
            replied_nodes.add(node)
            reason: str | None
            if msg.has_error():
                reason = f"client error: {msg.error.reason}"
                client = self._node_to_client.get(node)
            else:
                metrics = next(iter(msg.content.metric_records.values()), None)
                client = None
                if metrics is not None and CLIENT_KEY in metrics:
                    client = self._node_to_client[node] = as_int(metrics[CLIENT_KEY], CLIENT_KEY)
                reason = screen_reply(msg.content, self._expected)
                if reason is None:
                    # screen_reply passed: exactly one MetricRecord, with a positive WEIGHT_KEY.
                    assert metrics is not None
                    accepted.append(((0, client) if client is not None else (1, node), msg))
                    entry["participants"].append(client if client is not None else node)
                    entry.setdefault("clients", {})[str(client if client is not None else node)] = {
                        "train_examples": as_int(metrics[WEIGHT_KEY], WEIGHT_KEY),
                        "train_loss": as_float(metrics.get("train_loss", "nan"), "train_loss"),
                        "held_out_examples": as_int(metrics.get("held_out_examples", 0), "held_out_examples"),
                    }
                    continue
            log.warning("round %d: reply from node %d (client %s) rejected: %s", server_round, node, client, reason)
            entry["failures"].append({"node": node, "client": client, "reason": reason})
        for node in entry["sampled_nodes"]:
            if node not in replied_nodes:
                client = self._node_to_client.get(node)
                reason = "no reply before the round timeout (client crashed, was killed or timed out)"
                log.warning("round %d: node %d (client %s): %s", server_round, node, client, reason)
                entry["failures"].append({"node": node, "client": client, "reason": reason})
        entry["participants"].sort(key=lambda c: (c is None, c))
        if "clients" in entry:  # the round record in client order, not in the order replies arrived
            entry["clients"] = dict(sorted(entry["clients"].items(), key=lambda kv: int(kv[0])))
        need = self.min_train_nodes  # type: ignore[attr-defined]
        if len(accepted) < need:
            reasons = "; ".join(f"client {f['client']}: {f['reason']}" for f in entry["failures"]) or "none"
            raise RoundFailed(
                f"federated round {server_round}: {len(accepted)} usable client replies of "
                f"{len(entry['sampled_nodes'])} sampled, below federated.min_fit_clients={need}; "
                f"failures: {reasons}"
            )
        # Replies arrive in whatever order the clients finish; floating-point sums depend on the order,
        # so aggregate in client order: the same seed gives the same global model on every run.
        ordered = [msg for _, msg in sorted(accepted, key=lambda km: km[0])]
        arrays, metrics = super().aggregate_train(server_round, ordered)  # type: ignore[misc]
        if metrics is not None and "train_loss" in metrics:
            entry["train_loss"] = float(metrics["train_loss"])
        return arrays, metrics

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]):
        """Federated evaluation: record each client's figures on its held-out rows, then the
        example-weighted aggregate (replies without held-out rows or with errors are skipped)."""
        entry = self.round_log.setdefault(server_round, {"sampled_nodes": [], "participants": [], "failures": []})
        usable: list[tuple[int, Message]] = []
        per_client: dict[str, dict[str, float]] = {}
        for msg in replies:
            if msg.has_error():
                continue
            m = next(iter(msg.content.metric_records.values()), None)
            if m is None or WEIGHT_KEY not in m or "eval_accuracy" not in m:
                continue
            client_no = as_int(m[CLIENT_KEY], CLIENT_KEY) if CLIENT_KEY in m else int(msg.metadata.src_node_id)
            usable.append((client_no, msg))
            client = str(client_no)
            per_client[client] = {
                "examples": as_int(m[WEIGHT_KEY], WEIGHT_KEY),
                "accuracy": as_float(m["eval_accuracy"], "eval_accuracy"),
                "loss": as_float(m["eval_loss"], "eval_loss"),
            }
        entry["client_eval"] = dict(sorted(per_client.items(), key=lambda kv: int(kv[0])))
        if not usable:
            return None
        # In client order, as in aggregate_train: the weighted sums then do not depend on arrival order.
        ordered = [msg for _, msg in sorted(usable, key=lambda cm: cm[0])]
        agg = super().aggregate_evaluate(server_round, ordered)  # type: ignore[misc]
        if agg is not None:
            entry["client_eval_accuracy"] = float(agg["eval_accuracy"])
            entry["client_eval_loss"] = float(agg["eval_loss"])
            entry["client_eval_examples"] = int(agg["examples"])
        return agg


_BASES: dict[str, type[Strategy]] = {
    "fedavg": FedAvg,
    "fedprox": FedProx,
    "fedmedian": FedMedian,
    "fedtrimmedavg": FedTrimmedAvg,
    "krum": Krum,
    "multikrum": MultiKrum,
    # Server-side optimizers (Reddi et al. 2021, "Adaptive Federated Optimization"; Hsu et al. 2019
    # for FedAvgM): the averaged client update is a pseudo-gradient for a server SGD-momentum/Adam step.
    "fedavgm": FedAvgM,
    "fedadam": FedAdam,
}


class FilteredStrategy(ReplyFilter, Strategy):
    """What :func:`build_strategy` returns: a Flower strategy with :class:`ReplyFilter`'s round log.
    Abstract; each configured strategy is ``Filtered<Base>(FilteredStrategy, Base)``, so the filter
    comes before the base in the MRO."""


_FILTERED: dict[str, type[FilteredStrategy]] = {
    name: type(f"Filtered{base.__name__}", (FilteredStrategy, base), {}) for name, base in _BASES.items()
}


def build_strategy(cfg: FederatedConfig) -> FilteredStrategy:
    """The configured Flower strategy, wrapped in :class:`ReplyFilter`.

    Clients are sampled as in FedAvg: ``max(floor(C * K), min_fit_clients)`` of the ``K`` connected
    SuperNodes per round. Federated evaluation (each round's global model on the clients' local
    held-out rows) samples the same fraction, unless ``local_eval_fraction`` is 0; the ServerApp
    also evaluates the global model centrally on the orchestrator's held-out split (``evaluate_fn``).
    """
    fraction_eval = cfg.fraction_fit if cfg.local_eval_fraction > 0 else 0.0
    common = dict(
        fraction_train=cfg.fraction_fit,
        fraction_evaluate=fraction_eval,
        min_train_nodes=cfg.min_fit_clients,
        min_evaluate_nodes=0,
        min_available_nodes=cfg.min_fit_clients,
        weighted_by_key=WEIGHT_KEY,
        train_metrics_aggr_fn=aggregate_train_metrics,
        evaluate_metrics_aggr_fn=aggregate_train_metrics,
    )
    name = cfg.strategy
    extra: dict = {}
    if name == "fedprox":
        extra = {"proximal_mu": cfg.proximal_mu}
    elif name == "fedtrimmedavg":
        extra = {"beta": cfg.trimmed_beta}
    elif name == "krum":
        extra = {"num_malicious_nodes": cfg.krum_byzantine}
    elif name == "fedavgm":
        extra = {"server_learning_rate": cfg.server_lr, "server_momentum": cfg.server_momentum}
    elif name == "fedadam":
        extra = {"eta": cfg.server_lr, "tau": cfg.server_tau}
    elif name == "multikrum":
        extra = {"num_malicious_nodes": cfg.krum_byzantine, "num_nodes_to_select": cfg.multikrum_select}
    try:
        cls = _FILTERED[name]
    except KeyError:
        raise DriftloopError(f"federated.strategy: unknown strategy {name!r}; known: {', '.join(_BASES)}") from None
    strategy = cls(**common, **extra)
    strategy._init_filter()
    return strategy

"""Federated validation, on the server's side: before round one every connected client is sent the
schema (a ``query`` message) and replies with its redacted validation report; clients whose data
fail are left out of every round (:class:`ExcludingGrid` hides them from the strategy's sampling).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Mapping

from flwr.app import ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from tasks.federated.client_data import ClientValidation
from tasks.federated.protocol import CLIENT_KEY, VALIDATION_KEY, as_int
from tasks.federated.strategies import RoundFailed

log = logging.getLogger("driftloop.federated")


@dataclass
class ClientStatus:
    """One client's row of the validation table: never more than its count and its report."""

    node: int
    client: int | None
    status: str  # "valid", "invalid", "error" (the ClientApp failed), "no reply"
    rows: int | None = None
    violations: list[dict[str, Any]] = field(default_factory=list)
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class ExcludingGrid(Grid):
    """``grid`` without the nodes in ``excluded``: the strategy never samples them.

    Its node ids come in client order (``clients`` maps node id to client number; nodes it does not
    name follow, by id). Flower's node ids are random (a simulation draws new ones every run) and
    its grid returns them as a set, whose order follows the ids; the strategy samples with
    ``random.sample`` over that order, so without a stable order the same seed would pick other
    clients every run.
    """

    def __init__(self, grid: Grid, excluded: Iterable[int], clients: Mapping[int, int | None] | None = None):
        self._grid = grid
        self.excluded = set(excluded)
        self.clients = {int(n): int(c) for n, c in (clients or {}).items() if c is not None}

    def set_run(self, run) -> None:
        self._grid.set_run(run)

    @property
    def run(self):
        return self._grid.run

    def create_message(self, *args, **kwargs):
        return self._grid.create_message(*args, **kwargs)

    def get_node_ids(self) -> list[int]:
        nodes = [n for n in self._grid.get_node_ids() if n not in self.excluded]
        return sorted(nodes, key=lambda n: (n not in self.clients, self.clients.get(n, 0), n))

    def push_messages(self, messages):
        return self._grid.push_messages(messages)

    def pull_messages(self, message_ids):
        return self._grid.pull_messages(message_ids)

    def send_and_receive(self, messages, *, timeout=None):
        return self._grid.send_and_receive(messages, timeout=timeout)


def _status(node: int, reply: Message | None) -> ClientStatus:
    if reply is None:
        return ClientStatus(node, None, "no reply", reason="no reply before the round timeout")
    if reply.has_error():
        return ClientStatus(node, None, "error", reason=f"client error: {reply.error.reason}")
    metrics = next(iter(reply.content.metric_records.values()), None)
    client = as_int(metrics[CLIENT_KEY], CLIENT_KEY) if metrics is not None and CLIENT_KEY in metrics else None
    try:
        report = ClientValidation.from_dict(json.loads(str(reply.content[VALIDATION_KEY]["report"])))
    except (KeyError, ValueError, TypeError) as e:
        return ClientStatus(node, client, "error", reason=f"unreadable validation reply: {e}")
    return ClientStatus(
        node,
        client,
        "valid" if report.passed else "invalid",
        rows=report.rows,
        violations=[asdict(v) for v in report.violations],
        reason=None if report.passed else report.summary(),
    )


def validate_clients(
    grid: Grid, task_config: dict[str, Any], *, timeout: float, min_valid: int, wait_s: float
) -> list[ClientStatus]:
    """Send every connected node (waiting up to ``wait_s`` for ``min_valid`` of them) the client
    task; return each node's :class:`ClientStatus`, sorted by client. Raises :class:`RoundFailed`
    naming each client's reason when fewer than ``min_valid`` clients' data pass."""
    deadline = time.monotonic() + wait_s
    while len(nodes := sorted(grid.get_node_ids())) < min_valid and time.monotonic() < deadline:
        time.sleep(0.5)
    messages = [
        Message(content=RecordDict({"config": ConfigRecord(dict(task_config))}), dst_node_id=n, message_type="query")
        for n in nodes
    ]
    replies = {int(r.metadata.src_node_id): r for r in grid.send_and_receive(messages, timeout=timeout)}
    out = sorted((_status(n, replies.get(n)) for n in nodes), key=lambda c: (c.client is None, c.client, c.node))
    for c in out:
        if c.status != "valid":
            log.warning("federated validation: client %s (node %d) left out: %s", c.client, c.node, c.reason)
    valid = sum(c.status == "valid" for c in out)
    if valid < min_valid:
        reasons = (
            "; ".join(
                f"client {c.client if c.client is not None else c.node}: {c.reason}" for c in out if c.status != "valid"
            )
            or "none"
        )
        raise RoundFailed(
            f"federated validation: {valid} of {len(nodes)} clients' data passed, below "
            f"federated.min_fit_clients={min_valid}; {reasons}"
        )
    return out

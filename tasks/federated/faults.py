"""Client fault injection for tests, drills and the robust-aggregation benchmark, as a Flower mod.

The ClientApp's body knows nothing of faults: :func:`fault_mod` wraps every train call and applies
the faults listed in the environment variable ``DRIFTLOOP_FED_FAULTS`` (JSON) to the client named
by its node config. The variable is set only where a test or benchmark asks for faults (the
simulation subprocess per run, the SuperNodes of a local cluster), so in a real federation the mod
passes every message straight through.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from typing import Sequence

from flwr.app import ArrayRecord, Context, Message

from tasks.federated.protocol import as_int

ENV_FAULTS = "DRIFTLOOP_FED_FAULTS"
FAULT_KINDS = ("nan", "crash", "hang", "exit", "sign_flip", "scale", "shape")


@dataclass
class Fault:
    """An injected client fault.

    ``kind``: ``nan`` / ``shape`` / ``sign_flip`` / ``scale`` (a bad or poisoned reply), ``crash``
    (the ClientApp raises), ``hang`` (replies only after ``hang_s`` seconds, set by the engine to
    just past the round timeout), ``exit`` (the client process dies). ``rounds``: the rounds it
    applies to, None for every round.
    """

    client: int
    kind: str
    rounds: list[int] | None = None
    factor: float = 10.0
    hang_s: float = 0.0

    def applies(self, client: int, server_round: int) -> bool:
        return client == self.client and (self.rounds is None or server_round in self.rounds)


def faults_env(faults: Sequence[Fault], hang_s: float) -> dict[str, str]:
    """The environment entry that makes :func:`fault_mod` inject ``faults`` (empty when none)."""
    if not faults:
        return {}
    for f in faults:
        if f.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {f.kind!r}; known: {', '.join(FAULT_KINDS)}")
    return {ENV_FAULTS: json.dumps([asdict(f) | {"hang_s": f.hang_s or hang_s} for f in faults])}


def _faults() -> list[Fault]:
    raw = os.environ.get(ENV_FAULTS)
    return [Fault(**f) for f in json.loads(raw)] if raw else []


def fault_mod(msg: Message, context: Context, call_next) -> Message:
    """Flower mod: inject the configured fault of this client into a train round, else pass through."""
    faults = _faults()
    if not faults or not msg.metadata.message_type.startswith("train") or "partition-id" not in context.node_config:
        return call_next(msg, context)
    client = int(context.node_config["partition-id"])
    server_round = as_int(msg.content.config_records["config"]["server-round"], "server-round")
    fault = next((f for f in faults if f.applies(client, server_round)), None)
    if fault is None:
        return call_next(msg, context)
    if fault.kind == "crash":
        raise RuntimeError(f"injected crash of client {client} in round {server_round}")
    if fault.kind == "exit":
        os._exit(17)  # a client process dying mid-round, without a reply
    global_state = msg.content.array_records["arrays"].to_torch_state_dict()
    reply = call_next(msg, context)
    if fault.kind == "hang":
        time.sleep(fault.hang_s)
    elif not reply.has_error() and "arrays" in reply.content:
        from tasks.federated.algorithms import poison_update

        state = reply.content.array_records["arrays"].to_torch_state_dict()
        reply.content["arrays"] = ArrayRecord(poison_update(global_state, state, fault.kind, fault.factor))
    return reply

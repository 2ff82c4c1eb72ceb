"""A federated drift check, on the server's side: every connected client gets the champion (arrays)
and its drift reference (config) in a ``query.drift`` message and replies with its
:class:`~tasks.federated.client_drift.ClientDrift` (p-values and verdicts only). The ServerApp runs
this instead of training rounds when its workspace says ``mode = "drift"``."""

from __future__ import annotations

import json
import time

from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from tasks.federated.client_drift import ClientDrift

REFERENCE_NPZ, REFERENCE_JSON = "drift_reference.npz", "drift_reference.json"


def drift_query(grid: Grid, ws, *, timeout: float, min_nodes: int, wait_s: float) -> list[ClientDrift]:
    """Ask every connected node; a node that does not answer in time is listed with an error."""
    from tasks.store.codecs import state_dict_from_bytes

    spec = ws.spec
    config = ConfigRecord(
        {
            "model-spec": json.dumps(spec["model_spec"]),
            "detectors": json.dumps(spec.get("detectors") or []),
            "label-column": spec["settings"]["data"]["label_column"],
            "reference-npz": ws.read(REFERENCE_NPZ),
            "reference-json": ws.read(REFERENCE_JSON),
        }
    )
    arrays = ArrayRecord(state_dict_from_bytes(ws.read("champion.safetensors")))
    deadline = time.monotonic() + wait_s
    while len(nodes := sorted(grid.get_node_ids())) < min_nodes and time.monotonic() < deadline:
        time.sleep(0.5)
    msgs = [
        Message(content=RecordDict({"arrays": arrays, "config": config}), dst_node_id=n, message_type="query.drift")
        for n in nodes
    ]
    replies = {int(r.metadata.src_node_id): r for r in grid.send_and_receive(msgs, timeout=timeout)}
    out = []
    for n in nodes:
        r = replies.get(n)
        if r is None:
            out.append(ClientDrift(None, 0, False, error=f"node {n}: no reply within {timeout:.0f} s", node_id=n))
        elif r.has_error():
            out.append(ClientDrift(None, 0, False, error=f"node {n}: client error: {r.error.reason}", node_id=n))
        else:
            reply = ClientDrift.from_dict(json.loads(str(r.content["drift"]["report"])))
            reply.node_id = n
            out.append(reply)
    return sorted(out, key=lambda c: (c.client is None, c.client))


def write_drift_inputs(ws, champion_weights: bytes, reference_files: dict[str, bytes]) -> None:
    ws.write("champion.safetensors", champion_weights)
    ws.write(REFERENCE_NPZ, reference_files[REFERENCE_NPZ])
    ws.write(REFERENCE_JSON, reference_files[REFERENCE_JSON])

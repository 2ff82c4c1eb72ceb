"""The drift check's view of a federated drift report: each client's reply (p-values and verdicts
only, :class:`~tasks.federated.client_drift.ClientDrift`) as a
:class:`~tasks.drift.verdict.BatchVerdict`, so the drift-check flow records, reports, emits and
opens episodes for a drifting client exactly as it does for a drifting batch file.

A client's "batch" is named by what the server knows of it: ``fed-client-<client>-node-<node id>``
plus a digest of its reply (model version, client, node, row count, every detector's p-value and
verdict). Unchanged new data on a node give the same reply, hence the same id: the ledger then
skips it as it skips a batch file already checked, and a later check with new rows is a new
"batch". The verdict's URI names the federation and the node (``flower://<superlink>/node-<id>/
client-<id>``); it is not readable from the orchestrator, because the rows never leave the node.

A client reply carries no accuracy estimate (CBPE needs the softmax outputs), so its verdict has no
harm figure and, under ``drift.trigger = "drift_and_harm"``, its drift triggers as under ``"drift"``
(as a reference without CBPE calibration does for batch files).
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any, Sequence

from tasks.drift.report import DriftReport
from tasks.drift.verdict import BatchVerdict
from tasks.federated.client_drift import ClientDrift

SOURCE = "federation"
DETECTOR_KIND = "federated"


def client_batch_id(reply: ClientDrift, model_version: Any) -> str:
    """A deterministic id for one client's reply to one champion version."""
    doc = json.dumps(
        {
            "version": str(model_version),
            "client": reply.client,
            "node": reply.node_id,
            "rows": reply.rows,
            "detectors": reply.detectors,
        },
        sort_keys=True,
    )
    digest = hashlib.sha256(doc.encode()).hexdigest()[:12]
    return f"fed-client-{reply.client}-node-{reply.node_id}-{digest}"


def client_uri(reply: ClientDrift, superlink: str | None) -> str:
    return f"flower://{superlink or 'federation'}/node-{reply.node_id}/client-{reply.client}"


def client_verdict(reply: ClientDrift, model_version: Any, trigger: str, superlink: str | None) -> BatchVerdict:
    """One client's reply as a verdict (one report per detector; p-value and verdict, no statistic)."""
    batch_id = client_batch_id(reply, model_version)
    details = {"source": SOURCE, "client": reply.client, "node_id": reply.node_id}
    reports = [
        DriftReport(
            str(d["detector"]),
            batch_id,
            bool(d["drift"]),
            math.nan,
            math.nan,
            None if d.get("p_value") is None else float(d["p_value"]),
            n=reply.rows,
            kind=DETECTOR_KIND,
            details=dict(details),
        )
        for d in reply.detectors
    ]
    return BatchVerdict(batch_id, client_uri(reply, superlink), False, reports, None, trigger)


def is_client_verdict(verdict: BatchVerdict) -> bool:
    return verdict.uri.startswith("flower://")


def client_record(reply: ClientDrift) -> dict[str, Any]:
    """The extra ledger fields of a client's check: where it came from, never what it held."""
    return {"source": SOURCE, "client": reply.client, "node_id": reply.node_id, "rows": reply.rows}


def split_replies(replies: Sequence[ClientDrift]) -> tuple[list[ClientDrift], list[ClientDrift]]:
    """(clients that checked, clients that could not: no new data, unreadable file, no reply)."""
    ok = [r for r in replies if r.error is None and r.detectors]
    return ok, [r for r in replies if r not in ok]


def client_rows(replies: Sequence[ClientDrift], ids: dict[int | None, str] | None = None) -> list[dict[str, Any]]:
    """The per-client table of a federated drift check (no rows, no values: counts, p-values, verdicts)."""
    out = []
    for r in replies:
        row: dict[str, Any] = {
            "client": r.client,
            "node_id": r.node_id,
            "rows": r.rows,
            "drift": r.drift,
            "error": r.error or "",
        }
        for d in r.detectors:
            row[f"p_value[{d['detector']}]"] = d.get("p_value")
        if ids is not None:
            row["batch_id"] = ids.get(r.node_id, "")
        out.append(row)
    return out


def summary_lines(replies: Sequence[ClientDrift]) -> str:
    """Markdown lines naming each client (client id, node id) and its verdict."""
    lines = []
    for r in replies:
        where = f"client {r.client} (node {r.node_id})"
        if r.error:
            lines.append(f"- {where}: not checked: {r.error}")
        else:
            ps = ", ".join(
                f"{d['detector']} p={d['p_value']:.3g}"
                if d.get("p_value") is not None
                else f"{d['detector']} {'drift' if d['drift'] else 'no drift'}"
                for d in r.detectors
            )
            lines.append(f"- {where}: {'DRIFT' if r.drift else 'no drift'} on {r.rows} rows ({ps})")
    return "\n".join(lines) or "- no client answered"


def result_entries(clients: Sequence[ClientDrift], not_checked: Sequence[ClientDrift], model_version: Any) -> dict:
    """The drift-check flow's ``clients`` (batch id -> client, node, drift) and ``clients_not_checked``."""
    return {
        "clients": {
            client_batch_id(c, model_version): {"client": c.client, "node_id": c.node_id, "drift": c.drift}
            for c in clients
        },
        "clients_not_checked": [{"client": c.client, "node_id": c.node_id, "error": c.error} for c in not_checked],
    }

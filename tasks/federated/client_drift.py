"""A per-client drift report: the champion's drift detectors run by each client on its new local
data (``new-data-path`` in its node config), free of Flower (the ClientApp's ``query.drift`` calls it).

What leaves the node: per detector its p-value (online detectors: none) and its verdict, the
client's overall verdict and its row count. Never a row, a softmax output or an embedding.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

from tasks.errors import DataError

NEW_DATA_KEY = "new-data-path"


@dataclass
class ClientDrift:
    """One client's answer to a federated drift check."""

    client: int | None
    rows: int
    drift: bool
    detectors: list[dict[str, Any]] = field(default_factory=list)  # {"detector", "p_value", "drift"}
    error: str | None = None  # the client could not check (no new data, unreadable file...)
    node_id: int | None = None  # the SuperNode it came from: set by the server, not sent by the client

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ClientDrift":
        return cls(
            client=d.get("client"),
            rows=int(d.get("rows", 0)),
            drift=bool(d.get("drift")),
            node_id=None if d.get("node_id") is None else int(d["node_id"]),
            detectors=[
                {"detector": str(r["detector"]), "p_value": r.get("p_value"), "drift": bool(r["drift"])}
                for r in d.get("detectors", [])
            ],
            error=d.get("error"),
        )


def new_data_path_for(node_config: Mapping[str, Any]) -> str:
    if not node_config.get(NEW_DATA_KEY):
        raise DataError(
            f"this SuperNode has no new data to check: start it with --new-data PATH (node config {NEW_DATA_KEY})"
        )
    return str(node_config[NEW_DATA_KEY])


def check_local_drift(
    path: str,
    reference_files: Mapping[str, bytes],
    model,
    *,
    label_column: str,
    detectors: list[str] | None,
    client: int | None,
    store_cfg=None,
) -> ClientDrift:
    """Run the reference's detectors (or ``detectors``) on the new data at ``path`` with ``model``."""
    from tasks.data.sources import as_float32
    from tasks.data.validation import load_batch_from_uri
    from tasks.drift.detectors import check_batch
    from tasks.drift.reference import reference_from_files
    from tasks.store.config import StoreConfig

    ref = reference_from_files(reference_files, "the server's drift reference")
    if os.path.isdir(path):
        from tasks.federated.client_data import load_image_folder

        ds = load_image_folder(path)
    else:
        read, _, error = load_batch_from_uri(path, store_cfg or StoreConfig(uri="."), label_column, batch_id="new-data")
        if error is not None:
            return ClientDrift(client, 0, False, error=f"{', '.join(error.rules)}: the new data cannot be read")
        assert read is not None, "a read that reports no error returns a dataset"
        ds = read
    x = as_float32(ds, list(ref.sample_shape)).x
    reports = check_batch(ref, x, model, detectors, batch_id="client-new-data")
    rows = [
        {"detector": r.detector, "p_value": None if r.p_value is None else float(r.p_value), "drift": bool(r.drift)}
        for r in reports
    ]
    return ClientDrift(client, int(len(x)), any(r["drift"] for r in rows), rows)

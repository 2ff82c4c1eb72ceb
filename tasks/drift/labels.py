"""Labels for unlabelled drifted batches: where they are expected, how they are read, and the
labelled copy retraining trains on. Pure: the waiting (Prefect's pause with interactive input)
is in ``tasks.drift.steps.wait_for_labels``.

Where labels go: beside the batch, as ``<batch file>.labels.json`` (for
``batches/2026-12-01/b.npz`` that is ``batches/2026-12-01/b.npz.labels.json``), a JSON object
``{"y": [3, 1, 4, ...]}`` with one integer class per row of the batch, in row order. The drift
check never takes it for a batch (its suffix is not a batch suffix). Once every unlabelled batch
of an episode has its labels file, a retraining run waiting for labels resumes by itself.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import PurePosixPath

import numpy as np

from tasks.errors import DataError, ObjectNotFound

LABELS_SUFFIX = ".labels.json"


@dataclass(frozen=True)
class BatchRef:
    """A checked batch as the drift ledger recorded it: id, where it is, whether it has labels."""

    batch_id: str
    uri: str
    labelled: bool


def labels_uri(batch_uri: str) -> str:
    """Where the labels of the batch at ``batch_uri`` are expected (see the module docstring)."""
    return batch_uri + LABELS_SUFFIX


def parse_labels(data: bytes, origin: str) -> np.ndarray:
    """The labels in a labels file as int64; DataError naming the file when it is malformed."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise DataError(f"{origin}: not valid JSON: {e}") from e
    y = doc.get("y") if isinstance(doc, dict) else None
    if not isinstance(y, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in y):
        raise DataError(f'{origin}: expected {{"y": [integer class per row, ...]}}')
    return np.asarray(y, dtype=np.int64)


def read_labels(batch_uri: str, store_cfg) -> np.ndarray | None:
    """The labels file of a batch, or None while it has not arrived."""
    from tasks.store.backends import read_uri

    uri = labels_uri(batch_uri)
    try:
        return parse_labels(read_uri(uri, store_cfg), uri)
    except ObjectNotFound:
        return None


def labelled_copy(batch_uri: str, raw: bytes, y: np.ndarray, label_column: str = "label") -> tuple[bytes, str]:
    """The batch's bytes with labels added, in the batch's own format, and the file suffix.

    npz: arrays ``x`` and ``y``; csv/parquet: the label column appended. Raises DataError naming
    the files when the labels are not one per row.
    """
    suffix = PurePosixPath(batch_uri).suffix.lower()
    if suffix == ".npz":
        with np.load(io.BytesIO(raw), allow_pickle=False) as z:
            if "x" not in z.files:
                raise DataError(f"{batch_uri}: npz has no array 'x'")
            x = z["x"]
        _check_rows(batch_uri, len(x), y)
        buf = io.BytesIO()
        np.savez(buf, x=x, y=np.asarray(y, dtype=np.int64))
        return buf.getvalue(), ".npz"
    import pandas as pd

    df = pd.read_parquet(io.BytesIO(raw)) if suffix == ".parquet" else pd.read_csv(io.BytesIO(raw))
    _check_rows(batch_uri, len(df), y)
    df[label_column] = np.asarray(y, dtype=np.int64)
    buf = io.BytesIO()
    if suffix == ".parquet":
        df.to_parquet(buf, index=False)
    else:
        df.to_csv(buf, index=False)
    return buf.getvalue(), suffix


def write_labelled_copies(refs: list[BatchRef], store_cfg, model: str, label_column: str = "label") -> list[str] | None:
    """Labelled copies of ``refs`` from their labels files, written to the store of ``store_cfg``
    under ``drift/<model>/labelled/<batch_id>.<suffix>``; their URIs, or None while a labels file
    is missing (nothing written then). A malformed labels file raises DataError naming it."""
    from tasks.store.backends import open_backend, read_uri

    found = [(r, read_labels(r.uri, store_cfg)) for r in refs]
    if any(y is None for _, y in found):
        return None
    backend, uris = open_backend(store_cfg), []
    for r, y in found:
        assert y is not None  # checked above
        data, suffix = labelled_copy(r.uri, read_uri(r.uri, store_cfg), y, label_column)
        key = f"drift/{model}/labelled/{r.batch_id}{suffix}"
        backend.put_bytes(key, data)
        uris.append(backend.url(key))
    return uris


def _check_rows(batch_uri: str, n: int, y: np.ndarray) -> None:
    if len(y) != n:
        raise DataError(f"{labels_uri(batch_uri)}: {len(y)} labels for {n} rows of {batch_uri}")

"""Quarantine: a batch that fails validation is copied, byte for byte, with its report to
``quarantine/<batch_id>/`` in the artifact store; nothing is dropped.

Batch ids (:func:`batch_id_for`, :func:`check_batch_id`) name those folders, so they live here.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime, timezone
from pathlib import PurePosixPath

import numpy as np

from tasks.data.dataset import Dataset, fingerprint
from tasks.data.report import ValidationReport
from tasks.data.sources import to_npz_bytes
from tasks.errors import DataError, StoreError

QUARANTINE_PREFIX = "quarantine"
REPORT_NAME = "report.json"
# Batch ids become one key segment in the store.
_BATCH_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def check_batch_id(batch_id: str) -> str:
    """Return ``batch_id`` if it can name a quarantine folder, else raise DataError naming it."""
    if not isinstance(batch_id, str) or not _BATCH_ID_RE.match(batch_id):
        raise DataError(f"batch id {batch_id!r} must match {_BATCH_ID_RE.pattern} (it names a store prefix)")
    return batch_id


def batch_id_for(source: str, raw: bytes | None = None, ds: Dataset | None = None) -> str:
    """A stable batch id: the file's stem plus 12 hex digits of the bytes' (or data's) sha256."""
    stem = PurePosixPath(source.split("?")[0].rstrip("/")).stem or "batch"
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip(".-_")[:60] or "batch"
    if raw is not None:
        digest = hashlib.sha256(raw).hexdigest()
    elif ds is not None:
        digest = fingerprint(ds)
    else:  # nothing readable: the id names the source itself
        digest = hashlib.sha256(source.encode()).hexdigest()
    return f"{stem}-{digest[:12]}"


def _raw_name(source_name: str | None) -> str:
    base = PurePosixPath((source_name or "").split("?")[0].rstrip("/")).name
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", base).lstrip(".") or "batch.bin"
    return "batch-" + base if base == REPORT_NAME else base


def quarantine(
    backend, batch_id: str, raw_bytes: bytes | None, source_name: str | None, report: ValidationReport
) -> str:
    """Copy a failed batch's raw bytes and its report to ``quarantine/<batch_id>/`` in ``backend``.

    The raw bytes (when the batch was readable at all) are stored unchanged under the source's
    file name, then the report (with a ``quarantine`` section: location, sha256 and size of the
    raw copy) as ``report.json``, last, so a present report means a complete quarantine entry.
    Nothing is overwritten: quarantining the same bytes again (a retried task) returns the
    existing entry; different bytes under a taken id go to ``<batch_id>-1``, ``-2``, ...
    Returns the URI of the quarantine folder.
    """
    check_batch_id(batch_id)
    sha = hashlib.sha256(raw_bytes).hexdigest() if raw_bytes is not None else None
    name = _raw_name(source_name)
    for attempt in range(1000):
        qid = batch_id if attempt == 0 else f"{batch_id}-{attempt}"
        prefix = f"{QUARANTINE_PREFIX}/{qid}"
        if backend.exists(f"{prefix}/{REPORT_NAME}"):
            try:
                prior = json.loads(backend.get_bytes(f"{prefix}/{REPORT_NAME}"))
                same = (prior.get("quarantine") or {}).get("raw_sha256") == sha and (prior.get("quarantine") or {}).get(
                    "source"
                ) == source_name
            except (ValueError, StoreError):
                same = False
            if same:
                return (prior.get("quarantine") or {}).get("uri") or backend.url(prefix)
            continue
        if backend.list(prefix + "/"):
            # Raw bytes without a report: an earlier attempt died in between; complete it if it
            # was the same batch, else leave it alone and use the next id.
            if (
                raw_bytes is None
                or not backend.exists(f"{prefix}/{name}")
                or hashlib.sha256(backend.get_bytes(f"{prefix}/{name}")).hexdigest() != sha
            ):
                continue
        uri = backend.url(prefix)
        info = {
            "uri": uri,
            "batch_id": qid,
            "source": source_name,
            "raw_key": f"{prefix}/{name}" if raw_bytes is not None else None,
            "raw_sha256": sha,
            "raw_bytes": len(raw_bytes) if raw_bytes is not None else None,
            "quarantined_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        if raw_bytes is not None:
            backend.put_bytes(f"{prefix}/{name}", raw_bytes)
        stored = report.model_copy(update={"quarantine": info})
        backend.put_bytes(f"{prefix}/{REPORT_NAME}", stored.to_json().encode())
        return uri
    raise StoreError(f"quarantine: 1000 entries already use batch id {batch_id!r}")


def npz_for_quarantine(ds: Dataset) -> bytes:
    """An in-memory batch as npz bytes; object arrays are stored as text, never pickled."""
    x, y = np.asarray(ds.x), np.asarray(ds.y)
    x = x.astype(str) if x.dtype == object else x
    y = y.astype(str) if y.dtype == object else y
    return to_npz_bytes(Dataset(x=x, y=y, name=ds.name))

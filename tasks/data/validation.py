"""Batch validation against an inferred :class:`~tasks.data.schema.Schema`, and quarantine.

Reading a batch (:func:`load_batch_from_uri`), checking it (:func:`validate_batch`, the rules of
:mod:`tasks.data.rules`; the outcome a :class:`~tasks.data.report.ValidationReport`), and what
follows (:func:`validate_or_quarantine`): a batch that passes is conformed to the schema; one that
fails is copied with its report to ``quarantine/<batch_id>/`` (:mod:`tasks.data.quarantine`).
A batch that cannot be read at all (missing file, missing bucket, corrupt bytes) becomes a report
too, so it can be quarantined like any other bad batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from tasks.data.config import ValidationConfig
from tasks.data.dataset import Dataset
from tasks.data.quarantine import batch_id_for, check_batch_id, npz_for_quarantine, quarantine
from tasks.data.report import ValidationReport, read_report, violation_details
from tasks.data.rules import (
    DISTRIBUTION_RULES,
    RULE_EMPTY_BATCH,
    RULE_MISSING_FILE,
    RULE_UNREADABLE_FILE,
    Collector,
    align_structure,
    check_labels,
    check_values,
)
from tasks.data.schema import Schema
from tasks.data.sources import NO_LABELS, as_float32, parse_bytes
from tasks.errors import DataError, ObjectNotFound, ValidationFailed


def load_batch_from_uri(
    uri: str, store_cfg, label_column: str = "label", batch_id: str | None = None
) -> tuple[Dataset | None, bytes | None, ValidationReport | None]:
    """Read and parse a batch file (local path, ``file://`` or ``s3://``) for validation.

    Returns ``(dataset, raw_bytes, None)`` when the bytes parse (features keep their stored
    dtype, possibly non-numeric: :func:`validate_batch` checks them), ``(None, raw_bytes,
    report)`` when the bytes cannot be parsed (``unreadable_file``) and ``(None, None, report)``
    when the file or its bucket does not exist (``missing_file``). Other store errors (server
    unreachable) propagate: they are not the batch's fault and are worth a retry.
    """
    from tasks.store.backends import read_uri

    if batch_id is not None:
        check_batch_id(batch_id)
    try:
        raw = read_uri(uri, store_cfg)
    except (ObjectNotFound, FileNotFoundError) as e:
        bid = batch_id or batch_id_for(uri)
        return None, None, read_report(bid, uri, RULE_MISSING_FILE, f"cannot read the batch: {e}")
    return parse_batch_bytes(raw, uri, label_column, batch_id)


def parse_batch_bytes(
    raw: bytes, uri: str, label_column: str = "label", batch_id: str | None = None
) -> tuple[Dataset | None, bytes, ValidationReport | None]:
    """Parse bytes already read from ``uri`` as :func:`load_batch_from_uri` does (same returns)."""
    bid = batch_id or batch_id_for(uri, raw)
    try:
        ds = parse_bytes(raw, uri, label_column)
    except DataError as strict_error:
        try:  # keep what the strict parse refused (text features, odd labels) for a rule to name
            ds = parse_bytes(raw, uri, label_column, lenient=True)
        except DataError:  # truly unreadable: report what the strict parser said
            return None, raw, read_report(bid, uri, RULE_UNREADABLE_FILE, str(strict_error))
    ds.meta.setdefault("source", uri)
    ds.meta["batch_id"] = bid
    return ds, raw, None


def _as_dataset(batch: Dataset | Sequence[np.ndarray], name: str = "batch") -> Dataset:
    if isinstance(batch, Dataset):
        return batch
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        x, y = np.asarray(batch[0]), batch[1]
        if y is None:
            return Dataset(x=x, y=np.full(x.shape[0] if x.ndim else 0, np.nan), name=name, meta={NO_LABELS: True})
        return Dataset(x=x, y=np.asarray(y), name=name)
    raise TypeError(f"validate_batch takes a Dataset or an (x, y) pair, got {type(batch).__name__}")


def validate_batch(
    batch: Dataset | Sequence[np.ndarray],
    schema: Schema,
    cfg: ValidationConfig,
    batch_id: str,
    source: str | None = None,
    labels: str = "required",
    distribution: str = "fail",
) -> ValidationReport:
    """Check a batch against ``schema`` and report every violated rule (:mod:`tasks.data.rules`).

    ``batch`` is a :class:`Dataset` (e.g. from :func:`load_batch_from_uri`) or an ``(x, y)`` pair
    (``y`` may be None: then ``missing_label`` fires, unless ``labels="optional"``, which accepts a
    batch without labels). ``distribution="evidence"`` keeps the distribution rules' findings in
    ``report.evidence`` instead of failing the batch. Never raises for bad data: the report says
    what is wrong. ``source`` defaults to the dataset's ``meta["source"]`` or name.
    """
    if labels not in ("required", "optional"):
        raise ValueError(f"labels must be 'required' or 'optional', got {labels!r}")
    if distribution not in ("fail", "evidence"):
        raise ValueError(f"distribution must be 'fail' or 'evidence', got {distribution!r}")
    check_batch_id(batch_id)
    ds = _as_dataset(batch)
    unlabelled = bool(ds.meta.get(NO_LABELS)) and labels == "optional"
    source = source or ds.meta.get("source") or ds.name
    out = Collector(cfg.max_examples)
    stats: dict[str, Any] = {}
    n = len(ds)
    out.check(RULE_EMPTY_BATCH)
    if n == 0:
        out.add(RULE_EMPTY_BATCH, "the batch has no rows", 0, [])
    else:
        if not unlabelled:
            check_labels(np.asarray(ds.y), ds.meta, schema, out)
        f = align_structure(ds, schema, out)
        if f is not None:
            check_values(f, schema, cfg, out, stats)
    violations, evidence = out.violations, []
    if distribution == "evidence":
        evidence = [v for v in violations if v.rule in DISTRIBUTION_RULES]
        violations = [v for v in violations if v.rule not in DISTRIBUTION_RULES]
    return ValidationReport(
        batch_id=batch_id,
        source=str(source),
        rows=n,
        passed=not violations,
        violations=violations,
        rules_checked=out.checked,
        stats=stats,
        schema_fingerprint=schema.fingerprint,
        evidence=evidence,
        labelled=not unlabelled,
    )


def conform(ds: Dataset, schema: Schema) -> Dataset:
    """A batch that passed validation in the schema's form: float32, columns in schema order,
    int64 labels, samples reshaped to ``schema.sample_shape``."""
    x = ds.x
    if schema.feature_names is not None and ds.feature_names is not None:
        order = [list(ds.feature_names).index(c) for c in schema.feature_names]
        # No copy for columns already in schema order (as_float32 copies only what is not float32).
        x = x.reshape(len(ds), -1) if order == list(range(len(order))) else x.reshape(len(ds), -1)[:, order]
    y = np.asarray(ds.y)
    meta = dict(ds.meta)
    if meta.get(NO_LABELS):
        # An unlabelled batch (accepted with labels="optional"): -1 marks "no label", never a class.
        y, meta["labelled"] = np.full(len(ds), -1, dtype=np.int64), False
    elif y.dtype.kind != "i":
        y = y.astype(np.float64).astype(np.int64)
    out = Dataset(
        x=x,
        y=y.astype(np.int64),
        name=ds.name,
        feature_names=list(schema.feature_names) if schema.feature_names is not None else None,
        meta=meta,
    )
    return as_float32(out, schema.sample_shape)


@dataclass
class ValidatedBatch:
    """A batch that passed: conformed to the schema, with its report and raw bytes (if any)."""

    dataset: Dataset
    report: ValidationReport
    raw_bytes: bytes | None = None


def validate_or_quarantine(
    batch: Dataset | str,
    schema: Schema,
    cfg: ValidationConfig,
    store_cfg,
    batch_id: str | None = None,
    label_column: str = "label",
    raw_bytes: bytes | None = None,
    labels: str = "required",
    distribution: str = "fail",
    raw_uri: str | None = None,
) -> ValidatedBatch:
    """Validate a batch (a Dataset, or a path/URI read through the store); quarantine it on failure.

    On failure the raw bytes (for an in-memory Dataset without ``raw_bytes``: its npz encoding)
    and the report go to ``quarantine/<batch_id>/`` in the store of ``store_cfg``, and
    :class:`~tasks.errors.ValidationFailed` is raised naming the violated rules and the
    quarantine URI (``.report`` and ``.quarantine_uri`` carry both). ``raw_uri``: the file an
    in-memory Dataset was parsed from; its bytes are read (and quarantined byte for byte) only when
    the batch fails, so a passing file is never held in memory twice. With ``cfg.enabled`` False
    only the file is read and conformed. On success returns the batch conformed to the schema.
    A URI with ``raw_bytes`` given is not read again (the drift check reads each file once, safely).
    ``labels`` and ``distribution`` are passed to :func:`validate_batch`.
    """
    from tasks.store.backends import open_backend

    if batch_id is not None:
        check_batch_id(batch_id)
    ds: Dataset | None
    error: ValidationReport | None = None
    if isinstance(batch, str):
        if raw_bytes is not None:
            if batch_id is None:
                batch_id = batch_id_for(batch, raw_bytes)
            ds, _, error = parse_batch_bytes(raw_bytes, batch, label_column, batch_id)
        else:
            ds, raw_bytes, error = load_batch_from_uri(batch, store_cfg, label_column, batch_id)
        source = batch
        if error is not None:
            bid = batch_id or error.batch_id
        else:
            assert ds is not None  # parsed: a file that cannot be read or parsed gives its report instead
            bid = batch_id or ds.meta["batch_id"]
    else:
        ds = batch
        source = raw_uri or ds.meta.get("source") or ds.name
        bid = batch_id or batch_id_for(source, raw_bytes, ds)
    if error is not None:
        report = error
    else:
        assert ds is not None
        if not cfg.enabled:
            report = ValidationReport(
                batch_id=bid,
                source=source,
                rows=len(ds),
                passed=True,
                stats={"validation": "disabled"},
                schema_fingerprint=schema.fingerprint,
                labelled=not (ds.meta.get(NO_LABELS) and labels == "optional"),
            )
            return ValidatedBatch(conform(ds, schema), report, raw_bytes)
        report = validate_batch(ds, schema, cfg, bid, source, labels=labels, distribution=distribution)
        if report.passed:
            return ValidatedBatch(conform(ds, schema), report, raw_bytes)
    if raw_bytes is None and raw_uri is not None:
        from tasks.store.backends import read_uri

        raw_bytes, name = read_uri(raw_uri, store_cfg), raw_uri
    elif raw_bytes is None and ds is not None:
        raw_bytes, name = npz_for_quarantine(ds), f"{bid}.npz"
    else:
        name = source
    uri = quarantine(open_backend(store_cfg), bid, raw_bytes, name, report)
    report = report.model_copy(update={"quarantine": {"uri": uri}})
    raise ValidationFailed(
        f"batch {bid} from {source} failed validation: {', '.join(report.rules)}; quarantined at {uri}"
        + "".join(f"\n  {line}" for line in violation_details(report)),
        report=report,
        quarantine_uri=uri,
    )

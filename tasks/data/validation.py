"""Batch validation against an inferred :class:`~tasks.data.schema.Schema`, and quarantine.

In the spirit of TensorFlow Data Validation (Breck et al., SysML 2019): each batch is checked
against the schema of the training data and every violated rule is reported, with a count and a
few examples (row, feature, offending value), instead of stopping at the first problem. A batch
that fails is copied, byte for byte, with its report to ``quarantine/<batch_id>/`` in the artifact
store; nothing is dropped. A batch that cannot be read at all (missing file, missing bucket,
corrupt bytes) becomes a report too, so it can be quarantined like any other bad batch.

Rules (each a constant below) and when they apply:

- ``empty_batch``: no rows. Nothing else is checked.
- ``missing_label`` / ``unknown_label``: the label column is absent or a label is null; a label
  is not one of the training labels (or not an integer at all).
- ``shape_mismatch``: a per-sample shape other than the schema's (a flat batch with the same
  number of features is accepted and reshaped), or for tabular data a missing or new column.
- ``dtype_mismatch``: a non-numeric feature (e.g. strings in a csv column).
- ``non_finite``: NaN or +-inf (NaN is tolerated in a feature only where the training data had
  missing values too).
- ``out_of_range``: a value outside the training range widened by the tolerance
  (:meth:`ValidationConfig.tolerance_for`), per feature or overall (``range_scope``).
- ``duplicate_rows``: the share of rows repeating an earlier row above ``max_duplicate_fraction``.
- ``feature_shift``: the mean over features of |batch mean - training mean| / training std above
  ``max_mean_shift``, for batches of at least ``shift_min_rows`` rows.
- ``unreadable_file`` / ``missing_file``: the batch's file cannot be parsed / does not exist
  (nor its bucket).

The value rules (range, non-finite, duplicates, shift) run only when the structure (shape,
dtype) matches: they compare features one to one and would report noise otherwise.

Integrity is not drift. The rules fall in two classes (:data:`INTEGRITY_RULES`,
:data:`DISTRIBUTION_RULES`, :func:`rule_class`):

- *integrity* violations say the file is broken (unreadable, missing, empty, wrong shape, dtype
  or columns, NaN/inf, bad labels, duplicated rows, a name or file type the drift check refuses):
  such a batch is quarantined and gets no drift verdict;
- *distribution evidence* (``out_of_range``, ``feature_shift``) says the data moved away from the
  training data: that is what drift is, so with ``distribution="evidence"`` (the drift check,
  and batches added by retraining) these findings go to :attr:`ValidationReport.evidence`, are
  reported with the batch's drift verdict and can make it "drift", and never fail the batch.
  With the default ``distribution="fail"`` (``driftloop validate``, the training data) they fail it.

Unlabelled batches (an npz with only ``x``; a parquet/csv without the label column) are accepted
with ``labels="optional"`` (the drift check): the label rules then apply only where labels exist,
and :attr:`ValidationReport.labelled` is False.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import re
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import PurePosixPath
from typing import Any, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from tasks.data.config import ValidationConfig
from tasks.data.labels import label_value
from tasks.data.schema import Schema
from tasks.data.sources import Dataset, as_float32, fingerprint, parse_bytes, to_npz_bytes
from tasks.errors import DataError, ObjectNotFound, StoreError, ValidationFailed

RULE_EMPTY_BATCH = "empty_batch"
RULE_SHAPE_MISMATCH = "shape_mismatch"
RULE_DTYPE_MISMATCH = "dtype_mismatch"
RULE_NON_FINITE = "non_finite"
RULE_OUT_OF_RANGE = "out_of_range"
RULE_UNKNOWN_LABEL = "unknown_label"
RULE_MISSING_LABEL = "missing_label"
RULE_DUPLICATE_ROWS = "duplicate_rows"
RULE_FEATURE_SHIFT = "feature_shift"
RULE_UNREADABLE_FILE = "unreadable_file"
RULE_MISSING_FILE = "missing_file"
# Refusals of the drift check's batch discovery (tasks.drift.discovery): quarantined on their own.
RULE_BAD_BATCH_NAME = "bad_batch_name"
RULE_NOT_REGULAR_FILE = "not_regular_file"
RULE_BATCH_TOO_LARGE = "batch_too_large"

ALL_RULES = (
    RULE_EMPTY_BATCH, RULE_SHAPE_MISMATCH, RULE_DTYPE_MISMATCH, RULE_NON_FINITE, RULE_OUT_OF_RANGE,
    RULE_UNKNOWN_LABEL, RULE_MISSING_LABEL, RULE_DUPLICATE_ROWS, RULE_FEATURE_SHIFT,
    RULE_UNREADABLE_FILE, RULE_MISSING_FILE, RULE_BAD_BATCH_NAME, RULE_NOT_REGULAR_FILE, RULE_BATCH_TOO_LARGE,
)
# Distribution evidence: the data moved (drift), the file is not broken. Everything else is integrity.
DISTRIBUTION_RULES = frozenset({RULE_OUT_OF_RANGE, RULE_FEATURE_SHIFT})
INTEGRITY_RULES = frozenset(ALL_RULES) - DISTRIBUTION_RULES


def rule_class(rule: str) -> str:
    """``"distribution"`` for evidence of drift (range, shift), ``"integrity"`` for a broken batch."""
    if rule not in ALL_RULES:
        raise DataError(f"unknown validation rule {rule!r}; known: {', '.join(ALL_RULES)}")
    return "distribution" if rule in DISTRIBUTION_RULES else "integrity"

QUARANTINE_PREFIX = "quarantine"
REPORT_NAME = "report.json"
# Batch ids become one key segment in the store.
_BATCH_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
# A feature's shift is measured in units of max(std, this share of its training span), so that a
# feature lit in a handful of training images (std near 0) cannot dominate the average.
_STD_FLOOR_SHARE = 0.01
# Meta key set by the lenient reader when the label column is absent.
_NO_LABELS = "label_column_missing"


class Violation(BaseModel):
    """One violated rule: how many cells/rows/columns offend and up to ``max_examples`` of them."""

    model_config = ConfigDict(extra="forbid")

    rule: str
    message: str
    count: int
    examples: list[dict[str, Any]] = Field(default_factory=list)


class ValidationReport(BaseModel):
    """The outcome of validating one batch; ``passed`` is True exactly when nothing was violated."""

    model_config = ConfigDict(extra="forbid")

    batch_id: str
    source: str
    rows: int
    passed: bool
    violations: list[Violation] = Field(default_factory=list)
    rules_checked: list[str] = Field(default_factory=list)
    # Measured values behind the statistical rules (mean_shift, duplicate_fraction, ...).
    stats: dict[str, Any] = Field(default_factory=dict)
    schema_fingerprint: str | None = None
    checked_at: str = Field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    # Filled in by :func:`quarantine` in the copy it stores: where the batch went.
    quarantine: dict[str, Any] | None = None
    # Distribution findings kept as drift evidence (``distribution="evidence"``): they do not fail.
    evidence: list[Violation] = Field(default_factory=list)
    # False for a batch without labels accepted with ``labels="optional"``.
    labelled: bool = True

    @property
    def rules(self) -> list[str]:
        """Names of the violated rules, in the order they were found."""
        return [v.rule for v in self.violations]

    def get(self, rule: str) -> Violation | None:
        return next((v for v in self.violations if v.rule == rule), None)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls, text: str | bytes) -> "ValidationReport":
        try:
            return cls.model_validate_json(text)
        except Exception as e:
            raise DataError(f"not a valid driftloop validation report: {e}") from e

    def to_text(self) -> str:
        """A human-readable summary for the command line."""
        head = "PASSED" if self.passed else f"FAILED ({len(self.violations)} rule(s) violated)"
        lines = [f"batch {self.batch_id} from {self.source}: {self.rows} rows: {head}"]
        for v in self.violations:
            lines.append(f"  [{v.rule}] {v.message} (count {v.count})")
            for ex in v.examples:
                lines.append("      " + ", ".join(f"{k}={_short(val)}" for k, val in ex.items()))
        for v in self.evidence:
            lines.append(f"  [{v.rule}] (drift evidence) {v.message} (count {v.count})")
        if not self.labelled:
            lines.append("  unlabelled batch: label rules not applied")
        if self.stats:
            lines.append("  stats: " + ", ".join(f"{k}={_short(v)}" for k, v in self.stats.items()))
        if self.quarantine:
            lines.append(f"  quarantined at {self.quarantine.get('uri')}")
        return "\n".join(lines)


def _short(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    s = str(v)
    return s if len(s) <= 60 else s[:57] + "..."


def _jsonable(v: Any) -> Any:
    """Example values as JSON-safe Python values (NaN/inf as strings, numpy scalars unwrapped)."""
    if isinstance(v, (np.generic,)):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if isinstance(v, (bytes, bytearray)):
        return repr(bytes(v[:40]))
    if isinstance(v, (int, float, str, bool)) or v is None:
        return v
    return str(v)


# --------------------------------------------------------------------------------------------
# batch ids and reading a batch from a URI
# --------------------------------------------------------------------------------------------
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


def _read_frame(data: bytes, origin: str):
    import pandas as pd

    suffix = PurePosixPath(origin.split("?")[0]).suffix.lower()
    if suffix == ".parquet":
        return pd.read_parquet(io.BytesIO(data))
    return pd.read_csv(io.BytesIO(data))


def _parse_lenient(data: bytes, origin: str, label_column: str) -> Dataset:
    """Parse what :func:`parse_bytes` refused, keeping non-numeric features and absent or
    non-integer labels so validation can name the rule; raises when the bytes are unreadable."""
    suffix = PurePosixPath(origin.split("?")[0]).suffix.lower()
    if suffix == ".npz":
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            if "x" not in z.files:
                raise DataError(f"{origin}: npz has no array 'x' (has {z.files})")
            x = z["x"]
            y = z["y"] if "y" in z.files else None
        if x.ndim == 1:
            x = x[:, None]
        meta = {"source": origin}
        if y is None:
            y, meta[_NO_LABELS] = np.full(x.shape[0], np.nan), True
        if y.ndim != 1 or y.shape[0] != x.shape[0]:
            raise DataError(f"{origin}: x has shape {x.shape} and y {y.shape}; need x (n, ...) and y (n,)")
        return Dataset(x=x, y=y, name=origin, meta=meta)
    if suffix not in (".csv", ".parquet"):
        raise DataError(f"{origin}: unsupported file type {suffix or '(none)'!r}")
    df = _read_frame(data, origin)
    meta = {"source": origin}
    if label_column in df.columns:
        y = df[label_column].to_numpy()
        feats = [c for c in df.columns if c != label_column]
    else:
        y, meta[_NO_LABELS] = np.full(len(df), np.nan), True
        feats = list(df.columns)
    x = df[feats].to_numpy() if feats else np.zeros((len(df), 0))
    return Dataset(x=x, y=y, name=origin, feature_names=[str(c) for c in feats], meta=meta)


def read_report(batch_id: str, source: str, rule: str, message: str) -> ValidationReport:
    """A failed report for a batch that could not be read at all (``missing_file``, ``unreadable_file``)."""
    return ValidationReport(batch_id=batch_id, source=source, rows=0, passed=False,
                            violations=[Violation(rule=rule, message=message, count=1,
                                                  examples=[{"source": source}])],
                            rules_checked=[rule])


def load_batch_from_uri(uri: str, store_cfg, label_column: str = "label", batch_id: str | None = None
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


def parse_batch_bytes(raw: bytes, uri: str, label_column: str = "label", batch_id: str | None = None
                      ) -> tuple[Dataset | None, bytes, ValidationReport | None]:
    """Parse bytes already read from ``uri`` as :func:`load_batch_from_uri` does (same returns)."""
    bid = batch_id or batch_id_for(uri, raw)
    try:
        ds = parse_bytes(raw, uri, label_column)
    except DataError as strict_error:
        try:
            ds = _parse_lenient(raw, uri, label_column)
        except Exception:  # truly unreadable: report what the strict parser said
            return None, raw, read_report(bid, uri, RULE_UNREADABLE_FILE, str(strict_error))
    ds.meta.setdefault("source", uri)
    ds.meta["batch_id"] = bid
    return ds, raw, None


# --------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------
def _as_dataset(batch: Dataset | Sequence[np.ndarray], name: str = "batch") -> Dataset:
    if isinstance(batch, Dataset):
        return batch
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        x, y = np.asarray(batch[0]), batch[1]
        if y is None:
            return Dataset(x=x, y=np.full(x.shape[0] if x.ndim else 0, np.nan), name=name, meta={_NO_LABELS: True})
        return Dataset(x=x, y=np.asarray(y), name=name)
    raise TypeError(f"validate_batch takes a Dataset or an (x, y) pair, got {type(batch).__name__}")


class _Collector:
    def __init__(self, max_examples: int):
        self.max_examples = max_examples
        self.violations: list[Violation] = []
        self.checked: list[str] = []

    def check(self, rule: str) -> None:
        if rule not in self.checked:
            self.checked.append(rule)

    def add(self, rule: str, message: str, count: int, examples: list[dict[str, Any]]) -> None:
        self.check(rule)
        ex = [{k: _jsonable(v) for k, v in e.items()} for e in examples[: self.max_examples]]
        self.violations.append(Violation(rule=rule, message=message, count=int(count), examples=ex))


def _check_labels(y: np.ndarray, meta: dict, schema: Schema, out: _Collector) -> None:
    out.check(RULE_MISSING_LABEL)
    out.check(RULE_UNKNOWN_LABEL)
    n = y.shape[0]
    if meta.get(_NO_LABELS):
        out.add(RULE_MISSING_LABEL, "the batch has no labels (label column or array 'y' absent)", n,
                [{"row": i} for i in range(min(n, out.max_examples))])
        return
    y = np.asarray(y)
    if y.ndim != 1:
        out.add(RULE_MISSING_LABEL, f"labels must be one per row, got an array of shape {y.shape}", n, [])
        return
    allowed = np.array(schema.labels)
    if y.dtype.kind in "iu":
        missing = np.zeros(n, dtype=bool)
        unknown = ~np.isin(y, allowed)
    elif y.dtype.kind == "f":
        missing = np.isnan(y)
        with np.errstate(invalid="ignore"):
            unknown = ~missing & (~np.isfinite(y) | (y != np.round(y)) | ~np.isin(y, allowed))
    else:  # object / strings (a csv label column with text in it): None, NaN, "" count as missing;
        # numeric text ("3", read as text because another cell is not a number) is its number:
        # the label rule training applies too (tasks/data/labels.py).
        values = y.tolist()
        missing = np.array([v is None or (isinstance(v, (float, np.floating)) and math.isnan(v))
                            or (isinstance(v, str) and not v.strip()) for v in values], dtype=bool)
        allowed_set = set(schema.labels)
        unknown = np.array([not m and label_value(v) not in allowed_set for v, m in zip(values, missing)], dtype=bool)
    if missing.any():
        rows = np.flatnonzero(missing)
        out.add(RULE_MISSING_LABEL, f"{len(rows)} of {n} rows have no label", len(rows),
                [{"row": int(r)} for r in rows[: out.max_examples]])
    if unknown.any():
        rows = np.flatnonzero(unknown)
        seen = sorted({str(v) for v in y[rows[:1000]].tolist()})[:10]
        out.add(RULE_UNKNOWN_LABEL,
                f"{len(rows)} rows have labels outside the training labels {schema.labels}: {seen}",
                len(rows), [{"row": int(r), "label": y[r]} for r in rows[: out.max_examples]])


def _non_numeric_cells(x: np.ndarray, names: list[str]) -> tuple[np.ndarray | None, int, str, list[dict]]:
    """Convert a feature array of non-numeric dtype (object, text, bool) to float64 if it holds
    only numbers; else return (None, count of offending cells, what they are, examples).

    Text that does not parse as a number offends first; if all of it parses (numbers stored as
    text), every text cell offends: the column's type is still wrong.
    """
    n = x.shape[0]
    flat = x.reshape(n, -1)
    out = np.full(flat.shape, np.nan, dtype=np.float64)
    bad, text = [], []
    for j in range(flat.shape[1]):
        for i, v in enumerate(flat[:, j].tolist()):
            if v is None:
                continue  # a missing cell: reported by the non-finite rule as NaN
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                out[i, j] = v
                continue
            if isinstance(v, str):
                try:
                    out[i, j] = float(v)
                    text.append((i, j, v))
                    continue
                except ValueError:
                    pass
            bad.append((i, j, v))
    offending, what = (bad, "values are not numbers") if bad else (text, "numbers are stored as text")
    if not offending:
        return out, 0, "", []
    cols = sorted({j for _, j, _ in offending})
    what = f"{what} in feature(s) {[names[j] for j in cols[:10]]}" + (" ..." if len(cols) > 10 else "")
    # Examples from as many columns as possible: sort by row first.
    offending.sort(key=lambda t: (t[0], t[1]))
    examples = [{"row": i, "feature": names[j], "value": v} for i, j, v in offending[:50]]
    return None, len(offending), what, examples


def _align_structure(ds: Dataset, schema: Schema, out: _Collector) -> np.ndarray | None:
    """Check columns, shape and dtype; return the batch as (n, num_features) float64 in schema
    feature order, or None when the structure does not match."""
    out.check(RULE_SHAPE_MISMATCH)
    out.check(RULE_DTYPE_MISMATCH)
    n = len(ds)
    x = ds.x
    names = list(ds.feature_names) if ds.feature_names is not None else None
    if x.ndim == 1:
        x = x[:, None]

    if schema.feature_names is not None and names is not None:
        want, have = list(schema.feature_names), names
        missing = [c for c in want if c not in have]
        new = [c for c in have if c not in want]
        if missing or new:
            msg = []
            if missing:
                msg.append(f"missing column(s) {missing[:10]}")
            if new:
                msg.append(f"new column(s) {new[:10]}")
            out.add(RULE_SHAPE_MISMATCH, "columns differ from the schema: " + "; ".join(msg),
                    len(missing) + len(new),
                    [{"column": c, "problem": "missing"} for c in missing] + [{"column": c, "problem": "new"} for c in new])
            return None
        order = [have.index(c) for c in want]
        x = x.reshape(n, -1)[:, order]
    else:
        got_shape = list(x.shape[1:])
        got_features = int(np.prod(got_shape)) if got_shape else 1
        same = got_shape == schema.sample_shape
        # A flat batch (or flat schema) with the same number of features is the same data,
        # laid out as a table: accept it.
        flat_ok = got_features == schema.num_features and (len(got_shape) == 1 or len(schema.sample_shape) == 1)
        if not (same or flat_ok):
            out.add(RULE_SHAPE_MISMATCH,
                    f"samples have shape {tuple(got_shape)} ({got_features} features); the schema expects "
                    f"{tuple(schema.sample_shape)} ({schema.num_features} features)",
                    n, [{"expected": str(tuple(schema.sample_shape)), "got": str(tuple(got_shape))}])
            return None
        x = x.reshape(n, -1)

    feat_names = [f.name for f in schema.features]
    if x.dtype.kind == "f":
        # Floats are checked in their own dtype (float32 data compared with float64 bounds is
        # exact): a float64 copy of a large batch would double the memory validation needs.
        return x
    if x.dtype.kind in "iu":
        return x.astype(np.float64)
    converted, bad, what, examples = _non_numeric_cells(x, feat_names)
    if converted is None:
        out.add(RULE_DTYPE_MISMATCH, f"features must be numeric: {bad} {what} (dtype {x.dtype})", bad, examples)
        return None
    return converted


def _check_values(f: np.ndarray, schema: Schema, cfg: ValidationConfig, out: _Collector, stats: dict) -> None:
    n, d = f.shape
    names = [s.name for s in schema.features]

    # Non-finite: inf always, NaN unless the training data had missing values in that feature.
    out.check(RULE_NON_FINITE)
    nan_ok = np.array([s.missing > 0 for s in schema.features], dtype=bool)
    # In-place boolean masks, one at a time: a million-row batch needs a quarter of its size per mask.
    bad = ~np.isfinite(f)
    any_non_finite = bool(bad.any())
    if any_non_finite and nan_ok.any():
        bad &= ~(np.isnan(f) & nan_ok[None, :])
    if any_non_finite and bad.any():
        cells = np.argwhere(bad)
        n_rows = int(bad.any(axis=1).sum())
        n_nan, n_inf = int((np.isnan(f) & bad).sum()), int(np.isinf(f).sum())
        out.add(RULE_NON_FINITE, f"{len(cells)} non-finite values ({n_nan} NaN, {n_inf} inf) in {n_rows} rows",
                len(cells), [{"row": int(r), "feature": names[c], "value": float(f[r, c])}
                             for r, c in cells[: cfg.max_examples]])

    # Range: per feature or overall, widened by the tolerance.
    out.check(RULE_OUT_OF_RANGE)
    scope = cfg.range_scope
    if scope == "auto":
        scope = "overall" if schema.is_image_like else "feature"
    tol = cfg.tolerance_for(scope)
    if scope == "overall":
        lo = np.full(d, schema.value_min - tol * schema.value_span)
        hi = np.full(d, schema.value_max + tol * schema.value_span)
    else:
        lo, hi = schema.feature_bounds(tol, cfg.tail_factor_for())
    with np.errstate(invalid="ignore"):
        # Features without a training range (all missing) are not range-checked.
        # NaN bounds (no training values) and NaN cells compare False: never out of range.
        oor = f < lo[None, :]
        oor |= f > hi[None, :]
        if any_non_finite:
            oor &= np.isfinite(f)
    if oor.any():
        cells = np.argwhere(oor)
        feats = sorted({names[c] for _, c in cells}, key=lambda s: (len(s), s))
        out.add(RULE_OUT_OF_RANGE,
                f"{len(cells)} values in {int(oor.any(axis=1).sum())} rows are outside the training range "
                f"({scope} scope, tolerance {tol:g} of the span); features {feats[:10]}",
                len(cells), [{"row": int(r), "feature": names[c], "value": float(f[r, c]),
                              "allowed_min": float(lo[c]), "allowed_max": float(hi[c])}
                             for r, c in cells[: cfg.max_examples]])

    # Duplicates: rows equal to an earlier row of the same batch, found by a 64-bit hash of each
    # row (tasks.data.splits.hash_rows; a collision is a 2^-64 event): sorting 8 bytes per row
    # instead of whole rows: about 40 bytes of temporaries per row, whatever its width.
    out.check(RULE_DUPLICATE_ROWS)
    from tasks.data.splits import hash_rows

    # A stable sort of the hashes puts each group of equal rows together, first occurrence first.
    h = hash_rows(f)
    order = np.argsort(h, kind="stable")
    h = h[order]
    repeat = np.empty(n, dtype=bool)
    repeat[0] = False
    np.equal(h[1:], h[:-1], out=repeat[1:])
    del h
    group_start = np.maximum.accumulate(np.where(repeat, 0, np.arange(n)))
    first_of = np.empty(n, dtype=np.int64)
    first_of[order] = order[group_start]
    del repeat, group_start, order
    dup_rows = np.flatnonzero(first_of != np.arange(n))
    frac = len(dup_rows) / n
    stats["duplicate_fraction"] = round(frac, 6)
    if frac > cfg.max_duplicate_fraction:
        out.add(RULE_DUPLICATE_ROWS,
                f"{len(dup_rows)} of {n} rows ({frac:.1%}) repeat an earlier row; at most "
                f"{cfg.max_duplicate_fraction:.1%} is tolerated",
                len(dup_rows), [{"row": int(r), "duplicate_of": int(first_of[r])} for r in dup_rows])

    # Gross shift of the feature means, in training-std units, averaged over features.
    if cfg.check_shift and n >= cfg.shift_min_rows:
        out.check(RULE_FEATURE_SHIFT)
        mean_t, std_t = schema.array("mean"), schema.array("std")
        span_t = schema.array("max") - schema.array("min")
        if schema.is_image_like:
            # A pixel constant in training (an edge never lit) still shares the images' value
            # domain: measure its shift against that domain instead of leaving it out (with the
            # hash splits of tasks/data/splits.py, which edge pixels stay constant moves with the
            # seed, and noise_0.3 detection in benchmarks/data_validation.py depended on it).
            span_t = np.where(span_t > 0, span_t, schema.value_span)
        # Constant training features have no scale to measure a shift in (range rules cover them).
        use = np.isfinite(mean_t) & np.isfinite(std_t) & (span_t > 0)
        if use.any():
            # An all-NaN column gives NaN (and numpy's "Mean of empty slice" warning): left out below.
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                if np.isfinite(f).all():  # the usual case: no copy of the batch
                    mean_b = f.mean(axis=0, dtype=np.float64)
                else:
                    mean_b = np.nanmean(np.where(np.isfinite(f), f, np.nan), axis=0)
                scale = np.maximum(std_t, _STD_FLOOR_SHARE * span_t)
                shift = np.abs(mean_b - mean_t) / scale
            use &= np.isfinite(shift)
            avg = float(shift[use].mean()) if use.any() else 0.0
            stats["mean_shift"] = round(avg, 6)
            if avg > cfg.max_mean_shift:
                order = [j for j in np.argsort(-np.where(use, shift, -1)) if use[j]]
                n_big = int((shift[use] > cfg.max_mean_shift).sum())
                out.add(RULE_FEATURE_SHIFT,
                        f"feature means moved by {avg:.2f} training standard deviations on average "
                        f"(limit {cfg.max_mean_shift:g}); {n_big} features moved by more than the limit",
                        n_big, [{"feature": names[j], "batch_mean": float(mean_b[j]), "train_mean": float(mean_t[j]),
                                 "train_std": float(std_t[j]), "shift": float(shift[j])} for j in order])


def validate_batch(batch: Dataset | Sequence[np.ndarray], schema: Schema, cfg: ValidationConfig,
                   batch_id: str, source: str | None = None, labels: str = "required",
                   distribution: str = "fail") -> ValidationReport:
    """Check a batch against ``schema`` and report every violated rule (see the module docstring).

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
    unlabelled = bool(ds.meta.get(_NO_LABELS)) and labels == "optional"
    source = source or ds.meta.get("source") or ds.name
    out = _Collector(cfg.max_examples)
    stats: dict[str, Any] = {}
    n = len(ds)
    out.check(RULE_EMPTY_BATCH)
    if n == 0:
        out.add(RULE_EMPTY_BATCH, "the batch has no rows", 0, [])
    else:
        if not unlabelled:
            _check_labels(np.asarray(ds.y), ds.meta, schema, out)
        f = _align_structure(ds, schema, out)
        if f is not None:
            _check_values(f, schema, cfg, out, stats)
    violations, evidence = out.violations, []
    if distribution == "evidence":
        evidence = [v for v in violations if v.rule in DISTRIBUTION_RULES]
        violations = [v for v in violations if v.rule not in DISTRIBUTION_RULES]
    return ValidationReport(batch_id=batch_id, source=str(source), rows=n, passed=not violations,
                            violations=violations, rules_checked=out.checked, stats=stats,
                            schema_fingerprint=schema.fingerprint, evidence=evidence, labelled=not unlabelled)


def conform(ds: Dataset, schema: Schema) -> Dataset:
    """A batch that passed validation in the schema's form: float32, columns in schema order,
    int64 labels, samples reshaped to ``schema.sample_shape``."""
    x = ds.x
    if schema.feature_names is not None and ds.feature_names is not None:
        order = [list(ds.feature_names).index(c) for c in schema.feature_names]
        x = x.reshape(len(ds), -1)[:, order]
    y = np.asarray(ds.y)
    meta = dict(ds.meta)
    if meta.get(_NO_LABELS):
        # An unlabelled batch (accepted with labels="optional"): -1 marks "no label", never a class.
        y, meta["labelled"] = np.full(len(ds), -1, dtype=np.int64), False
    elif y.dtype.kind != "i":
        y = y.astype(np.float64).astype(np.int64)
    out = Dataset(x=x, y=y.astype(np.int64), name=ds.name,
                  feature_names=list(schema.feature_names) if schema.feature_names is not None else None,
                  meta=meta)
    return as_float32(out, schema.sample_shape)


# --------------------------------------------------------------------------------------------
# quarantine
# --------------------------------------------------------------------------------------------
def _raw_name(source_name: str | None) -> str:
    base = PurePosixPath((source_name or "").split("?")[0].rstrip("/")).name
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", base).lstrip(".") or "batch.bin"
    return "batch-" + base if base == REPORT_NAME else base


def quarantine(backend, batch_id: str, raw_bytes: bytes | None, source_name: str | None,
               report: ValidationReport) -> str:
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
                same = (prior.get("quarantine") or {}).get("raw_sha256") == sha and \
                    (prior.get("quarantine") or {}).get("source") == source_name
            except (ValueError, StoreError):
                same = False
            if same:
                return (prior.get("quarantine") or {}).get("uri") or backend.url(prefix)
            continue
        if backend.list(prefix + "/"):
            # Raw bytes without a report: an earlier attempt died in between; complete it if it
            # was the same batch, else leave it alone and use the next id.
            if raw_bytes is None or not backend.exists(f"{prefix}/{name}") or \
                    hashlib.sha256(backend.get_bytes(f"{prefix}/{name}")).hexdigest() != sha:
                continue
        uri = backend.url(prefix)
        info = {"uri": uri, "batch_id": qid, "source": source_name,
                "raw_key": f"{prefix}/{name}" if raw_bytes is not None else None,
                "raw_sha256": sha, "raw_bytes": len(raw_bytes) if raw_bytes is not None else None,
                "quarantined_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        if raw_bytes is not None:
            backend.put_bytes(f"{prefix}/{name}", raw_bytes)
        stored = report.model_copy(update={"quarantine": info})
        backend.put_bytes(f"{prefix}/{REPORT_NAME}", stored.to_json().encode())
        return uri
    raise StoreError(f"quarantine: 1000 entries already use batch id {batch_id!r}")


def _npz_for_quarantine(ds: Dataset) -> bytes:
    """An in-memory batch as npz bytes; object arrays are stored as text, never pickled."""
    x, y = np.asarray(ds.x), np.asarray(ds.y)
    x = x.astype(str) if x.dtype == object else x
    y = y.astype(str) if y.dtype == object else y
    return to_npz_bytes(Dataset(x=x, y=y, name=ds.name))


@dataclass
class ValidatedBatch:
    """A batch that passed: conformed to the schema, with its report and raw bytes (if any)."""

    dataset: Dataset
    report: ValidationReport
    raw_bytes: bytes | None = None


def validate_or_quarantine(batch: Dataset | str, schema: Schema, cfg: ValidationConfig, store_cfg,
                           batch_id: str | None = None, label_column: str = "label",
                           raw_bytes: bytes | None = None, labels: str = "required",
                           distribution: str = "fail", raw_uri: str | None = None) -> ValidatedBatch:
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
    if isinstance(batch, str):
        if raw_bytes is not None:
            if batch_id is None:
                batch_id = batch_id_for(batch, raw_bytes)
            ds, raw, error = parse_batch_bytes(raw_bytes, batch, label_column, batch_id)
        else:
            ds, raw, error = load_batch_from_uri(batch, store_cfg, label_column, batch_id)
        source = batch
        raw_bytes = raw
        bid = batch_id or (ds.meta["batch_id"] if ds is not None else error.batch_id)
    else:
        ds, error = batch, None
        source = raw_uri or ds.meta.get("source") or ds.name
        bid = batch_id or batch_id_for(source, raw_bytes, ds)
    if error is None and not cfg.enabled:
        report = ValidationReport(batch_id=bid, source=source, rows=len(ds), passed=True,
                                  stats={"validation": "disabled"}, schema_fingerprint=schema.fingerprint,
                                  labelled=not (ds.meta.get(_NO_LABELS) and labels == "optional"))
        return ValidatedBatch(conform(ds, schema), report, raw_bytes)
    report = error or validate_batch(ds, schema, cfg, bid, source, labels=labels, distribution=distribution)
    if report.passed:
        return ValidatedBatch(conform(ds, schema), report, raw_bytes)
    if raw_bytes is None and raw_uri is not None:
        from tasks.store.backends import read_uri

        raw_bytes, name = read_uri(raw_uri, store_cfg), raw_uri
    elif raw_bytes is None and ds is not None:
        raw_bytes, name = _npz_for_quarantine(ds), f"{bid}.npz"
    else:
        name = source
    uri = quarantine(open_backend(store_cfg), bid, raw_bytes, name, report)
    report = report.model_copy(update={"quarantine": {"uri": uri}})
    raise ValidationFailed(
        f"batch {bid} from {source} failed validation: {', '.join(report.rules)}; quarantined at {uri}"
        + "".join(f"\n  {line}" for line in violation_details(report)),
        report=report, quarantine_uri=uri)


def violation_details(report: ValidationReport, per_rule: int = 3) -> list[str]:
    """One line per violated rule naming the features and values that broke it (from the
    report's examples), e.g. ``out_of_range: row 3 feature 'age' = 200 (allowed 18..162)``."""
    lines = []
    for v in report.violations:
        parts = []
        for ex in v.examples[:per_rule]:
            if "feature" in ex and "value" in ex:
                where = f"row {ex['row']} " if "row" in ex else ""
                allowed = (f" (allowed {_short(ex['allowed_min'])}..{_short(ex['allowed_max'])})"
                           if "allowed_min" in ex else "")
                parts.append(f"{where}feature {ex['feature']!r} = {_short(ex['value'])}{allowed}")
            elif "feature" in ex and "shift" in ex:
                parts.append(f"feature {ex['feature']!r} mean {_short(ex['batch_mean'])} vs training "
                             f"{_short(ex['train_mean'])} ({_short(ex['shift'])} std)")
            elif ex:
                parts.append(", ".join(f"{k}={_short(val)}" for k, val in ex.items()))
        more = f" and {v.count - len(parts)} more" if v.count > len(parts) and parts else ""
        lines.append(f"{v.rule}: {'; '.join(parts) or v.message}{more}")
    return lines

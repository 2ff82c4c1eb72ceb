"""The validation rules: what each checks, and the checks themselves.

In the spirit of TensorFlow Data Validation (Breck et al., SysML 2019): every violated rule is
reported, with a count and a few examples (row, feature, offending value), instead of stopping at
the first problem. :func:`tasks.data.validation.validate_batch` runs the checks below in order.

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

Over 400 lines (``ruff format`` layout): every validation rule, its documentation and its check,
side by side on purpose.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

from tasks.data.config import ValidationConfig
from tasks.data.dataset import Dataset
from tasks.data.labels import label_value
from tasks.data.report import Violation, jsonable
from tasks.data.schema import Schema
from tasks.data.sources import NO_LABELS
from tasks.errors import DataError

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
    RULE_EMPTY_BATCH,
    RULE_SHAPE_MISMATCH,
    RULE_DTYPE_MISMATCH,
    RULE_NON_FINITE,
    RULE_OUT_OF_RANGE,
    RULE_UNKNOWN_LABEL,
    RULE_MISSING_LABEL,
    RULE_DUPLICATE_ROWS,
    RULE_FEATURE_SHIFT,
    RULE_UNREADABLE_FILE,
    RULE_MISSING_FILE,
    RULE_BAD_BATCH_NAME,
    RULE_NOT_REGULAR_FILE,
    RULE_BATCH_TOO_LARGE,
)
# Distribution evidence: the data moved (drift), the file is not broken. Everything else is integrity.
DISTRIBUTION_RULES = frozenset({RULE_OUT_OF_RANGE, RULE_FEATURE_SHIFT})
INTEGRITY_RULES = frozenset(ALL_RULES) - DISTRIBUTION_RULES


def rule_class(rule: str) -> str:
    """``"distribution"`` for evidence of drift (range, shift), ``"integrity"`` for a broken batch."""
    if rule not in ALL_RULES:
        raise DataError(f"unknown validation rule {rule!r}; known: {', '.join(ALL_RULES)}")
    return "distribution" if rule in DISTRIBUTION_RULES else "integrity"


# A feature's shift is measured in units of max(std, this share of its training span), so that a
# feature lit in a handful of training images (std near 0) cannot dominate the average.
_STD_FLOOR_SHARE = 0.01


class Collector:
    """The violations found so far and the rules checked, in order (examples capped, JSON-safe)."""

    def __init__(self, max_examples: int):
        self.max_examples = max_examples
        self.violations: list[Violation] = []
        self.checked: list[str] = []

    def check(self, rule: str) -> None:
        if rule not in self.checked:
            self.checked.append(rule)

    def add(self, rule: str, message: str, count: int, examples: list[dict[str, Any]]) -> None:
        self.check(rule)
        ex = [{k: jsonable(v) for k, v in e.items()} for e in examples[: self.max_examples]]
        self.violations.append(Violation(rule=rule, message=message, count=int(count), examples=ex))


def check_labels(y: np.ndarray, meta: dict, schema: Schema, out: Collector) -> None:
    out.check(RULE_MISSING_LABEL)
    out.check(RULE_UNKNOWN_LABEL)
    n = y.shape[0]
    if meta.get(NO_LABELS):
        out.add(
            RULE_MISSING_LABEL,
            "the batch has no labels (label column or array 'y' absent)",
            n,
            [{"row": i} for i in range(min(n, out.max_examples))],
        )
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
        missing = np.array(
            [
                v is None
                or (isinstance(v, (float, np.floating)) and math.isnan(v))
                or (isinstance(v, str) and not v.strip())
                for v in values
            ],
            dtype=bool,
        )
        allowed_set = set(schema.labels)
        unknown = np.array([not m and label_value(v) not in allowed_set for v, m in zip(values, missing)], dtype=bool)
    if missing.any():
        rows = np.flatnonzero(missing)
        out.add(
            RULE_MISSING_LABEL,
            f"{len(rows)} of {n} rows have no label",
            len(rows),
            [{"row": int(r)} for r in rows[: out.max_examples]],
        )
    if unknown.any():
        rows = np.flatnonzero(unknown)
        seen = sorted({str(v) for v in y[rows[:1000]].tolist()})[:10]
        out.add(
            RULE_UNKNOWN_LABEL,
            f"{len(rows)} rows have labels outside the training labels {schema.labels}: {seen}",
            len(rows),
            [{"row": int(r), "label": y[r]} for r in rows[: out.max_examples]],
        )


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


def align_structure(ds: Dataset, schema: Schema, out: Collector) -> np.ndarray | None:
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
            out.add(
                RULE_SHAPE_MISMATCH,
                "columns differ from the schema: " + "; ".join(msg),
                len(missing) + len(new),
                [{"column": c, "problem": "missing"} for c in missing] + [{"column": c, "problem": "new"} for c in new],
            )
            return None
        order = [have.index(c) for c in want]
        # Columns already in schema order (the usual case) are used as they are: x[:, order]
        # would copy the whole batch.
        x = x.reshape(n, -1) if order == list(range(len(order))) else x.reshape(n, -1)[:, order]
    else:
        got_shape = list(x.shape[1:])
        got_features = int(np.prod(got_shape)) if got_shape else 1
        same = got_shape == schema.sample_shape
        # A flat batch (or flat schema) with the same number of features is the same data,
        # laid out as a table: accept it.
        flat_ok = got_features == schema.num_features and (len(got_shape) == 1 or len(schema.sample_shape) == 1)
        if not (same or flat_ok):
            out.add(
                RULE_SHAPE_MISMATCH,
                f"samples have shape {tuple(got_shape)} ({got_features} features); the schema expects "
                f"{tuple(schema.sample_shape)} ({schema.num_features} features)",
                n,
                [{"expected": str(tuple(schema.sample_shape)), "got": str(tuple(got_shape))}],
            )
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


def check_values(f: np.ndarray, schema: Schema, cfg: ValidationConfig, out: Collector, stats: dict) -> None:
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
        out.add(
            RULE_NON_FINITE,
            f"{len(cells)} non-finite values ({n_nan} NaN, {n_inf} inf) in {n_rows} rows",
            len(cells),
            [{"row": int(r), "feature": names[c], "value": float(f[r, c])} for r, c in cells[: cfg.max_examples]],
        )

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
        out.add(
            RULE_OUT_OF_RANGE,
            f"{len(cells)} values in {int(oor.any(axis=1).sum())} rows are outside the training range "
            f"({scope} scope, tolerance {tol:g} of the span); features {feats[:10]}",
            len(cells),
            [
                {
                    "row": int(r),
                    "feature": names[c],
                    "value": float(f[r, c]),
                    "allowed_min": float(lo[c]),
                    "allowed_max": float(hi[c]),
                }
                for r, c in cells[: cfg.max_examples]
            ],
        )

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
        out.add(
            RULE_DUPLICATE_ROWS,
            f"{len(dup_rows)} of {n} rows ({frac:.1%}) repeat an earlier row; at most "
            f"{cfg.max_duplicate_fraction:.1%} is tolerated",
            len(dup_rows),
            [{"row": int(r), "duplicate_of": int(first_of[r])} for r in dup_rows],
        )

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
                ranked = [j for j in np.argsort(-np.where(use, shift, -1)) if use[j]]
                n_big = int((shift[use] > cfg.max_mean_shift).sum())
                out.add(
                    RULE_FEATURE_SHIFT,
                    f"feature means moved by {avg:.2f} training standard deviations on average "
                    f"(limit {cfg.max_mean_shift:g}); {n_big} features moved by more than the limit",
                    n_big,
                    [
                        {
                            "feature": names[j],
                            "batch_mean": float(mean_b[j]),
                            "train_mean": float(mean_t[j]),
                            "train_std": float(std_t[j]),
                            "shift": float(shift[j]),
                        }
                        for j in ranked
                    ],
                )

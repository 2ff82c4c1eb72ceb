"""The one label rule, shared by training (:mod:`tasks.data.sources`, :mod:`tasks.data.steps`) and
validation (:mod:`tasks.data.validation`), so ``driftloop validate`` never passes a batch that
training then refuses.

* **Type**: a label is an integer, a float holding a finite whole number (a csv/parquet column with
  integer values read as floats), or text spelling one (``"3"``: a csv has no types, and one stray
  cell turns a whole column into text). Other text (``"cat"``), booleans and objects are refused,
  by validation (``unknown_label``) and by training (DataError) alike.
* **Set**: labels are class indices ``0..K-1``. Without ``data.classes`` the set must be contiguous
  from 0 (labels ``{99}`` alone would otherwise build a 100-class model); with ``data.classes``
  every label must be one of the declared classes. Negative labels are always refused.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from tasks.errors import DataError


def label_value(v: Any) -> int | None:
    """The class index one label value stands for under the type rule, or None when it is not a label."""
    if isinstance(v, (bool, np.bool_)):
        return None
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return int(v) if math.isfinite(v) and float(v) == int(v) else None
    if isinstance(v, (str, np.str_)):
        try:
            return label_value(float(v.strip())) if v.strip() else None
        except ValueError:
            return None
    return None


def integer_labels(y: np.ndarray, origin: str) -> np.ndarray:
    """``y`` as int64 labels under the type rule; DataError naming ``origin`` and an offending value."""
    y = np.asarray(y)
    if y.dtype.kind in "iu":
        return y.astype(np.int64)
    if y.dtype.kind == "f":
        with np.errstate(invalid="ignore"):
            bad = ~np.isfinite(y) | (y != np.round(y))
    else:  # text or objects: each value must spell a whole number
        values = [label_value(v) for v in y.tolist()]
        bad = np.array([v is None for v in values], dtype=bool)
        if not bad.any():
            return np.array(values, dtype=np.int64)
    if bad.any():
        r = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{origin}: labels must be integers; row {r} holds {y.tolist()[r]!r} "
            f"({int(bad.sum())} such rows; validation reports them as unknown_label)"
        )
    return y.astype(np.int64)


def check_label_set(y: np.ndarray, origin: str, classes: Sequence[int] | None = None) -> list[int]:
    """The sorted label set of ``y`` after the set rule (module docstring); DataError naming ``origin``."""
    y = integer_labels(y, origin)
    if len(y) == 0:
        raise DataError(f"{origin}: no labels")
    neg = np.flatnonzero(y < 0)
    if len(neg):
        raise DataError(
            f"{origin}: labels must be class indices >= 0; row {int(neg[0])} has label {int(y[neg[0]])} "
            f"({len(neg)} negative labels)"
        )
    labels = sorted(int(v) for v in np.unique(y))
    if classes is not None:
        unknown = sorted(set(labels) - set(int(c) for c in classes))
        if unknown:
            raise DataError(
                f"{origin}: labels {unknown[:10]} are not among the declared classes data.classes={list(classes)}"
            )
        return labels
    missing = sorted(set(range(labels[-1] + 1)) - set(labels))
    if missing:
        shown = f"{missing[:10]}{' ...' if len(missing) > 10 else ''}"
        raise DataError(
            f"{origin}: labels {labels[:10]}{' ...' if len(labels) > 10 else ''} are not the contiguous "
            f"set 0..{labels[-1]} (missing {shown}, {len(missing)} classes); a model would get "
            f"{labels[-1] + 1} outputs. Relabel to 0..K-1, or declare the label set with data.classes"
        )
    return labels

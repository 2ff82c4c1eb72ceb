"""The one label rule, shared by training (:mod:`tasks.data.sources`, :mod:`tasks.data.steps`) and
validation (:mod:`tasks.data.validation`), so ``driftloop validate`` never passes a batch that
training then refuses.

* **Type**: a label is an integer, or a float holding a finite whole number (a csv/parquet column
  with integer values read as floats). Text (even ``"3"``), booleans and other objects are refused.
* **Set**: labels are class indices ``0..K-1``. Without ``data.classes`` the set must be contiguous
  from 0 (labels ``{99}`` alone would otherwise build a 100-class model); with ``data.classes``
  every label must be one of the declared classes. Negative labels are always refused.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from tasks.errors import DataError


def is_label_value(v: Any) -> bool:
    """True when one label value passes the type rule (an int or a finite whole float; not text or bool)."""
    if isinstance(v, (bool, np.bool_)):
        return False
    if isinstance(v, (int, np.integer)):
        return True
    if isinstance(v, (float, np.floating)):
        return math.isfinite(v) and float(v) == int(v)
    return False


def integer_labels(y: np.ndarray, origin: str) -> np.ndarray:
    """``y`` as int64 labels under the type rule; DataError naming ``origin`` and an offending value."""
    y = np.asarray(y)
    if y.dtype.kind in "iu":
        return y.astype(np.int64)
    if y.dtype.kind == "f":
        with np.errstate(invalid="ignore"):
            bad = ~np.isfinite(y) | (y != np.round(y))
    else:  # text, bytes, booleans, objects: refused even when they spell a number
        bad = np.array([not is_label_value(v) for v in y.tolist()], dtype=bool)
    if bad.any():
        r = int(np.flatnonzero(bad)[0])
        kind = "text" if y.dtype.kind in "USO" and isinstance(y.tolist()[r], (str, bytes)) else str(y.dtype)
        raise DataError(f"{origin}: labels must be integers; row {r} holds {y.tolist()[r]!r} ({kind}; "
                        f"{int(bad.sum())} such rows). Store labels as integers (text labels are refused "
                        "by training and by validation alike)")
    return y.astype(np.int64)


def check_label_set(y: np.ndarray, origin: str, classes: Sequence[int] | None = None) -> list[int]:
    """The sorted label set of ``y`` after the set rule (module docstring); DataError naming ``origin``."""
    y = integer_labels(y, origin)
    if len(y) == 0:
        raise DataError(f"{origin}: no labels")
    neg = np.flatnonzero(y < 0)
    if len(neg):
        raise DataError(f"{origin}: labels must be class indices >= 0; row {int(neg[0])} has label {int(y[neg[0]])} "
                        f"({len(neg)} negative labels)")
    labels = sorted(int(v) for v in np.unique(y))
    if classes is not None:
        unknown = sorted(set(labels) - set(int(c) for c in classes))
        if unknown:
            raise DataError(f"{origin}: labels {unknown[:10]} are not among the declared classes "
                            f"data.classes={list(classes)}")
        return labels
    missing = sorted(set(range(labels[-1] + 1)) - set(labels))
    if missing:
        shown = f"{missing[:10]}{' ...' if len(missing) > 10 else ''}"
        raise DataError(f"{origin}: labels {labels[:10]}{' ...' if len(labels) > 10 else ''} are not the contiguous "
                        f"set 0..{labels[-1]} (missing {shown}, {len(missing)} classes); a model would get "
                        f"{labels[-1] + 1} outputs. Relabel to 0..K-1, or declare the label set with data.classes")
    return labels

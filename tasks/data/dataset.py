"""The in-memory data every concern passes around: a :class:`Dataset` (features ``x``, labels ``y``),
the :class:`Splits` of one, and :func:`fingerprint`, a dataset's content id. Loading and parsing
are in :mod:`tasks.data.sources`, image folders in :mod:`tasks.data.images`, splitting in
:mod:`tasks.data.splits`; each builds on this module.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Dataset:
    x: np.ndarray
    y: np.ndarray
    name: str = "dataset"
    feature_names: list[str] | None = None
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.x.shape[1:])

    @property
    def num_features(self) -> int:
        return int(np.prod(self.sample_shape)) if self.sample_shape else 1

    def subset(self, idx: np.ndarray, name: str | None = None) -> "Dataset":
        return Dataset(self.x[idx], self.y[idx], name or self.name, self.feature_names, dict(self.meta))


@dataclass
class Splits:
    train: Dataset
    val: Dataset
    test: Dataset
    # Row ids of each split (tasks.data.splits.SplitIds), when split by hash.
    ids: object | None = None


def fingerprint(ds: Dataset) -> str:
    """sha256 over dtype, shape and bytes of ``x`` and ``y``: the same data gives the same id."""
    h = hashlib.sha256()
    for a in (ds.x, ds.y):
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        # The array's own buffer, not a.tobytes(): no copy of the data (the same bytes, the same digest).
        h.update(memoryview(a.reshape(-1)).cast("B") if a.size else b"")  # type: ignore[arg-type]  # ndarray is a buffer
    return h.hexdigest()

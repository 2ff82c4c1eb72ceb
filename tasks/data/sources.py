"""Datasets: the bundled digits set and user files (npz, parquet, csv) on disk or in S3.

A :class:`Dataset` holds float32 features ``x`` of shape ``(n, *sample_shape)`` and int64 labels
``y``. Splits are deterministic in the seed; :func:`fingerprint` identifies the exact bytes.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from tasks.data.labels import integer_labels
from tasks.errors import DataError

SUPPORTED_SUFFIXES = (".npz", ".parquet", ".csv")


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


def load_digits_dataset() -> Dataset:
    """scikit-learn's bundled 8x8 digits (1797 images, no download), scaled to [0, 1], shape (n, 1, 8, 8)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images.astype(np.float32) / 16.0)[:, None, :, :]
    return Dataset(x=x, y=d.target.astype(np.int64), name="digits", meta={"value_range": [0.0, 1.0]})


def _from_frame(df, label_column: str, origin: str) -> Dataset:
    if label_column not in df.columns:
        raise DataError(f"{origin}: label column {label_column!r} not found (columns: {list(df.columns)[:10]})")
    feats = [c for c in df.columns if c != label_column]
    if not feats:
        raise DataError(f"{origin}: no feature columns besides the label {label_column!r}")
    non_numeric = [c for c in feats if not np.issubdtype(df[c].dtype, np.number)]
    if non_numeric:
        raise DataError(f"{origin}: feature columns must be numeric, these are not: {non_numeric[:5]}")
    y = integer_labels(df[label_column].to_numpy(), f"{origin}: label column {label_column!r}")
    x = df[feats].to_numpy()
    return Dataset(x=x, y=y.astype(np.int64), name=origin, feature_names=[str(c) for c in feats])


def parse_bytes(data: bytes, origin: str, label_column: str = "label") -> Dataset:
    """Parse the bytes of an .npz / .parquet / .csv file named ``origin`` into a Dataset.

    Features keep their stored dtype here (validation checks it); :func:`as_float32` converts.
    """
    suffix = Path(origin.split("?")[0]).suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise DataError(f"{origin}: unsupported file type {suffix or '(none)'!r}; use {', '.join(SUPPORTED_SUFFIXES)}")
    if not data:
        raise DataError(f"{origin}: the file is empty")
    try:
        if suffix == ".npz":
            # allow_pickle=False: an npz holding object arrays is refused, never unpickled.
            with np.load(io.BytesIO(data), allow_pickle=False) as z:
                missing = [k for k in ("x", "y") if k not in z.files]
                if missing:
                    raise DataError(f"{origin}: npz must hold arrays 'x' and 'y'; missing {missing} (has {z.files})")
                x, y = z["x"], z["y"]
            if x.ndim < 1 or y.ndim != 1 or x.shape[0] != y.shape[0]:
                raise DataError(f"{origin}: x has shape {x.shape} and y {y.shape}; need x (n, ...) and y (n,)")
            y = integer_labels(y, f"{origin}: array 'y'")
            if x.ndim == 1:
                x = x[:, None]
            return Dataset(x=x, y=y.astype(np.int64), name=origin)
        import pandas as pd

        if suffix == ".parquet":
            df = pd.read_parquet(io.BytesIO(data))
        else:
            df = pd.read_csv(io.BytesIO(data))
        return _from_frame(df, label_column, origin)
    except DataError:
        raise
    except Exception as e:  # a truncated or corrupt file: name it and say what the parser said
        raise DataError(f"{origin}: cannot be read as {suffix[1:]}: {type(e).__name__}: {e}") from e


def as_float32(ds: Dataset, sample_shape: list[int] | None = None) -> Dataset:
    """Features as float32, optionally reshaped to ``sample_shape`` per sample."""
    x = ds.x
    if not np.issubdtype(x.dtype, np.number):
        raise DataError(f"{ds.name}: features must be numeric, got dtype {x.dtype}")
    x = x.astype(np.float32, copy=False)
    if sample_shape:
        want = int(np.prod(sample_shape))
        if int(np.prod(x.shape[1:])) != want:
            raise DataError(f"{ds.name}: samples of shape {x.shape[1:]} cannot be reshaped to {sample_shape}")
        x = x.reshape((x.shape[0], *sample_shape))
    return Dataset(x, ds.y, ds.name, ds.feature_names, dict(ds.meta))


def load_dataset(source: str, read_bytes: Callable[[str], bytes], label_column: str = "label",
                 sample_shape: list[int] | None = None) -> Dataset:
    """Load ``source``: ``"digits"`` or a file path/URI whose bytes ``read_bytes`` returns.

    ``read_bytes`` is the store's URI reader (local paths, ``file://`` and ``s3://``); it raises
    an error naming the file or bucket when it is missing.
    """
    if source == "digits":
        return load_digits_dataset()
    ds = parse_bytes(read_bytes(source), source, label_column)
    return as_float32(ds, sample_shape)


def split_dataset(ds: Dataset, seed: int, val_fraction: float, test_fraction: float,
                  max_train_samples: int | None = None) -> Splits:
    """Stratified, seed-deterministic train/validation/test split."""
    from sklearn.model_selection import train_test_split

    n = len(ds)
    if n < 10:
        raise DataError(f"{ds.name}: {n} samples are too few to split into train/validation/test")
    idx = np.arange(n)
    counts = np.bincount(ds.y)
    strat = ds.y if counts[counts > 0].min() >= 3 else None
    rest, test = train_test_split(idx, test_size=test_fraction, random_state=seed % (2**32), stratify=strat)
    strat_rest = ds.y[rest] if strat is not None else None
    train, val = train_test_split(rest, test_size=val_fraction / (1 - test_fraction),
                                  random_state=(seed + 1) % (2**32), stratify=strat_rest)
    train = np.sort(train)
    if max_train_samples is not None and len(train) > max_train_samples:
        train = np.sort(np.random.default_rng(seed).choice(train, max_train_samples, replace=False))
    return Splits(ds.subset(train, f"{ds.name}:train"), ds.subset(np.sort(val), f"{ds.name}:val"),
                  ds.subset(np.sort(test), f"{ds.name}:test"))


def fingerprint(ds: Dataset) -> str:
    """sha256 over dtype, shape and bytes of ``x`` and ``y``: the same data gives the same id."""
    h = hashlib.sha256()
    for a in (ds.x, ds.y):
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def to_npz_bytes(ds: Dataset) -> bytes:
    """The dataset as npz bytes (arrays ``x``, ``y``): how batches and references are stored."""
    buf = io.BytesIO()
    np.savez_compressed(buf, x=ds.x, y=ds.y)
    return buf.getvalue()


def concat_datasets(a: Dataset, b: Dataset) -> Dataset:
    """Rows of ``a`` then ``b`` (same sample shape); used to add labelled drifted batches to training data."""
    if a.sample_shape != b.sample_shape:
        raise DataError(f"cannot add {b.name} (samples {b.sample_shape}) to {a.name} (samples {a.sample_shape})")
    return Dataset(np.concatenate([a.x, b.x.astype(a.x.dtype, copy=False)]), np.concatenate([a.y, b.y]),
                   f"{a.name}+{b.name}", a.feature_names, dict(a.meta))

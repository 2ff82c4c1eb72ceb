"""Loading datasets: the bundled digits set and user files (npz, parquet, csv) on disk or in S3, or
image folders (:mod:`tasks.data.images`).

A :class:`~tasks.data.dataset.Dataset` holds float32 features ``x`` of shape ``(n, *sample_shape)``
and int64 labels ``y``. Splits are decided per row by a hash of its content and the seed
(:mod:`tasks.data.splits`); :func:`~tasks.data.dataset.fingerprint` identifies the exact bytes.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Callable

import numpy as np

from tasks.data.dataset import Dataset, Splits
from tasks.data.images import load_image_folder
from tasks.data.labels import integer_labels
from tasks.data.splits import split_by_hash
from tasks.errors import DataError

SUPPORTED_SUFFIXES = (".npz", ".parquet", ".csv")
# Meta key a lenient parse (:func:`parse_bytes`) sets when the file holds no labels.
NO_LABELS = "label_column_missing"


def load_digits_dataset() -> Dataset:
    """scikit-learn's bundled 8x8 digits (1797 images, no download), scaled to [0, 1], shape (n, 1, 8, 8)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images.astype(np.float32) / 16.0)[:, None, :, :]
    return Dataset(x=x, y=d.target.astype(np.int64), name="digits", meta={"value_range": [0.0, 1.0]})


def model_name_for_source(source: str) -> str:
    """The default registry name for a data source: its file or folder stem plus ``-classifier``
    (``digits`` -> ``digits-classifier``, ``s3://b/x/churn.parquet`` -> ``churn-classifier``)."""
    import re

    stem = Path(str(source).split("?")[0].rstrip("/")).name or "data"
    stem = stem.split(".")[0] if "." in stem[1:] else stem
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip(".-_")[:60] or "data"
    return f"{stem}-classifier"


def _from_frame(df, label_column: str, origin: str, lenient: bool = False) -> Dataset:
    meta: dict = {}
    if label_column in df.columns:
        feats = [c for c in df.columns if c != label_column]
    elif lenient:
        feats = list(df.columns)
    else:
        raise DataError(f"{origin}: label column {label_column!r} not found (columns: {list(df.columns)[:10]})")
    if lenient:
        # Cells as they are (object for text or mixed columns), for validation's rules to name.
        if label_column in df.columns:
            y = df[label_column].to_numpy()
        else:
            y, meta[NO_LABELS] = np.full(len(df), np.nan), True
        x = df[feats].to_numpy() if feats else np.zeros((len(df), 0))
        return Dataset(x=x, y=y, name=origin, feature_names=[str(c) for c in feats], meta=meta)
    if not feats:
        raise DataError(f"{origin}: no feature columns besides the label {label_column!r}")
    non_numeric = [c for c in feats if not np.issubdtype(df[c].dtype, np.number)]
    if non_numeric:
        raise DataError(f"{origin}: feature columns must be numeric, these are not: {non_numeric[:5]}")
    y = integer_labels(df[label_column].to_numpy(), f"{origin}: label column {label_column!r}")
    # Column by column into one C-ordered array: df[feats].to_numpy() builds an intermediate frame.
    x = np.empty((len(df), len(feats)), dtype=np.result_type(*[df[c].dtype for c in feats]))
    for j, c in enumerate(feats):
        x[:, j] = df[c].to_numpy()
    return Dataset(x=x, y=y.astype(np.int64), name=origin, feature_names=[str(c) for c in feats])


def parse_bytes(data: bytes, origin: str, label_column: str = "label", lenient: bool = False) -> Dataset:
    """Parse the bytes of an .npz / .parquet / .csv file named ``origin`` into a Dataset.

    Features keep their stored dtype here (validation checks it); :func:`as_float32` converts.
    Raises DataError naming the file when it cannot be used for training. ``lenient=True``
    (validation, :mod:`tasks.data.validation`) keeps what the strict parse refuses, so that a rule
    can name it: non-numeric features, labels that are not integers (left as stored), and absent
    labels (an npz without ``y``, a table without the label column: ``y`` is NaN and
    ``meta[NO_LABELS]`` is True). Bytes that cannot be parsed at all raise DataError either way.
    """
    suffix = Path(origin.split("?")[0]).suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise DataError(f"{origin}: unsupported file type {suffix or '(none)'!r}; use {', '.join(SUPPORTED_SUFFIXES)}")
    if not data:
        raise DataError(f"{origin}: the file is empty")
    return _parse(io.BytesIO(data), origin, label_column, lenient=lenient)


def parse_local_file(path: str, origin: str, label_column: str = "label") -> Dataset:
    """:func:`parse_bytes` reading from a local file instead of its bytes in memory (one copy of
    the data fewer: npz members and parquet columns are read straight into their arrays); csv
    feature columns are read as float32, the form training uses."""
    suffix = Path(origin.split("?")[0]).suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise DataError(f"{origin}: unsupported file type {suffix or '(none)'!r}; use {', '.join(SUPPORTED_SUFFIXES)}")
    if os.path.getsize(path) == 0:
        raise DataError(f"{origin}: the file is empty")
    return _parse(path, origin, label_column, csv_float32=True)


def _parse(src, origin: str, label_column: str, csv_float32: bool = False, lenient: bool = False) -> Dataset:
    suffix = Path(origin.split("?")[0]).suffix.lower()
    try:
        if suffix == ".npz":
            # allow_pickle=False: an npz holding object arrays is refused, never unpickled.
            with np.load(src, allow_pickle=False) as z:
                missing = [k for k in (("x",) if lenient else ("x", "y")) if k not in z.files]
                if missing:
                    raise DataError(f"{origin}: npz must hold arrays 'x' and 'y'; missing {missing} (has {z.files})")
                x, stored_y = z["x"], (z["y"] if "y" in z.files else None)
            meta: dict = {}
            if stored_y is not None:
                y = stored_y
            elif x.ndim >= 1:  # lenient only: 'y' is required above otherwise
                y, meta[NO_LABELS] = np.full(x.shape[0], np.nan), True
            else:
                raise DataError(f"{origin}: x has shape {x.shape}; need x (n, ...)")
            if x.ndim < 1 or y.ndim != 1 or x.shape[0] != y.shape[0]:
                raise DataError(f"{origin}: x has shape {x.shape} and y {y.shape}; need x (n, ...) and y (n,)")
            if not lenient:
                y = integer_labels(y, f"{origin}: array 'y'").astype(np.int64)
            if x.ndim == 1:
                x = x[:, None]
            return Dataset(x=x, y=y, name=origin, meta=meta)
        import pandas as pd

        if suffix == ".parquet":
            df = pd.read_parquet(src)
        elif csv_float32:
            df = _read_csv_float32(src, label_column)
        else:
            df = pd.read_csv(src)
        return _from_frame(df, label_column, origin, lenient)
    except DataError:
        raise
    except Exception as e:  # a truncated or corrupt file: name it and say what the parser said
        raise DataError(f"{origin}: cannot be read as {suffix[1:]}: {type(e).__name__}: {e}") from e


def _read_csv_float32(src, label_column: str):
    """A csv with its feature columns parsed as float32 (half of pandas' float64); a column that
    is not numeric falls back to pandas' own inference, so the error names it."""
    import pandas as pd

    header = pd.read_csv(src, nrows=0).columns
    try:
        return pd.read_csv(src, dtype={c: np.float32 for c in header if c != label_column})
    except (ValueError, TypeError):
        return pd.read_csv(src)


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


def is_file_source(source: str) -> bool:
    """True for a single data file (.npz/.parquet/.csv); False for ``digits`` and image folders."""
    return Path(source.split("?")[0]).suffix.lower() in SUPPORTED_SUFFIXES


def load_dataset(
    source: str,
    read_bytes: Callable[[str], bytes],
    label_column: str = "label",
    sample_shape: list[int] | None = None,
    list_uris: Callable[[str], list[str]] | None = None,
    image_size: int | list[int] | None = None,
    image_mode: str = "auto",
) -> Dataset:
    """Load ``source``: ``"digits"``, a file path/URI whose bytes ``read_bytes`` returns, or a
    folder / S3 prefix of class subfolders of images (:mod:`tasks.data.images`; needs ``list_uris``).

    ``read_bytes`` is the store's URI reader (local paths, ``file://`` and ``s3://``); it raises
    an error naming the file or bucket when it is missing.
    """
    if source == "digits":
        return load_digits_dataset()
    if not is_file_source(source) and list_uris is not None:
        root = source.rstrip("/")
        uris = list_uris(root)
        if uris and uris != [root]:
            return load_image_folder(root, uris, read_bytes, image_size, image_mode)
    local = _local_file(source)
    ds = (
        parse_local_file(local, source, label_column)
        if local
        else parse_bytes(read_bytes(source), source, label_column)
    )
    return as_float32(ds, sample_shape)


def _local_file(source: str) -> str | None:
    """The path of ``source`` when it is an existing local file (plain path or file://), else None."""
    if "://" in source and not source.startswith("file://"):
        return None
    path = source[len("file://") :] if source.startswith("file://") else source
    return path if os.path.isfile(path) else None


def split_dataset(
    ds: Dataset,
    seed: int,
    val_fraction: float,
    test_fraction: float,
    max_train_samples: int | None = None,
    exclude_from_test=None,
) -> Splits:
    """Train/validation/test split by a hash of each row's content and the seed
    (:func:`tasks.data.splits.split_by_hash`): adding rows never moves an existing row."""
    return split_by_hash(ds, seed, val_fraction, test_fraction, max_train_samples, exclude_from_test)


def to_npz_bytes(ds: Dataset) -> bytes:
    """The dataset as npz bytes (arrays ``x``, ``y``): how batches and references are stored."""
    buf = io.BytesIO()
    np.savez_compressed(buf, x=ds.x, y=ds.y)
    return buf.getvalue()


def concat_datasets(a: Dataset, b: Dataset) -> Dataset:
    """Rows of ``a`` then ``b`` (same sample shape); used to add labelled drifted batches to training data."""
    if a.sample_shape != b.sample_shape:
        raise DataError(f"cannot add {b.name} (samples {b.sample_shape}) to {a.name} (samples {a.sample_shape})")
    return Dataset(
        np.concatenate([a.x, b.x.astype(a.x.dtype, copy=False)]),
        np.concatenate([a.y, b.y]),
        f"{a.name}+{b.name}",
        a.feature_names,
        dict(a.meta),
    )

"""Splits by a hash of each row's content and the seed, the way TFX's ExampleGen assigns hash
buckets: a row's split depends only on the row and the seed, never on which other rows are there.

So adding rows (retraining adds drifted batches) never moves an existing row to another split,
and identical rows always share a split (a duplicate cannot sit in train and test at once). What
hashing cannot give, a champion trained under another seed or other fractions, is handled by
``exclude_from_test``: rows a compared model trained on are moved out of the test split (into
train), so the gate never scores a model on rows it has seen.

The row id is a 64-bit content hash (splitmix64 mixing of every 32-bit word of the float32
features, then the label); it is not cryptographic, it only has to spread rows evenly and make
collisions negligible (about n^2 / 2^65: 3e-8 for a million rows). The split bucket is the id
mixed with the seed, mapped to [0, 1).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from tasks.data.dataset import Dataset, Splits, fingerprint
from tasks.errors import DataError

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
# Bytes of the widest temporary per chunk of rows (each 32-bit word widened to uint64): bounds the
# copies hashing makes to about a MiB whatever the data's size, well under a 10^4-row table's own.
_CHUNK_BYTES = 512 * 1024
SPLIT_IDS_NAME = "split_ids.npz"


def _chunk_rows(width: int) -> int:
    """Rows per chunk for rows of ``width`` hashed words."""
    return max(64, _CHUNK_BYTES // (8 * max(width, 1)))


def _mix(z: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer (Steele et al. 2014), vectorised; uint64 arithmetic wraps."""
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def hash_rows(a: np.ndarray) -> np.ndarray:
    """A 64-bit hash (uint64) of each row of the 2-d numeric array ``a``, over its bytes in its own
    dtype (floats with -0.0 taken as 0.0): equal rows get equal hashes. Chunked: temporaries stay small."""
    n = int(a.shape[0])
    out = np.empty(n, dtype=np.uint64)
    step = _chunk_rows(int(np.prod(a.shape[1:], dtype=np.int64)) * max(a.dtype.itemsize // 4, 1))
    with np.errstate(over="ignore"):
        for i in range(0, n, step):
            c = np.ascontiguousarray(a[i : i + step]).reshape(min(step, n - i), -1)
            if c.dtype.kind == "f":
                c = c + c.dtype.type(0.0)  # -0.0 + 0.0 == +0.0
            words = c.view(np.uint32 if c.dtype.itemsize % 4 == 0 else np.uint8).astype(np.uint64)
            h = np.full(len(c), _GOLDEN, dtype=np.uint64)
            for j in range(words.shape[1]):
                h = _mix(h ^ words[:, j])
            out[i : i + len(c)] = h
    return out


def row_ids(ds: Dataset) -> np.ndarray:
    """A 64-bit content id per row (uint64): equal rows (features as float32, and label) get equal ids."""
    n = len(ds)
    out = np.empty(n, dtype=np.uint64)
    y = np.asarray(ds.y).astype(np.int64, copy=False)
    step = _chunk_rows(int(np.prod(ds.x.shape[1:], dtype=np.int64)))
    with np.errstate(over="ignore"):
        for i in range(0, n, step):
            # float32: the form every stage sees, whatever the file stored.
            c = np.asarray(ds.x[i : i + step], dtype=np.float32).reshape(min(step, n - i), -1)
            out[i : i + len(c)] = _mix(hash_rows(c) ^ y[i : i + len(c)].view(np.uint64))
    return out


def bucket(ids: np.ndarray, seed: int, salt: int = 0) -> np.ndarray:
    """Each id's position in [0, 1) for ``seed``: uniform, and a function of the id and seed only."""
    with np.errstate(over="ignore"):
        s = _mix(np.array([(int(seed) * 2 + salt) % 2**64], dtype=np.uint64) ^ _GOLDEN)
        return (_mix(ids ^ s) >> np.uint64(11)).astype(np.float64) / float(2**53)


@dataclass
class SplitIds:
    """Row ids of each split, and of every row the model's lineage trained on (its own training
    rows plus those of the model it was warm-started from)."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    # None: the unique training ids, computed when needed (not held beside the splits meanwhile).
    trained_on: np.ndarray | None = None
    moved_from_test: int = 0  # test rows moved to train because a compared model trained on them

    def lineage_rows(self) -> np.ndarray:
        return np.unique(self.train) if self.trained_on is None else self.trained_on

    def to_npz_bytes(self) -> bytes:
        buf = io.BytesIO()
        np.savez(
            buf,
            train=self.train,
            val=self.val,
            test=self.test,
            trained_on=self.lineage_rows(),
            moved_from_test=np.array(self.moved_from_test),
        )
        return buf.getvalue()

    @classmethod
    def from_npz_bytes(cls, data: bytes) -> "SplitIds":
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            return cls(z["train"], z["val"], z["test"], z["trained_on"], int(z["moved_from_test"]))

    def with_inherited(self, inherited: np.ndarray | None) -> "SplitIds":
        """The same splits, ``trained_on`` extended by the rows a warm-start parent trained on."""
        if inherited is None or not len(inherited):
            return self
        return SplitIds(
            self.train, self.val, self.test, np.union1d(self.lineage_rows(), inherited), self.moved_from_test
        )


def split_by_hash(
    ds: Dataset,
    seed: int,
    val_fraction: float,
    test_fraction: float,
    max_train_samples: int | None = None,
    exclude_from_test: np.ndarray | None = None,
) -> Splits:
    """Train/validation/test by :func:`bucket` of each row's id: test below ``test_fraction``,
    validation up to ``test_fraction + val_fraction``, train above. Rows whose id is in
    ``exclude_from_test`` go to train instead of test. ``max_train_samples`` keeps the training rows
    with the lowest second bucket (also a function of the row only). The returned ``Splits.ids``
    holds each split's row ids; rows keep their order inside each split."""
    n = len(ds)
    if n < 10:
        raise DataError(f"{ds.name}: {n} samples are too few to split into train/validation/test")
    ids = row_ids(ds)
    u = bucket(ids, seed)
    is_test = u < test_fraction
    is_val = ~is_test & (u < test_fraction + val_fraction)
    del u
    moved = 0
    if exclude_from_test is not None and len(exclude_from_test):
        seen = is_test & np.isin(ids, exclude_from_test)
        moved = int(seen.sum())
        is_test &= ~seen
    train = np.flatnonzero(~is_test & ~is_val)
    if max_train_samples is not None and len(train) > max_train_samples:
        keep = np.argsort(bucket(ids[train], seed, salt=1), kind="stable")[:max_train_samples]
        train = np.sort(train[keep])
    val, test = np.flatnonzero(is_val), np.flatnonzero(is_test)
    for name, idx in (("train", train), ("validation", val), ("test", test)):
        if len(idx) == 0:
            raise DataError(
                f"{ds.name}: the {name} split of {n} rows is empty (data.val_fraction="
                f"{val_fraction}, data.test_fraction={test_fraction}); add rows or change the fractions"
            )
    split_ids = SplitIds(ids[train], ids[val], ids[test], None, moved)
    return Splits(
        ds.subset(train, f"{ds.name}:train"),
        ds.subset(val, f"{ds.name}:val"),
        ds.subset(test, f"{ds.name}:test"),
        ids=split_ids,
    )


def split_summary(splits: Splits, excluded: np.ndarray | None = None) -> dict:
    """What the manifest records about how the splits were drawn (sizes, test fingerprint, rows
    moved out of test because a compared model trained on them)."""
    ids: SplitIds | None = splits.ids  # type: ignore[assignment]
    return {
        "method": "hash(row content, seed)",
        "sizes": {"train": len(splits.train), "val": len(splits.val), "test": len(splits.test)},
        "test_fingerprint": fingerprint(splits.test),
        "moved_from_test": ids.moved_from_test if ids is not None else 0,
        "excluded_rows_known": int(len(excluded)) if excluded is not None else 0,
    }

"""A simulated production stream: labelled batches drawn from held-out data, with a drift of a
chosen kind switched on for ``duration`` batches from ``onset`` (the lecture's example: drift
from batch 60 to batch 80), then back to normal.

Batch ``i`` draws its samples with a generator seeded by ``(seed, "stream-batch", i)`` and its
corruption with ``(seed, "stream-drift", i)``, so a stream is reproducible and the clean part of
a stream is the same whatever drift kind is chosen. Corrupted values are clipped to the data range.

Severity 1.0 is a "moderate" shift; the magnitudes below scale linearly with it:

==============  ================================================================
gaussian_noise  additive N(0, (0.25 * span * s)^2) noise
rotation        rotation by 30 * s degrees, random direction per sample
blur            Gaussian blur with sigma 1.0 * s pixels
brightness      + 0.25 * span * s
contrast        contrast scaled by max(0, 1 - 0.5 * s) around each image's mean
occlusion       a square patch of side round(0.4 * min(H, W) * s) set to the minimum
label_shift     prior shift: the upper half of the classes is drawn 1 + 9 * s times less often
==============  ================================================================
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from tasks.data.dataset import Dataset, Splits
from tasks.errors import DataError
from tasks.seeding import rng

DRIFT_KINDS = ("none", "gaussian_noise", "rotation", "blur", "brightness", "contrast", "occlusion", "label_shift")
IMAGE_KINDS = frozenset({"rotation", "blur", "occlusion"})
STREAM_MANIFEST = "stream.json"


def batch_file_name(index: int) -> str:
    return f"batch-{index:05d}.npz"


@dataclass(frozen=True)
class StreamSpec:
    kind: str
    onset: int
    duration: int
    n_batches: int
    batch_size: int
    seed: int
    severity: float
    value_range: tuple[float, float]
    source: str = "dataset"

    def drifted(self, index: int) -> bool:
        return self.kind != "none" and self.onset <= index < self.onset + self.duration

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["value_range"] = list(self.value_range)
        d["drifted_batches"] = [i for i in range(self.n_batches) if self.drifted(i)]
        return d


@dataclass
class StreamBatch:
    index: int
    x: np.ndarray
    y: np.ndarray
    drifted: bool
    spec: StreamSpec

    @property
    def batch_id(self) -> str:
        return f"batch-{self.index:05d}"


def _value_range(ds: Dataset) -> tuple[float, float]:
    vr = ds.meta.get("value_range")
    if vr is not None:
        return float(vr[0]), float(vr[1])
    return float(np.min(ds.x)), float(np.max(ds.x))


def apply_drift(
    x: np.ndarray, kind: str, severity: float, gen: np.random.Generator, value_range: tuple[float, float]
) -> np.ndarray:
    """Corrupt a batch ``x`` (n, *shape) with drift ``kind`` at ``severity`` (see module table).

    ``label_shift`` changes which samples are drawn, not the inputs: it returns ``x`` unchanged.
    """
    lo, hi = value_range
    span = hi - lo
    s = float(severity)
    x = np.array(x, dtype=np.float32, copy=True)
    if kind in ("none", "label_shift") or s == 0:
        return x
    if kind in IMAGE_KINDS and x.ndim != 4:
        raise DataError(f"drift kind {kind!r} needs image samples (C, H, W); these have shape {x.shape[1:]}")
    if kind == "gaussian_noise":
        x = x + gen.normal(0.0, 0.25 * span * s, size=x.shape).astype(np.float32)
    elif kind == "brightness":
        x = x + np.float32(0.25 * span * s)
    elif kind == "contrast":
        axes = tuple(range(1, x.ndim))
        mean = x.mean(axis=axes, keepdims=True)
        x = mean + (x - mean) * np.float32(max(0.0, 1.0 - 0.5 * s))
    elif kind == "rotation":
        from scipy.ndimage import rotate

        signs = gen.choice([-1.0, 1.0], size=len(x))
        for i in range(len(x)):
            x[i] = rotate(x[i], 30.0 * s * signs[i], axes=(1, 2), reshape=False, order=1, mode="constant", cval=lo)
    elif kind == "blur":
        from scipy.ndimage import gaussian_filter

        x = gaussian_filter(x, sigma=(0, 0, 1.0 * s, 1.0 * s), mode="nearest")
    elif kind == "occlusion":
        h, w = x.shape[2], x.shape[3]
        side = max(1, min(min(h, w), int(round(0.4 * min(h, w) * s))))
        rows = gen.integers(0, h - side + 1, size=len(x))
        cols = gen.integers(0, w - side + 1, size=len(x))
        for i in range(len(x)):
            x[i, :, rows[i] : rows[i] + side, cols[i] : cols[i] + side] = lo
    else:
        raise DataError(f"unknown drift kind {kind!r}; known: {', '.join(DRIFT_KINDS)}")
    return np.clip(x, lo, hi).astype(np.float32)


def _pool(splits_or_dataset: Splits | Dataset) -> Dataset:
    # Held-out data only: batches drawn from the training split would look like the reference.
    return splits_or_dataset.test if isinstance(splits_or_dataset, Splits) else splits_or_dataset


def simulate_stream(
    splits_or_dataset: Splits | Dataset,
    kind: str = "gaussian_noise",
    onset: int = 60,
    duration: int = 20,
    n_batches: int = 100,
    batch_size: int = 100,
    seed: int = 1337,
    severity: float = 1.0,
) -> Iterator[StreamBatch]:
    """Yield ``n_batches`` labelled batches drawn from the held-out data (``Splits.test``, or the
    given Dataset); batches ``onset .. onset+duration-1`` carry drift ``kind`` (see module docstring).

    Samples within a batch are drawn without replacement when the pool is large enough, with
    replacement otherwise. Errors (unknown kind, bad sizes, image-only kinds on flat data) are
    raised before the first batch is produced.
    """
    if kind not in DRIFT_KINDS:
        raise DataError(f"unknown drift kind {kind!r}; known: {', '.join(DRIFT_KINDS)}")
    if n_batches < 1 or batch_size < 1:
        raise DataError(f"need n_batches >= 1 and batch_size >= 1, got {n_batches} and {batch_size}")
    if onset < 0 or duration < 0:
        raise DataError(f"need onset >= 0 and duration >= 0, got {onset} and {duration}")
    if severity < 0:
        raise DataError(f"severity must be >= 0, got {severity}")
    pool = _pool(splits_or_dataset)
    if len(pool) == 0:
        raise DataError(f"{pool.name}: no samples to draw a stream from")
    if kind in IMAGE_KINDS and pool.x.ndim != 4:
        raise DataError(f"drift kind {kind!r} needs image samples (C, H, W); {pool.name} has shape {pool.sample_shape}")
    spec = StreamSpec(
        kind,
        int(onset),
        int(duration),
        int(n_batches),
        int(batch_size),
        int(seed),
        float(severity),
        _value_range(pool),
        pool.name,
    )
    return _generate(pool, spec)


def _generate(pool: Dataset, spec: StreamSpec) -> Iterator[StreamBatch]:
    n = len(pool)
    classes = np.unique(pool.y)
    shifted = classes[len(classes) // 2 :]
    for i in range(spec.n_batches):
        drifted = spec.drifted(i)
        g = rng(spec.seed, "stream-batch", i)
        p = None
        if drifted and spec.kind == "label_shift":
            w = np.where(np.isin(pool.y, shifted), 1.0 / (1.0 + 9.0 * spec.severity), 1.0)
            p = w / w.sum()
        replace = n < spec.batch_size or (p is not None and int((p > 0).sum()) < spec.batch_size)
        idx = g.choice(n, spec.batch_size, replace=replace, p=p)
        x = pool.x[idx].astype(np.float32)
        if drifted:
            x = apply_drift(x, spec.kind, spec.severity, rng(spec.seed, "stream-drift", i), spec.value_range)
        yield StreamBatch(i, x, pool.y[idx].astype(np.int64), drifted, spec)


def batch_to_npz_bytes(x: np.ndarray, y: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, x=x, y=y)
    return buf.getvalue()


def _join(base: str, name: str) -> str:
    return base.rstrip("/") + "/" + name


def write_stream(
    batches: Iterator[StreamBatch] | list[StreamBatch], out_uri: str, store_cfg: Any = None
) -> dict[str, Any]:
    """Write ``batch-00000.npz`` (arrays x, y) ... and, last, ``stream.json`` under ``out_uri``.

    ``out_uri`` is a local directory (plain path or ``file://``) or an ``s3://bucket/prefix``;
    S3 goes through ``tasks.store.backends.write_uri`` with ``store_cfg`` (a StoreConfig: endpoint
    and credentials). Returns the stream manifest (also what ``stream.json`` holds).
    """
    is_s3 = out_uri.startswith("s3://")
    if is_s3 and store_cfg is None:
        raise DataError(f"{out_uri}: writing to S3 needs a store configuration (endpoint, credentials)")
    if is_s3:
        from tasks.store.backends import write_uri

        def put(name: str, data: bytes) -> None:
            write_uri(_join(out_uri, name), data, store_cfg)
    else:
        root = Path(out_uri[len("file://") :] if out_uri.startswith("file://") else out_uri)
        root.mkdir(parents=True, exist_ok=True)

        def put(name: str, data: bytes) -> None:
            tmp = root / f".{name}.tmp"
            tmp.write_bytes(data)
            tmp.replace(root / name)  # a reader never sees a half-written batch

    spec = None
    files = []
    for b in batches:
        spec = b.spec
        name = batch_file_name(b.index)
        put(name, batch_to_npz_bytes(b.x, b.y))
        files.append(name)
    if spec is None:
        raise DataError(f"{out_uri}: the stream has no batches")
    manifest = spec.as_dict()
    manifest["files"] = files
    manifest["sample_shape"] = list(b.x.shape[1:])
    put(STREAM_MANIFEST, json.dumps(manifest, indent=2, sort_keys=True).encode())
    return manifest

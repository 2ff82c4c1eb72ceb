"""Schema inference: what a valid batch looks like, learnt from the training data.

Follows the idea of TensorFlow Data Validation (TFDV, Breck et al., "Data Validation for Machine
Learning", SysML 2019): infer a schema once from the training split (shape, types, per-feature
statistics, label domain), store it with the run, and check every later batch against it
(:mod:`tasks.data.validation`). The schema is plain JSON so it can be read without this code.
"""

from __future__ import annotations

import json
import warnings
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from tasks.data.dataset import Dataset, fingerprint
from tasks.errors import DataError

SCHEMA_VERSION = 1
# Quantiles recorded per feature (TFDV records a quantile histogram; five points are enough to
# read a feature's spread and skew by eye).
QUANTILES = (0.01, 0.25, 0.5, 0.75, 0.99)


class FeatureStats(BaseModel):
    """Statistics of one (flattened) feature over the training rows. ``None`` when all are missing."""

    model_config = ConfigDict(extra="forbid")

    index: int
    name: str
    min: float | None
    max: float | None
    mean: float | None
    std: float | None
    quantiles: dict[str, float | None]
    missing: int = 0

    @property
    def span(self) -> float:
        if self.min is None or self.max is None:
            return 0.0
        return self.max - self.min


class Schema(BaseModel):
    """The expected form of every batch; inferred by :func:`infer_schema`, stored as JSON."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    version: int = SCHEMA_VERSION
    name: str
    sample_shape: list[int]
    dtype: str
    num_features: int
    # Column names for tabular data (csv/parquet); None for arrays (images), where features are
    # named by their flat index.
    feature_names: list[str] | None = None
    features: list[FeatureStats]
    labels: list[int]
    # Share of each label among the training rows, keyed by the label as a string (JSON keys).
    class_balance: dict[str, float]
    # Missing (NaN) values per feature name, only features with any; must be empty for training data
    # that the models can use, recorded rather than refused so that the report shows where they are.
    missing_values: dict[str, int] = Field(default_factory=dict)
    # The overall value range of the training data: the adversarial stage clips perturbed inputs
    # to it, and image batches are range-checked against it.
    value_min: float
    value_max: float
    num_rows: int
    fingerprint: str

    # --- convenience -------------------------------------------------------------------------
    @property
    def value_span(self) -> float:
        return self.value_max - self.value_min

    @property
    def is_image_like(self) -> bool:
        """Samples with more than one axis (e.g. (1, 8, 8)): all features share one value domain."""
        return len(self.sample_shape) > 1

    def feature_bounds(self, tolerance: float, tail_factor: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        """Per-feature allowed range: the training [min, max] widened on each side by
        ``max(tolerance * span, tail_factor * tail gap)``, where the tail gap is the distance from
        the 1st (99th) percentile to the minimum (maximum). A long-tailed column (areas, incomes)
        has a wide gap and its held-out extremes routinely pass the training maximum by a lot; a
        bounded or binary column has none. NaN where the training data had no values."""
        mins, maxs = self.array("min"), self.array("max")
        span = maxs - mins
        q01, q99 = self.quantile_array("q01"), self.quantile_array("q99")
        low_gap = np.nan_to_num(q01 - mins, nan=0.0)
        high_gap = np.nan_to_num(maxs - q99, nan=0.0)
        return (
            mins - np.maximum(tolerance * span, tail_factor * low_gap),
            maxs + np.maximum(tolerance * span, tail_factor * high_gap),
        )

    def feature_name(self, flat_index: int) -> str:
        return self.features[flat_index].name

    def quantile_array(self, key: str) -> np.ndarray:
        """One recorded quantile (``"q01"`` ... ``"q99"``) as a float64 array (missing as NaN)."""
        return np.array(
            [np.nan if f.quantiles.get(key) is None else f.quantiles[key] for f in self.features], dtype=np.float64
        )

    def array(self, attr: str) -> np.ndarray:
        """One per-feature statistic as a float64 array (missing as NaN), in flat feature order."""
        return np.array(
            [np.nan if getattr(f, attr) is None else getattr(f, attr) for f in self.features], dtype=np.float64
        )

    # --- JSON --------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=False)

    @classmethod
    def from_json(cls, text: str | bytes) -> "Schema":
        """Parse a schema written by :meth:`to_json`; a malformed document raises DataError."""
        try:
            return cls.model_validate_json(text)
        except Exception as e:  # pydantic's ValidationError or a JSON syntax error
            raise DataError(f"not a valid driftloop schema: {e}") from e


def _finite_or_none(v: float) -> float | None:
    return float(v) if np.isfinite(v) else None


def feature_names_for(ds: Dataset) -> list[str]:
    """Column names for tabular data, else the flat index as a string (``"0"``, ``"1"``, ...)."""
    if ds.feature_names is not None and len(ds.feature_names) == ds.num_features:
        return [str(n) for n in ds.feature_names]
    return [str(i) for i in range(ds.num_features)]


# Bytes of one float64 chunk of rows for the moments: a few such copies are live at once, never
# of the whole training split, so the schema of a 10^4-row table needs well under the table's
# own size on top of it (benchmarks/data_scale.py).
_CHUNK_BYTES = 256 * 1024


def _column_stats(flat: np.ndarray, name: str):
    """Per-column min, max, mean, std, missing count and :data:`QUANTILES` of the 2-d ``flat``,
    ignoring NaN; float64 arithmetic on chunks of rows (moments) and one column at a time
    (quantiles), so the memory needed is a small multiple of one column, not of the data."""
    n, d = flat.shape
    rows = max(64, _CHUNK_BYTES // (8 * max(d, 1)))
    mins, maxs = np.full(d, np.inf), np.full(d, -np.inf)
    s1, cnt, missing = np.zeros(d), np.zeros(d), np.zeros(d, dtype=np.int64)
    for i in range(0, n, rows):
        c = np.asarray(flat[i : i + rows], dtype=np.float64)
        if np.isinf(c).any():
            r, col = np.argwhere(np.isinf(c))[0]
            raise DataError(
                f"{name}: infinite value in training data (row {i + r}, feature {col}); "
                "a schema cannot describe its range"
            )
        nan = np.isnan(c)
        missing += nan.sum(axis=0)
        cnt += (~nan).sum(axis=0)
        mins = np.fmin(mins, np.where(nan, np.inf, c).min(axis=0))
        maxs = np.fmax(maxs, np.where(nan, -np.inf, c).max(axis=0))
        s1 += np.where(nan, 0.0, c).sum(axis=0)
    with np.errstate(all="ignore"):
        means = np.where(cnt > 0, s1 / np.maximum(cnt, 1), np.nan)
        s2 = np.zeros(d)
        for i in range(0, n, rows):  # second pass: exact variance, no cancellation
            c = np.asarray(flat[i : i + rows], dtype=np.float64)
            s2 += np.where(np.isnan(c), 0.0, (c - means) ** 2).sum(axis=0)
        stds = np.where(cnt > 0, np.sqrt(s2 / np.maximum(cnt, 1)), np.nan)
    mins[cnt == 0] = np.nan
    maxs[cnt == 0] = np.nan
    qs = np.full((len(QUANTILES), d), np.nan)
    # All-missing features get None statistics; numpy's "All-NaN slice" warnings add nothing.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for j in range(d):
            if cnt[j]:
                col = np.asarray(flat[:, j], dtype=np.float64)
                qs[:, j] = np.nanquantile(col, QUANTILES) if missing[j] else np.quantile(col, QUANTILES)
    return mins, maxs, means, stds, missing, qs


def infer_schema(ds: Dataset) -> Schema:
    """Infer the schema of a training dataset.

    Records the per-sample shape and dtype, per-feature min/max/mean/std and quantiles
    (:data:`QUANTILES`), the label set and class balance, missing-value counts, the overall
    value range, the row count and :func:`tasks.data.dataset.fingerprint` of the data.
    Statistics are computed in float64 and ignore missing values. Raises DataError for an
    empty dataset, non-numeric features or infinite values (a schema cannot describe them).
    """
    n = len(ds)
    if n == 0:
        raise DataError(f"{ds.name}: cannot infer a schema from an empty dataset")
    if not (np.issubdtype(ds.x.dtype, np.integer) or np.issubdtype(ds.x.dtype, np.floating)):
        raise DataError(f"{ds.name}: features must be numeric to infer a schema, got dtype {ds.x.dtype}")
    if ds.y.shape != (n,) or not np.issubdtype(ds.y.dtype, np.integer):
        raise DataError(f"{ds.name}: labels must be integers of shape ({n},), got {ds.y.dtype} {ds.y.shape}")
    flat = ds.x.reshape(n, -1)  # a view: statistics are computed in float64 chunk by chunk
    names = feature_names_for(ds)
    mins, maxs, means, stds, missing, qs = _column_stats(flat, ds.name)
    features = [
        FeatureStats(
            index=j,
            name=names[j],
            min=_finite_or_none(mins[j]),
            max=_finite_or_none(maxs[j]),
            mean=_finite_or_none(means[j]),
            std=_finite_or_none(stds[j]),
            quantiles={f"q{int(round(q * 100)):02d}": _finite_or_none(qs[k, j]) for k, q in enumerate(QUANTILES)},
            missing=int(missing[j]),
        )
        for j in range(flat.shape[1])
    ]
    labels, counts = np.unique(ds.y, return_counts=True)
    if not np.isfinite(mins).any():
        raise DataError(f"{ds.name}: every feature value is missing; cannot infer a value range")
    # A source that knows its value domain (pixels scaled to [0, 1]) records it: a held-out image
    # brighter than every training image is still a valid image.
    domain = ds.meta.get("value_range")
    value_min, value_max = float(np.nanmin(mins)), float(np.nanmax(maxs))
    if domain is not None:
        value_min, value_max = min(value_min, float(domain[0])), max(value_max, float(domain[1]))
    return Schema(
        name=ds.name,
        sample_shape=list(ds.sample_shape),
        dtype=str(ds.x.dtype),
        num_features=int(flat.shape[1]),
        feature_names=[str(c) for c in ds.feature_names] if ds.feature_names is not None else None,
        features=features,
        labels=[int(v) for v in labels],
        class_balance={str(int(v)): float(c) / n for v, c in zip(labels, counts)},
        missing_values={names[j]: int(m) for j, m in enumerate(missing) if m},
        value_min=value_min,
        value_max=value_max,
        num_rows=n,
        fingerprint=fingerprint(ds),
    )

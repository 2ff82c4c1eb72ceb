"""Schema inference on digits and on a small table, and the JSON round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tasks.data.dataset import Dataset, fingerprint
from tasks.data.schema import QUANTILES, Schema, infer_schema
from tasks.data.sources import parse_bytes, split_dataset
from tasks.errors import DataError

from .conftest import frame_bytes


def test_digits_schema(digits_splits, digits_schema):
    train = digits_splits.train
    s = digits_schema
    assert s.sample_shape == [1, 8, 8]
    assert s.dtype == "float32"
    assert s.num_features == 64 and len(s.features) == 64
    assert s.num_rows == len(train)
    assert s.labels == list(range(10))
    assert sum(s.class_balance.values()) == pytest.approx(1.0)
    assert s.class_balance["3"] == pytest.approx(float(np.mean(train.y == 3)))
    assert (s.value_min, s.value_max) == (0.0, 1.0)
    assert s.missing_values == {}
    assert s.fingerprint == fingerprint(train)
    assert s.feature_names is None and s.features[10].name == "10"
    flat = train.x.reshape(len(train), -1).astype(np.float64)
    f = s.features[20]
    assert f.min == pytest.approx(flat[:, 20].min())
    assert f.max == pytest.approx(flat[:, 20].max())
    assert f.mean == pytest.approx(flat[:, 20].mean())
    assert f.std == pytest.approx(flat[:, 20].std())
    assert list(f.quantiles) == ["q01", "q25", "q50", "q75", "q99"]
    assert f.quantiles["q50"] == pytest.approx(np.quantile(flat[:, 20], 0.5))
    assert len(QUANTILES) == len(f.quantiles)
    # A corner pixel is constant zero in digits.
    assert s.features[0].std == 0.0 and s.features[0].span == 0.0


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_tabular_schema(table, suffix):
    ds = parse_bytes(frame_bytes(table, suffix), f"table{suffix}")
    s = infer_schema(ds)
    assert s.feature_names == ["age", "score", "ratio"]
    assert s.sample_shape == [3] and s.num_features == 3
    assert [f.name for f in s.features] == ["age", "score", "ratio"]
    assert s.dtype == "float64"  # mixed int/float columns come out as float64
    assert s.labels == sorted(table["label"].unique().tolist())
    assert s.features[0].min == table["age"].min() and s.features[0].max == table["age"].max()
    assert s.features[1].mean == pytest.approx(table["score"].mean())
    assert s.features[1].std == pytest.approx(table["score"].std(ddof=0))
    assert s.value_min == pytest.approx(table[["age", "score", "ratio"]].min().min())
    assert s.value_max == table["age"].max()
    assert s.num_rows == len(table)
    assert not s.is_image_like


def test_missing_values_are_recorded():
    x = np.arange(40, dtype=np.float32).reshape(20, 2)
    x[3, 1] = np.nan
    x[7, 1] = np.nan
    s = infer_schema(Dataset(x=x, y=np.arange(20) % 2, feature_names=["a", "b"]))
    assert s.missing_values == {"b": 2}
    assert s.features[1].missing == 2 and s.features[0].missing == 0
    assert s.features[1].mean == pytest.approx(float(np.nanmean(x[:, 1])))


def test_all_missing_feature_gets_no_statistics():
    x = np.zeros((10, 2), dtype=np.float32)
    x[:, 1] = np.nan
    s = infer_schema(Dataset(x=x, y=np.zeros(10, dtype=np.int64)))
    assert s.features[1].mean is None and s.features[1].min is None
    assert Schema.from_json(s.to_json()) == s  # None survives JSON, NaN would not


@pytest.mark.parametrize(
    "x, y, match",
    [
        (np.zeros((0, 3), np.float32), np.zeros(0, np.int64), "empty"),
        (np.array([[1.0], [np.inf]]), np.array([0, 1]), "infinite"),
        (np.array([["a"], ["b"]]), np.array([0, 1]), "numeric"),
        (np.zeros((2, 1)), np.array([0.5, 1.0]), "integers"),
    ],
)
def test_infer_refuses_what_a_schema_cannot_describe(x, y, match):
    with pytest.raises(DataError, match=match):
        infer_schema(Dataset(x=x, y=y, name="bad"))


def test_json_round_trip(digits_schema, table):
    text = digits_schema.to_json()
    assert json.loads(text)["sample_shape"] == [1, 8, 8]
    back = Schema.from_json(text)
    assert back == digits_schema
    assert back.to_json() == text
    tab = infer_schema(parse_bytes(frame_bytes(table, ".csv"), "t.csv"))
    assert Schema.from_json(tab.to_json().encode()) == tab


def test_from_json_rejects_garbage(digits_schema):
    with pytest.raises(DataError, match="schema"):
        Schema.from_json("{not json")
    doc = json.loads(digits_schema.to_json())
    doc["surprise"] = 1
    with pytest.raises(DataError, match="surprise"):
        Schema.from_json(json.dumps(doc))


def test_schema_is_deterministic(digits_splits):
    ds = digits_splits.train
    again = split_dataset(Dataset(ds.x.copy(), ds.y.copy(), ds.name), 1, 0.2, 0.2)
    assert infer_schema(ds) == infer_schema(ds)
    assert infer_schema(again.train).fingerprint != infer_schema(ds).fingerprint


def test_schema_split_and_standardization_work_in_small_chunks():
    """The schema, the hash split and the standardization of a table take temporaries of a
    bounded size, not copies of the data: benchmarks/data_scale.py's memory goal (peak <= 3x the
    data) holds at 10^4 rows only if each needs well under the data's own size on top of it. The
    statistics must also be exactly those of an unchunked pass."""
    import tracemalloc

    from tasks.data.splits import row_ids
    from tasks.models.standardize import fit_standardization

    r = np.random.default_rng(3)
    x = r.normal(size=(60_000, 20)).astype(np.float32)
    x[:, :3] = np.exp(x[:, :3])
    ds = Dataset(x, (x[:, 4] > 0).astype(np.int64), "chunks")
    nbytes = x.nbytes + ds.y.nbytes
    for name, fn in [
        ("infer_schema", lambda: infer_schema(ds)),
        ("fit_standardization", lambda: fit_standardization(x)),
        ("row hashing", lambda: row_ids(ds)),
    ]:
        tracemalloc.start()
        fn()
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        budget = 0.35 * nbytes + (8 * len(x) if name == "row hashing" else 0)  # row_ids' own output
        assert peak < budget, f"{name}: {peak / 2**20:.1f} MiB of temporaries for {nbytes / 2**20:.1f} MiB of data"
    schema = infer_schema(ds)
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(schema.array("mean"), x64.mean(0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(schema.array("std"), x64.std(0), rtol=1e-10)
    assert schema.array("min").tolist() == x64.min(0).tolist()

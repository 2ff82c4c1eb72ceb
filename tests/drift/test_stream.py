import json

import numpy as np
import pytest

from tasks.data.dataset import Dataset
from tasks.drift.stream import DRIFT_KINDS, apply_drift, simulate_stream, write_stream
from tasks.errors import DataError


def _stream(splits, kind, **kw):
    args = dict(onset=5, duration=3, n_batches=12, batch_size=40, seed=11, severity=1.0)
    args.update(kw)
    return list(simulate_stream(splits, kind, **args))


@pytest.mark.parametrize("kind", [k for k in DRIFT_KINDS if k != "none"])
def test_onset_duration_shapes_labels_and_range(digits_splits, kind):
    clean = _stream(digits_splits, "none")
    drifted = _stream(digits_splits, kind)
    assert [b.drifted for b in drifted] == [5 <= i < 8 for i in range(12)]
    for c, d in zip(clean, drifted):
        assert d.x.shape == (40, 1, 8, 8) and d.x.dtype == np.float32 and d.y.shape == (40,)
        assert d.x.min() >= 0.0 and d.x.max() <= 1.0
        assert set(np.unique(d.y)) <= set(range(10))
        if not d.drifted:  # outside the drift window the stream is the clean stream, batch for batch
            np.testing.assert_array_equal(c.x, d.x)
            np.testing.assert_array_equal(c.y, d.y)
        elif kind == "label_shift":
            assert not np.array_equal(c.y, d.y)
        else:
            np.testing.assert_array_equal(c.y, d.y)
            assert np.abs(c.x - d.x).mean() > 0.005, kind


def test_label_shift_moves_the_class_prior(digits_splits):
    bs = _stream(digits_splits, "label_shift", onset=0, duration=12, batch_size=100)
    upper = np.mean([np.mean(b.y >= 5) for b in bs])
    assert upper < 0.2  # about 1/(1+9) of the mass left on the upper half of the classes


def test_deterministic_by_seed(digits_splits):
    a, b = _stream(digits_splits, "rotation"), _stream(digits_splits, "rotation")
    c = _stream(digits_splits, "rotation", seed=12)
    assert all(np.array_equal(x.x, y.x) and np.array_equal(x.y, y.y) for x, y in zip(a, b))
    assert not all(np.array_equal(x.x, y.x) for x, y in zip(a, c))


def test_bad_arguments_fail_before_any_batch(digits_splits):
    with pytest.raises(DataError, match="unknown drift kind 'fog'"):
        simulate_stream(digits_splits, "fog")
    flat = Dataset(np.random.rand(50, 6).astype(np.float32), np.zeros(50, np.int64), "flat")
    with pytest.raises(DataError, match="needs image samples"):
        simulate_stream(flat, "rotation")
    with pytest.raises(DataError, match="onset"):
        simulate_stream(digits_splits, "blur", onset=-1)
    # flat data works with the kinds that do not need images
    xs = apply_drift(flat.x, "gaussian_noise", 1.0, np.random.default_rng(0), (0.0, 1.0))
    assert xs.shape == flat.x.shape and xs.min() >= 0 and xs.max() <= 1


def test_write_stream_local(tmp_path, digits_splits):
    out = tmp_path / "stream"
    manifest = write_stream(
        simulate_stream(digits_splits, "occlusion", onset=2, duration=2, n_batches=5, batch_size=10, seed=1), str(out)
    )
    assert sorted(p.name for p in out.iterdir()) == [f"batch-{i:05d}.npz" for i in range(5)] + ["stream.json"]
    doc = json.loads((out / "stream.json").read_text())
    assert doc == manifest and doc["kind"] == "occlusion" and doc["drifted_batches"] == [2, 3]
    with np.load(out / "batch-00003.npz", allow_pickle=False) as z:
        assert z["x"].shape == (10, 1, 8, 8) and z["y"].dtype == np.int64


@pytest.mark.integration
def test_write_stream_s3_and_cli(s3_store_config, tmp_path):
    from tasks.drift.cli import simulate_stream_command
    from tasks.settings import load_settings
    from tasks.store.backends import list_uri, read_uri

    settings = load_settings(
        overrides={
            "store": s3_store_config.model_dump(mode="json")
            | {
                "access_key_id": s3_store_config.access_key_id.get_secret_value(),
                "secret_access_key": s3_store_config.secret_access_key.get_secret_value(),
            }
        }
    )
    uri = s3_store_config.uri + "/incoming"
    manifest = simulate_stream_command(
        uri, kind="brightness", onset=1, duration=1, batches=3, batch_size=8, settings=settings
    )
    names = [u.rsplit("/", 1)[1] for u in list_uri(uri, s3_store_config)]
    assert names == ["batch-00000.npz", "batch-00001.npz", "batch-00002.npz", "stream.json"]
    assert json.loads(read_uri(uri + "/stream.json", s3_store_config))["drifted_batches"] == [1]
    assert manifest["batch_size"] == 8
    with pytest.raises(DataError, match="store configuration"):
        write_stream(iter(()), "s3://bucket/x")

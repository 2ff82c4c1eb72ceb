"""Reading batches from paths and S3, unreadable and missing files, and quarantine (local and S3)."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from tasks.data import rules as R
from tasks.data import validation as V
from tasks.data.config import ValidationConfig
from tasks.data.dataset import Dataset
from tasks.data.quarantine import quarantine
from tasks.data.report import ValidationReport, read_report
from tasks.data.schema import infer_schema
from tasks.data.sources import parse_bytes, to_npz_bytes
from tasks.data.validation import load_batch_from_uri, validate_batch, validate_or_quarantine
from tasks.errors import ObjectNotFound, StoreError, ValidationFailed
from tasks.store.backends import open_backend, write_uri

from .conftest import frame_bytes

CFG = ValidationConfig()


@pytest.fixture
def table_schema(table):
    return infer_schema(parse_bytes(frame_bytes(table, ".csv"), "train.csv"))


def _write(tmp_path, name, data: bytes) -> str:
    p = tmp_path / name
    p.write_bytes(data)
    return str(p)


def _digits_npz(splits, n=80):
    t = splits.test
    return to_npz_bytes(Dataset(t.x[:n], t.y[:n]))


def test_clean_files_load_and_pass(tmp_path, local_store_config, digits_splits, digits_schema, table, table_schema):
    uri = _write(tmp_path, "clean.npz", _digits_npz(digits_splits))
    ds, raw, err = load_batch_from_uri(uri, local_store_config)
    assert err is None and raw == (tmp_path / "clean.npz").read_bytes()
    assert ds.meta["batch_id"].startswith("clean-")
    assert validate_batch(ds, digits_schema, CFG, ds.meta["batch_id"]).passed
    for suffix in (".csv", ".parquet"):
        uri = "file://" + _write(tmp_path, "clean" + suffix, frame_bytes(table.tail(50), suffix))
        ds, raw, err = load_batch_from_uri(uri, local_store_config)
        assert err is None
        r = validate_batch(ds, table_schema, CFG, "b")
        assert r.passed, r.to_text()


def test_missing_file(tmp_path, local_store_config):
    uri = str(tmp_path / "nope.csv")
    ds, raw, err = load_batch_from_uri(uri, local_store_config, batch_id="day-3")
    assert ds is None and raw is None
    assert err.rules == [R.RULE_MISSING_FILE] and err.get(R.RULE_MISSING_FILE).count == 1
    assert err.batch_id == "day-3" and "nope.csv" in err.get(R.RULE_MISSING_FILE).message
    assert not err.passed


@pytest.mark.parametrize("name, cut", [("trunc.npz", 0.5), ("trunc.parquet", 0.5), ("empty.npz", 0.0)])
def test_unreadable_or_truncated_file(tmp_path, local_store_config, digits_splits, table, name, cut):
    full = _digits_npz(digits_splits) if name.endswith(".npz") else frame_bytes(table, ".parquet")
    data = full[: int(len(full) * cut)]
    uri = _write(tmp_path, name, data)
    ds, raw, err = load_batch_from_uri(uri, local_store_config)
    assert ds is None and raw == data
    assert err.rules == [R.RULE_UNREADABLE_FILE] and err.get(R.RULE_UNREADABLE_FILE).count == 1
    assert name in err.get(R.RULE_UNREADABLE_FILE).message


def test_unsupported_suffix_is_unreadable(tmp_path, local_store_config):
    _, raw, err = load_batch_from_uri(_write(tmp_path, "batch.xlsx", b"PK\x03\x04"), local_store_config)
    assert err.rules == [R.RULE_UNREADABLE_FILE] and raw == b"PK\x03\x04"


def test_strings_in_a_csv_column(tmp_path, local_store_config, table, table_schema):
    b = table.head(30).copy()
    b["score"] = b["score"].astype(object)
    b.loc[4, "score"] = "high"
    b.loc[9, "score"] = "low"
    uri = _write(tmp_path, "strings.csv", frame_bytes(b, ".csv"))
    ds, raw, err = load_batch_from_uri(uri, local_store_config)
    assert err is None  # readable: the type problem is a validation rule
    r = validate_batch(ds, table_schema, CFG, "strings")
    assert r.rules == [R.RULE_DTYPE_MISMATCH]
    v = r.get(R.RULE_DTYPE_MISMATCH)
    assert v.count == 2 and "score" in v.message
    assert [(e["row"], e["feature"], e["value"]) for e in v.examples] == [(4, "score", "high"), (9, "score", "low")]


def test_label_problems_in_files(tmp_path, local_store_config, table, table_schema):
    b = table.head(30).drop(columns=["label"])
    ds, _, err = load_batch_from_uri(_write(tmp_path, "nolabel.csv", frame_bytes(b, ".csv")), local_store_config)
    r = validate_batch(ds, table_schema, CFG, "nolabel")
    assert r.rules == [R.RULE_MISSING_LABEL] and r.get(R.RULE_MISSING_LABEL).count == 30
    b = table.head(30).copy()
    b["label"] = b["label"].astype(object)
    b.loc[2, "label"] = None
    b.loc[3, "label"] = "cat"
    b.loc[5, "label"] = 7
    ds, _, err = load_batch_from_uri(_write(tmp_path, "labels.csv", frame_bytes(b, ".csv")), local_store_config)
    r = validate_batch(ds, table_schema, CFG, "labels")
    assert r.get(R.RULE_MISSING_LABEL).count == 1
    assert r.get(R.RULE_UNKNOWN_LABEL).count == 2
    assert [e["row"] for e in r.get(R.RULE_UNKNOWN_LABEL).examples] == [3, 5]


def test_new_column_in_a_parquet_file(tmp_path, local_store_config, table, table_schema):
    b = table.head(30).copy()
    b["extra"] = 0.5
    ds, _, err = load_batch_from_uri(_write(tmp_path, "new.parquet", frame_bytes(b, ".parquet")), local_store_config)
    r = validate_batch(ds, table_schema, CFG, "new")
    assert r.rules == [R.RULE_SHAPE_MISMATCH]
    assert r.get(R.RULE_SHAPE_MISMATCH).examples == [{"column": "extra", "problem": "new"}]


def test_npz_object_arrays_are_never_unpickled(tmp_path, local_store_config):
    buf = io.BytesIO()
    np.savez(buf, x=np.array([[1.0, {"a": 1}]], dtype=object), y=np.array([0]))
    _, _, err = load_batch_from_uri(_write(tmp_path, "pickled.npz", buf.getvalue()), local_store_config)
    assert err.rules == [R.RULE_UNREADABLE_FILE]


# ------------------------------------------------------------------------------- quarantine


def _failed_report(digits_splits, digits_schema, bid="bad-1"):
    x, y = digits_splits.test.x[:40].copy(), digits_splits.test.y[:40]
    x[0, 0, 1, 1] = np.nan
    return validate_batch((x, y), digits_schema, CFG, bid)


def test_quarantine_local(tmp_path, local_store_config, digits_splits, digits_schema):
    backend = open_backend(local_store_config)
    report = _failed_report(digits_splits, digits_schema)
    raw = b"\x00raw batch bytes\xff" * 100
    uri = quarantine(backend, "bad-1", raw, "s3://in/coming/day 1.npz", report)
    assert uri == backend.url("quarantine/bad-1") and uri.startswith("file://")
    assert backend.list("quarantine/bad-1/") == ["quarantine/bad-1/day_1.npz", "quarantine/bad-1/report.json"]
    assert backend.get_bytes("quarantine/bad-1/day_1.npz") == raw
    stored = ValidationReport.from_json(backend.get_bytes("quarantine/bad-1/report.json"))
    assert stored.rules == [R.RULE_NON_FINITE] and stored.violations == report.violations
    assert stored.quarantine["raw_key"] == "quarantine/bad-1/day_1.npz"
    assert stored.quarantine["raw_bytes"] == len(raw) and stored.quarantine["uri"] == uri
    # A retry with the same bytes is idempotent; other bytes under the same id never overwrite.
    assert quarantine(backend, "bad-1", raw, "s3://in/coming/day 1.npz", report) == uri
    uri2 = quarantine(backend, "bad-1", raw + b"!", "s3://in/coming/day 1.npz", report)
    assert uri2 == backend.url("quarantine/bad-1-1")
    assert backend.get_bytes("quarantine/bad-1/day_1.npz") == raw
    assert backend.get_bytes("quarantine/bad-1-1/day_1.npz") == raw + b"!"


def test_quarantine_without_raw_bytes(local_store_config):
    backend = open_backend(local_store_config)
    report = read_report("gone-1", "s3://b/gone.csv", R.RULE_MISSING_FILE, "no such file")
    uri = quarantine(backend, "gone-1", None, "s3://b/gone.csv", report)
    assert backend.list("quarantine/") == ["quarantine/gone-1/report.json"]
    stored = json.loads(backend.get_bytes("quarantine/gone-1/report.json"))
    assert stored["violations"][0]["rule"] == "missing_file" and stored["quarantine"]["raw_key"] is None
    assert uri.endswith("quarantine/gone-1")


def test_validate_or_quarantine_local(tmp_path, local_store_config, digits_splits, digits_schema):
    good = _write(tmp_path, "good.npz", _digits_npz(digits_splits))
    out = validate_or_quarantine(good, digits_schema, CFG, local_store_config)
    assert out.report.passed and out.dataset.x.dtype == np.float32 and out.dataset.x.shape[1:] == (1, 8, 8)
    assert not open_backend(local_store_config).list("quarantine/")

    t = digits_splits.test
    x = t.x[:60].copy()
    x[2, 0, 3, 3] = 9.0
    bad_bytes = to_npz_bytes(Dataset(x, t.y[:60]))
    bad = _write(tmp_path, "bad.npz", bad_bytes)
    with pytest.raises(ValidationFailed) as ei:
        validate_or_quarantine(bad, digits_schema, CFG, local_store_config, batch_id="day-7")
    e = ei.value
    assert "out_of_range" in str(e) and e.quarantine_uri in str(e)
    backend = open_backend(local_store_config)
    assert backend.get_bytes("quarantine/day-7/bad.npz") == bad_bytes
    assert backend.exists("quarantine/day-7/report.json")
    assert e.report.rules == [R.RULE_OUT_OF_RANGE]

    # A missing file is quarantined (report only), not a crash.
    with pytest.raises(ValidationFailed, match="missing_file"):
        validate_or_quarantine(str(tmp_path / "absent.npz"), digits_schema, CFG, local_store_config, batch_id="absent")
    assert backend.list("quarantine/absent/") == ["quarantine/absent/report.json"]

    # An in-memory batch without raw bytes is quarantined as npz (object arrays as text).
    xs = t.x[:30].reshape(30, -1).astype(object)
    xs[1, 1] = "oops"
    with pytest.raises(ValidationFailed, match="dtype_mismatch"):
        validate_or_quarantine(
            Dataset(xs, t.y[:30], name="mem"), digits_schema, CFG, local_store_config, batch_id="mem-1"
        )
    with np.load(io.BytesIO(backend.get_bytes("quarantine/mem-1/mem-1.npz")), allow_pickle=False) as z:
        assert z["x"][1, 1] == "oops"


def test_validation_disabled_only_conforms(tmp_path, local_store_config, digits_splits, digits_schema):
    t = digits_splits.test
    x = t.x[:30].reshape(30, -1).copy()
    x[0, 0] = 5.0
    out = validate_or_quarantine(
        Dataset(x, t.y[:30]), digits_schema, ValidationConfig(enabled=False), local_store_config, batch_id="off"
    )
    assert out.report.passed and out.dataset.x.shape == (30, 1, 8, 8)


# ------------------------------------------------------------------------------- S3


def test_s3_missing_bucket(s3_store_config):
    uri = "s3://no-such-bucket-driftloop/batches/day1.npz"
    ds, raw, err = load_batch_from_uri(uri, s3_store_config)
    assert ds is None and raw is None
    assert err.rules == [R.RULE_MISSING_FILE]
    assert "no-such-bucket-driftloop" in err.get(R.RULE_MISSING_FILE).message


def test_s3_missing_key_then_read_and_quarantine(s3_store_config, digits_splits, digits_schema):
    bucket = s3_store_config.uri.split("/")[2]
    uri = f"s3://{bucket}/incoming/day2.npz"
    _, _, err = load_batch_from_uri(uri, s3_store_config)
    assert err.rules == [R.RULE_MISSING_FILE] and "day2.npz" in err.get(R.RULE_MISSING_FILE).message

    t = digits_splits.test
    y = t.y[:50].copy()
    y[7] = 99
    data = to_npz_bytes(Dataset(t.x[:50], y))
    write_uri(uri, data, s3_store_config)
    with pytest.raises(ValidationFailed, match="unknown_label") as ei:
        validate_or_quarantine(uri, digits_schema, CFG, s3_store_config, batch_id="day-2")
    q = ei.value.quarantine_uri
    assert q == f"s3://{bucket}/driftloop/quarantine/day-2"
    backend = open_backend(s3_store_config)
    assert backend.list("quarantine/") == ["quarantine/day-2/day2.npz", "quarantine/day-2/report.json"]
    assert backend.get_bytes("quarantine/day-2/day2.npz") == data
    stored = ValidationReport.from_json(backend.get_bytes("quarantine/day-2/report.json"))
    assert stored.get(R.RULE_UNKNOWN_LABEL).count == 1 and stored.source == uri


def test_s3_store_unreachable_is_an_error_not_a_report(s3_store_config):
    cfg = s3_store_config.model_copy(update={"endpoint_url": "http://127.0.0.1:9", "max_attempts": 1})
    with pytest.raises(StoreError) as ei:
        load_batch_from_uri("s3://whatever/b.npz", cfg)
    assert not isinstance(ei.value, ObjectNotFound)


def test_reading_a_missing_file_reports_without_quarantine(tmp_path, local_store_config):
    ds, raw, r = V.load_batch_from_uri(str(tmp_path / "gone.npz"), local_store_config, batch_id="g")
    assert ds is None and raw is None and r.rules == [R.RULE_MISSING_FILE] and r.batch_id == "g"
    assert not open_backend(local_store_config).list("")


def test_bad_batch_id_is_refused_before_reading(tmp_path, local_store_config, digits_schema):
    from tasks.errors import DataError

    with pytest.raises(DataError, match="batch id"):
        load_batch_from_uri(str(tmp_path / "x.npz"), local_store_config, batch_id="a/b")
    with pytest.raises(DataError, match="batch id"):
        validate_or_quarantine(str(tmp_path / "x.npz"), digits_schema, CFG, local_store_config, batch_id="../up")
    assert not (tmp_path / "store").exists()

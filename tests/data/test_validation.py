"""Each validation rule, triggered by a crafted bad batch (in memory), with its name and count;
and clean held-out batches that must pass."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from tasks.data import quarantine as Q
from tasks.data import rules as R
from tasks.data import validation as V
from tasks.data.config import ValidationConfig
from tasks.data.dataset import Dataset
from tasks.data.report import ValidationReport
from tasks.data.schema import infer_schema
from tasks.data.sources import parse_bytes, split_dataset
from tasks.data.validation import conform, validate_batch
from tasks.errors import DataError

from .conftest import frame_bytes, make_table

CFG = ValidationConfig()


def _batch(splits, n=60, start=0):
    t = splits.test
    return t.x[start : start + n].copy(), t.y[start : start + n].copy()


def test_rule_names_are_distinct_constants():
    assert len(set(R.ALL_RULES)) == len(R.ALL_RULES) == 14
    assert R.RULE_NON_FINITE == "non_finite" and R.RULE_MISSING_FILE == "missing_file"


def test_clean_heldout_digits_pass(digits_splits, digits_schema):
    for part in (digits_splits.val, digits_splits.test):
        r = validate_batch(part, digits_schema, CFG, "clean")
        assert r.passed, r.to_text()
        assert r.violations == [] and r.rows == len(part)
        assert set(r.rules_checked) >= {R.RULE_NON_FINITE, R.RULE_OUT_OF_RANGE, R.RULE_FEATURE_SHIFT}
    # Random held-out batches of many sizes: no false alarms.
    held = np.concatenate([digits_splits.val.x, digits_splits.test.x])
    held_y = np.concatenate([digits_splits.val.y, digits_splits.test.y])
    rng = np.random.default_rng(0)
    for i in range(40):
        n = int(rng.integers(5, 300))
        idx = rng.choice(len(held), n, replace=False)
        r = validate_batch((held[idx], held_y[idx]), digits_schema, CFG, f"b{i}")
        assert r.passed, r.to_text()
        if n >= CFG.shift_min_rows:
            assert r.stats["mean_shift"] < CFG.max_mean_shift / 5


def test_clean_heldout_table_passes():
    ds = parse_bytes(_csv(make_table(600, seed=3)), "t.csv")
    sp = split_dataset(ds, 7, 0.15, 0.2)
    schema = infer_schema(sp.train)
    for part in (sp.val, sp.test):
        r = validate_batch(part, schema, CFG, "clean")
        assert r.passed, r.to_text()


def _csv(df):
    return frame_bytes(df, ".csv")


def test_nan_and_inf(digits_splits, digits_schema):
    x, y = _batch(digits_splits)
    x[3, 0, 2, 2] = np.nan
    x[5, 0, 1, 1] = np.inf
    x[5, 0, 1, 2] = -np.inf
    r = validate_batch((x, y), digits_schema, CFG, "nonfinite")
    assert not r.passed and r.rules == [R.RULE_NON_FINITE]
    v = r.get(R.RULE_NON_FINITE)
    assert v.count == 3
    assert {(e["row"], e["feature"]) for e in v.examples} == {(3, "18"), (5, "9"), (5, "10")}
    assert {e["value"] for e in v.examples} == {"nan", "inf", "-inf"}
    json.loads(r.to_json())  # NaN examples are still valid JSON


def test_nan_tolerated_where_training_had_missing_values():
    x = np.random.default_rng(0).normal(size=(100, 2))
    x[::10, 1] = np.nan
    schema = infer_schema(Dataset(x=x, y=np.arange(100) % 2, feature_names=["a", "b"]))
    assert schema.missing_values == {"b": 10}
    b = x[:30].copy()
    r = validate_batch((b, np.arange(30) % 2), schema, CFG, "ok")
    assert r.passed, r.to_text()
    b[4, 0] = np.nan
    r = validate_batch((b, np.arange(30) % 2), schema, CFG, "bad")
    assert r.rules == [R.RULE_NON_FINITE] and r.get(R.RULE_NON_FINITE).count == 1


def test_wrong_shape(digits_splits, digits_schema):
    x, y = _batch(digits_splits)
    r = validate_batch((x.reshape(len(x), -1)[:, :60], y), digits_schema, CFG, "shape")
    assert r.rules == [R.RULE_SHAPE_MISMATCH]
    assert r.get(R.RULE_SHAPE_MISMATCH).count == len(x)
    assert "(1, 8, 8)" in r.get(R.RULE_SHAPE_MISMATCH).message
    r = validate_batch((x.reshape(len(x), 1, 4, 16), y), digits_schema, CFG, "shape2")
    assert r.rules == [R.RULE_SHAPE_MISMATCH]
    # The same 64 features laid out flat are the same data: accepted.
    r = validate_batch((x.reshape(len(x), -1), y), digits_schema, CFG, "flat")
    assert r.passed, r.to_text()


def test_wrong_dtype(digits_splits, digits_schema):
    x, y = _batch(digits_splits, n=30)
    xs = x.reshape(30, -1).astype(object)
    xs[2, 5] = "abc"
    xs[7, 9] = "n/a"
    r = validate_batch((xs, y), digits_schema, CFG, "dtype")
    assert r.rules == [R.RULE_DTYPE_MISMATCH]
    v = r.get(R.RULE_DTYPE_MISMATCH)
    assert v.count == 2
    assert [(e["row"], e["feature"], e["value"]) for e in v.examples] == [(2, "5", "abc"), (7, "9", "n/a")]
    # Numbers stored as text are still the wrong type.
    r = validate_batch((x.astype(str), y), digits_schema, CFG, "text")
    assert r.rules == [R.RULE_DTYPE_MISMATCH] and r.get(R.RULE_DTYPE_MISMATCH).count == x.size
    r = validate_batch((x > 0.5, y), digits_schema, CFG, "bool")
    assert r.rules == [R.RULE_DTYPE_MISMATCH]
    # An object array of plain floats is numeric.
    r = validate_batch((x.astype(np.float64).astype(object), y), digits_schema, CFG, "obj")
    assert r.passed, r.to_text()


def test_out_of_range_overall_scope(digits_splits, digits_schema):
    x, y = _batch(digits_splits)
    x[1, 0, 3, 3] = 1.5
    x[2, 0, 4, 4] = -0.2
    r = validate_batch((x, y), digits_schema, CFG, "range")
    assert r.rules == [R.RULE_OUT_OF_RANGE]
    v = r.get(R.RULE_OUT_OF_RANGE)
    assert v.count == 2 and "overall" in v.message
    assert v.examples[0] == {"row": 1, "feature": "27", "value": 1.5, "allowed_min": 0.0, "allowed_max": 1.0}
    # With a tolerance of 60% of the span, 1.5 and -0.2 are inside.
    r = validate_batch((x, y), digits_schema, ValidationConfig(range_tolerance=0.6), "tol")
    assert r.passed, r.to_text()
    # An edge pixel never lit in training but inside [0, 1] is fine in the overall scope
    # (images), and out of range in the per-feature scope.
    x, y = _batch(digits_splits)
    x[0, 0, 0, 0] = 0.5
    assert validate_batch((x, y), digits_schema, CFG, "edge").passed
    r = validate_batch((x, y), digits_schema, ValidationConfig(range_scope="feature"), "edge2")
    assert r.rules == [R.RULE_OUT_OF_RANGE]
    assert r.get(R.RULE_OUT_OF_RANGE).examples[0] == {
        "row": 0,
        "feature": "0",
        "value": 0.5,
        "allowed_min": 0.0,
        "allowed_max": 0.0,
    }


def test_out_of_range_feature_scope(table):
    schema = infer_schema(parse_bytes(_csv(table), "t.csv"))
    b = table.head(40).copy()
    b.loc[3, "age"] = 200  # far above 90 + 25% of the span
    b.loc[5, "ratio"] = -5.0
    b.loc[6, "ratio"] = 1.1  # inside [0, 1] widened by 25%
    r = validate_batch(parse_bytes(_csv(b), "b.csv"), schema, CFG, "range")
    assert r.rules == [R.RULE_OUT_OF_RANGE]
    v = r.get(R.RULE_OUT_OF_RANGE)
    assert v.count == 2 and "feature scope" in v.message
    assert {(e["row"], e["feature"]) for e in v.examples} == {(3, "age"), (5, "ratio")}
    r = validate_batch(parse_bytes(_csv(b), "b.csv"), schema, ValidationConfig(range_tolerance=0.0), "strict")
    assert r.get(R.RULE_OUT_OF_RANGE).count == 3


def test_unknown_and_missing_labels(digits_splits, digits_schema):
    x, y = _batch(digits_splits)
    y[4] = 10
    y[9] = -1
    r = validate_batch((x, y), digits_schema, CFG, "labels")
    assert r.rules == [R.RULE_UNKNOWN_LABEL]
    v = r.get(R.RULE_UNKNOWN_LABEL)
    assert v.count == 2 and [e["row"] for e in v.examples] == [4, 9]
    yf = y.astype(np.float64)
    yf[4], yf[9], yf[11] = np.nan, 2.5, np.nan
    r = validate_batch((x, yf), digits_schema, CFG, "labels2")
    assert r.get(R.RULE_MISSING_LABEL).count == 2
    assert r.get(R.RULE_UNKNOWN_LABEL).count == 1
    r = validate_batch((x, None), digits_schema, CFG, "nolabels")
    assert r.rules == [R.RULE_MISSING_LABEL] and r.get(R.RULE_MISSING_LABEL).count == len(x)


def test_empty_batch(digits_splits, digits_schema):
    r = validate_batch((digits_splits.test.x[:0], digits_splits.test.y[:0]), digits_schema, CFG, "empty")
    assert r.rules == [R.RULE_EMPTY_BATCH] and r.rows == 0 and not r.passed
    assert r.rules_checked == [R.RULE_EMPTY_BATCH]


def test_duplicate_rows(digits_splits, digits_schema):
    x, y = _batch(digits_splits, n=40)
    x[10:14] = x[0]
    r = validate_batch((x, y), digits_schema, CFG, "dups")
    assert r.rules == [R.RULE_DUPLICATE_ROWS]
    v = r.get(R.RULE_DUPLICATE_ROWS)
    assert v.count == 4 and r.stats["duplicate_fraction"] == pytest.approx(0.1)
    assert v.examples[0] == {"row": 10, "duplicate_of": 0}
    # Two repeats in 40 rows (5%) are tolerated.
    x, y = _batch(digits_splits, n=40)
    x[10:12] = x[0]
    assert validate_batch((x, y), digits_schema, CFG, "fine").passed


def test_new_and_missing_columns(table):
    schema = infer_schema(parse_bytes(_csv(table), "t.csv"))
    b = table.head(30).copy()
    b["height"] = 1.0
    r = validate_batch(parse_bytes(_csv(b), "b.csv"), schema, CFG, "newcol")
    assert r.rules == [R.RULE_SHAPE_MISMATCH]
    assert r.get(R.RULE_SHAPE_MISMATCH).count == 1
    assert r.get(R.RULE_SHAPE_MISMATCH).examples == [{"column": "height", "problem": "new"}]
    b = table.head(30).drop(columns=["score"])
    r = validate_batch(parse_bytes(_csv(b), "b.csv"), schema, CFG, "dropcol")
    assert r.get(R.RULE_SHAPE_MISMATCH).examples == [{"column": "score", "problem": "missing"}]
    # Reordered columns are the same table.
    b = table.head(30)[["ratio", "label", "age", "score"]]
    r = validate_batch(parse_bytes(_csv(b), "b.csv"), schema, CFG, "reordered")
    assert r.passed, r.to_text()
    c = conform(parse_bytes(_csv(b), "b.csv"), schema)
    np.testing.assert_allclose(c.x[:, 0], table.head(30)["age"].to_numpy())
    assert c.feature_names == ["age", "score", "ratio"] and c.x.dtype == np.float32
    # Columns already in schema order are checked and conformed without a copy of the batch.
    same = Dataset(
        x=table.head(30)[["age", "score", "ratio"]].to_numpy(np.float32, copy=True),
        y=np.zeros(30, int),
        name="same",
        feature_names=["age", "score", "ratio"],
    )
    assert np.shares_memory(R.align_structure(same, schema, R.Collector(5)), same.x)
    assert np.shares_memory(conform(same, schema).x, same.x)
    moved = Dataset(x=same.x[:, [2, 0, 1]].copy(), y=same.y, name="moved", feature_names=["ratio", "age", "score"])
    np.testing.assert_array_equal(R.align_structure(moved, schema, R.Collector(5)), same.x)
    np.testing.assert_array_equal(conform(moved, schema).x, same.x)


def test_gross_shift(digits_splits, digits_schema):
    x, y = _batch(digits_splits, n=50)
    r = validate_batch((1.0 - x, y), digits_schema, CFG, "inverted")  # still inside [0, 1]
    assert r.rules == [R.RULE_FEATURE_SHIFT]
    v = r.get(R.RULE_FEATURE_SHIFT)
    assert r.stats["mean_shift"] > CFG.max_mean_shift
    assert v.count >= 10 and v.examples[0]["shift"] > CFG.max_mean_shift
    # Too few rows for a mean to mean anything: the rule does not apply.
    r = validate_batch((1.0 - x[:10], y[:10]), digits_schema, CFG, "small")
    assert r.passed and R.RULE_FEATURE_SHIFT not in r.rules_checked
    r = validate_batch((1.0 - x, y), digits_schema, ValidationConfig(max_mean_shift=100.0), "loose")
    assert r.passed


def test_several_rules_at_once(digits_splits, digits_schema):
    x, y = _batch(digits_splits)
    x[0, 0, 0, 1] = np.nan
    x[1, 0, 0, 2] = 7.0
    y[2] = 42
    r = validate_batch((x, y), digits_schema, ValidationConfig(max_examples=1), "many")
    assert set(r.rules) == {R.RULE_NON_FINITE, R.RULE_OUT_OF_RANGE, R.RULE_UNKNOWN_LABEL}
    assert all(len(v.examples) <= 1 for v in r.violations)


def test_report_json_and_text(digits_splits, digits_schema):
    x, y = _batch(digits_splits)
    x[1, 0, 2, 2] = 3.0
    r = validate_batch((x, y), digits_schema, CFG, "rep-1", source="s3://b/new/batch.npz")
    back = ValidationReport.from_json(r.to_json())
    assert back == r
    assert back.schema_fingerprint == digits_schema.fingerprint
    text = r.to_text()
    assert "FAILED" in text and "out_of_range" in text and "rep-1" in text and "s3://b/new/batch.npz" in text
    ok = validate_batch(digits_splits.val, digits_schema, CFG, "ok")
    assert "PASSED" in ok.to_text()
    with pytest.raises(DataError):
        ValidationReport.from_json("[]")


def test_bad_batch_id_is_refused(digits_splits, digits_schema):
    with pytest.raises(DataError, match="batch id"):
        validate_batch(digits_splits.val, digits_schema, CFG, "../escape")


def test_batch_id_for_is_stable():
    a = Q.batch_id_for("s3://bucket/incoming/day 1.csv", b"abc")
    assert a == Q.batch_id_for("s3://bucket/incoming/day 1.csv", b"abc")
    assert a.startswith("day-1-") and a != Q.batch_id_for("x/day 1.csv", b"abd")
    assert Q._BATCH_ID_RE.match(a)


def test_rule_classes_integrity_versus_distribution():
    assert R.DISTRIBUTION_RULES == {R.RULE_OUT_OF_RANGE, R.RULE_FEATURE_SHIFT}
    assert R.INTEGRITY_RULES | R.DISTRIBUTION_RULES == set(R.ALL_RULES)
    assert R.rule_class(R.RULE_NON_FINITE) == "integrity" and R.rule_class(R.RULE_OUT_OF_RANGE) == "distribution"
    with pytest.raises(DataError, match="unknown validation rule"):
        R.rule_class("no_such_rule")


def test_distribution_findings_are_evidence_not_failures(digits_splits, digits_schema):
    x, y = _batch(digits_splits, n=50)
    scaled = x * 3.0 + 1.0  # brighter and scaled up: out of the training range and shifted
    strict = validate_batch((scaled, y), digits_schema, CFG, "scaled")
    assert not strict.passed and set(strict.rules) == {R.RULE_OUT_OF_RANGE, R.RULE_FEATURE_SHIFT}
    lenient = validate_batch((scaled, y), digits_schema, CFG, "scaled", distribution="evidence")
    assert lenient.passed and lenient.violations == []
    assert [e.rule for e in lenient.evidence] == [R.RULE_OUT_OF_RANGE, R.RULE_FEATURE_SHIFT]
    assert "(drift evidence)" in lenient.to_text()
    # Integrity still fails in evidence mode, with the evidence kept beside it.
    scaled[0, 0, 0, 0] = np.nan
    r = validate_batch((scaled, y), digits_schema, CFG, "scaled-nan", distribution="evidence")
    assert not r.passed and r.rules == [R.RULE_NON_FINITE] and r.evidence


def test_unlabelled_batches_npz_and_csv(digits_splits, digits_schema, tmp_path):
    from tasks.store.config import StoreConfig

    x, _ = _batch(digits_splits)
    r = validate_batch((x, None), digits_schema, CFG, "nolabels", labels="optional")
    assert r.passed and not r.labelled and R.RULE_MISSING_LABEL not in r.rules_checked
    path = tmp_path / "only-x.npz"
    np.savez(path, x=x)
    store = StoreConfig(uri=str(tmp_path / "store"))
    vb = V.validate_or_quarantine(str(path), digits_schema, CFG, store, labels="optional")
    assert not vb.report.labelled and vb.dataset.meta["labelled"] is False and (vb.dataset.y == -1).all()
    with pytest.raises(Exception, match="missing_label"):
        V.validate_or_quarantine(str(path), digits_schema, CFG, store)  # labels required by default
    # A table without the label column; a labelled table still gets its label rules.
    table = make_table(40, seed=3)
    schema = infer_schema(parse_bytes(frame_bytes(table, ".csv"), "t.csv"))
    (tmp_path / "nolabel.csv").write_bytes(frame_bytes(table.drop(columns=["label"]), ".csv"))
    ds, _, _ = V.load_batch_from_uri(str(tmp_path / "nolabel.csv"), store)
    r = validate_batch(ds, schema, CFG, ds.meta["batch_id"], "nolabel.csv", labels="optional")
    assert r.passed and not r.labelled
    bad = table.copy()
    bad.loc[0, "label"] = 99
    (tmp_path / "badlabel.csv").write_bytes(frame_bytes(bad, ".csv"))
    ds, _, _ = V.load_batch_from_uri(str(tmp_path / "badlabel.csv"), store)
    r = validate_batch(ds, schema, CFG, ds.meta["batch_id"], "badlabel.csv", labels="optional")
    assert r.labelled and r.rules == [R.RULE_UNKNOWN_LABEL]


def test_one_parser_strict_for_training_lenient_for_validation(digits_splits):
    # Validation reads files with sources.parse_bytes(lenient=True), not a parser of its own: it
    # keeps what training refuses (text features, absent or non-integer labels) for a rule to name.
    from tasks.data.sources import NO_LABELS

    table = make_table(20, seed=4)
    table["age"] = table["age"].astype(str)
    table.loc[2, "age"] = "old"
    raw = frame_bytes(table.drop(columns=["label"]), ".csv")
    with pytest.raises(DataError, match=r"t\.csv: label column 'label' not found"):
        parse_bytes(raw, "t.csv")
    ds = parse_bytes(raw, "t.csv", lenient=True)
    assert ds.meta[NO_LABELS] and np.isnan(ds.y).all() and ds.x.dtype == object
    assert ds.feature_names == ["age", "score", "ratio"] and ds.x[2, 0] == "old"
    half = make_table(20, seed=4)
    half["label"] = half["label"] + 0.5
    with pytest.raises(DataError, match=r"t\.csv: label column 'label'"):
        parse_bytes(frame_bytes(half, ".csv"), "t.csv")
    assert parse_bytes(frame_bytes(half, ".csv"), "t.csv", lenient=True).y[0] % 1 == 0.5
    x, _ = _batch(digits_splits)
    buf = io.BytesIO()
    np.savez(buf, x=x)
    with pytest.raises(DataError, match=r"b\.npz: npz must hold arrays 'x' and 'y'; missing \['y'\]"):
        parse_bytes(buf.getvalue(), "b.npz")
    ds = parse_bytes(buf.getvalue(), "b.npz", lenient=True)
    assert ds.meta[NO_LABELS] and ds.x.shape == x.shape and len(ds.y) == len(x)
    # Bytes that are no file at all stay unreadable, with the strict parser's message naming the file.
    ds, _, report = V.parse_batch_bytes(b"\x00garbage", "s3://b/day.npz")
    assert ds is None and report.rules == [R.RULE_UNREADABLE_FILE] and "s3://b/day.npz" in report.violations[0].message

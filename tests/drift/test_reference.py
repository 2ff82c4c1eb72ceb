import json

import numpy as np
import pytest

from tasks.drift.detectors import build_detectors, check_batch
from tasks.drift.reference import JSON_NAME, NPZ_NAME, build_reference, reference_from_files, reference_to_files
from tasks.drift.stream import simulate_stream
from tasks.errors import DataError


def test_round_trip_through_bytes_rebuilds_identical_detectors(drift_reference, digits_model, digits_splits):
    files = reference_to_files(drift_reference)
    assert set(files) == {NPZ_NAME, JSON_NAME} and all(isinstance(v, bytes) for v in files.values())
    back = reference_from_files(files)
    for k in ("x", "probs", "embeddings"):
        np.testing.assert_array_equal(getattr(back, k), getattr(drift_reference, k))
    assert back.config == drift_reference.config and back.seed == 7 and back.meta["version"] == 1
    assert set(back.calibration) == {"mmd_online", "cvm_online"}
    np.testing.assert_array_equal(
        back.calibration["mmd_online"]["thresholds"], drift_reference.calibration["mmd_online"]["thresholds"]
    )
    b = next(iter(simulate_stream(digits_splits, "none", n_batches=1, batch_size=60, seed=2)))
    r1 = check_batch(drift_reference, b.x, digits_model, build_detectors(drift_reference), batch_id="b")
    r2 = check_batch(back, b.x, digits_model, build_detectors(back), batch_id="b")
    assert [(r.detector, r.drift, r.p_value, round(r.statistic, 6)) for r in r1] == [
        (r.detector, r.drift, r.p_value, round(r.statistic, 6)) for r in r2
    ]


def test_reference_is_seeded_and_sized(digits_model, digits_splits):
    from tasks.drift.config import DriftConfig

    cfg = DriftConfig(detectors=["ks_softmax"], reference_size=50)
    a = build_reference(digits_model, digits_splits.val.x, cfg, seed=1)
    b = build_reference(digits_model, digits_splits.val.x, cfg, seed=1)
    c = build_reference(digits_model, digits_splits.val.x, cfg, seed=2)
    assert len(a) == 50 and a.probs.shape == (50, 10) and a.embeddings.shape == (50, 32)
    np.testing.assert_array_equal(a.x, b.x)
    assert not np.array_equal(a.x, c.x)
    np.testing.assert_allclose(a.probs.sum(1), 1.0, rtol=1e-5)
    with pytest.raises(DataError, match="non-empty"):
        build_reference(digits_model, digits_splits.val.x[:0], cfg, seed=1)


def test_damaged_or_missing_files_are_named(drift_reference):
    files = reference_to_files(drift_reference)
    with pytest.raises(DataError, match="missing.*drift_reference.npz"):
        reference_from_files({JSON_NAME: files[JSON_NAME]})
    doc = json.loads(files[JSON_NAME])
    doc["arrays"]["probs"]["sha256"] = "0" * 64
    with pytest.raises(DataError, match="array 'probs' differs"):
        reference_from_files({NPZ_NAME: files[NPZ_NAME], JSON_NAME: json.dumps(doc).encode()})
    doc = json.loads(files[JSON_NAME])
    doc["config"]["detectors"] = ["chi2"]
    with pytest.raises(DataError, match="invalid detector configuration"):
        reference_from_files({NPZ_NAME: files[NPZ_NAME], JSON_NAME: json.dumps(doc).encode()})
    with pytest.raises(DataError, match="cannot be read as npz"):
        reference_from_files({NPZ_NAME: b"not an npz", JSON_NAME: files[JSON_NAME]})


def test_a_list_of_inputs_is_their_concatenation_without_building_it(digits_model, digits_splits):
    # The pipeline builds a reference from the validation and test splits: as a list they give the
    # same reference (rows, labels, calibration) as their concatenation, which is never made.
    from tasks.drift.config import DriftConfig

    cfg = DriftConfig(detectors=["ks_softmax"], reference_size=120)
    sp = digits_splits
    whole = build_reference(
        digits_model, np.concatenate([sp.val.x, sp.test.x]), cfg, seed=3, y_inputs=np.concatenate([sp.val.y, sp.test.y])
    )
    parts = build_reference(digits_model, [sp.val.x, sp.test.x], cfg, seed=3, y_inputs=[sp.val.y, sp.test.y])
    for k in ("x", "probs", "embeddings", "y"):
        np.testing.assert_array_equal(getattr(parts, k), getattr(whole, k))
    assert parts.meta["sample_indices_sha256"] == whole.meta["sample_indices_sha256"]
    assert parts.meta["n_inputs_available"] == len(sp.val) + len(sp.test)
    np.testing.assert_array_equal(parts.calibration["cbpe"]["temperature"], whole.calibration["cbpe"]["temperature"])
    # Rows from both parts are drawn (the sample spans the concatenation).
    assert (parts.x[:, None] == sp.test.x[None]).all(axis=(2, 3, 4)).any(axis=1).sum() > 0
    with pytest.raises(DataError, match="different shapes"):
        build_reference(digits_model, [sp.val.x, sp.test.x.reshape(len(sp.test), -1)], cfg, seed=3)
    with pytest.raises(DataError, match=r"inputs but labels of shape"):
        build_reference(digits_model, [sp.val.x, sp.test.x], cfg, seed=3, y_inputs=[sp.val.y])


# drift_reference.json's "config" as the code before typed detector configs wrote it (the
# conftest's drift_cfg): detector names, their parameters in flat keys shared by all.
FLAT_FORMAT_CONFIG = {
    "enabled": True,
    "detectors": ["ks_softmax", "mmd_embedding", "lsdd", "mmd_online", "cvm_online"],
    "p_val": 0.05,
    "correction": "bonferroni",
    "reference_size": 300,
    "n_permutations": 30,
    "lsdd_n_kernel_centers": None,
    "ert": 300,
    "window_size": 20,
    "online_n_bootstraps": 400,
    "min_batch_size": 10,
    "device": "cpu",
    "batches_uri": ".driftloop/batches",
    "source": "batches",
    "schedule_cron": "*/15 * * * *",
    "cooldown_seconds": 600.0,
    "validate_shift": False,
    "evidence_is_drift": True,
    "max_batch_bytes": 268435456,
    "trigger": "drift",
    "max_estimated_drop": 0.05,
    "harm_estimator": "agreement",
    "agreement_rows": 2000,
    "labels_timeout_seconds": 86400,
    "labels_poll_seconds": 10.0,
}


def test_a_reference_in_the_flat_format_loads_and_rebuilds_the_same_detectors(
    drift_reference, digits_model, digits_splits, monkeypatch
):
    from tasks.drift import detectors as D
    from tasks.drift.config import CVMOnlineConfig, KSSoftmaxConfig, LSDDConfig, MMDEmbeddingConfig, MMDOnlineConfig

    # New references store the resolved typed list, the flat keys beside it.
    stored = drift_reference.config
    assert stored["detectors"] == [
        {"name": "ks_softmax", "p_val": 0.05, "correction": "bonferroni"},
        {"name": "mmd_embedding", "p_val": 0.05, "n_permutations": 30},
        {"name": "lsdd", "p_val": 0.05, "n_permutations": 30, "n_kernel_centers": None},
        {"name": "mmd_online", "ert": 300, "window_size": 20, "n_bootstraps": 400},
        {"name": "cvm_online", "ert": 300, "window_size": 20, "n_bootstraps": 400},
    ]
    assert {k: v for k, v in stored.items() if k != "detectors"} == {
        k: v for k, v in FLAT_FORMAT_CONFIG.items() if k != "detectors"
    }
    # The same arrays (and online calibration) with the flat-format JSON.
    files = reference_to_files(drift_reference)
    doc = json.loads(files[JSON_NAME])
    doc["config"] = FLAT_FORMAT_CONFIG
    old = reference_from_files({NPZ_NAME: files[NPZ_NAME], JSON_NAME: json.dumps(doc).encode()})
    assert old.config == stored  # resolved from the flat keys on load
    assert old.detector_configs() == [
        KSSoftmaxConfig(),
        MMDEmbeddingConfig(n_permutations=30),
        LSDDConfig(n_permutations=30),
        MMDOnlineConfig(ert=300, window_size=20, n_bootstraps=400),
        CVMOnlineConfig(ert=300, window_size=20, n_bootstraps=400),
    ]
    # The stored calibration is the one for these settings: a rebuild must not recalibrate.
    monkeypatch.setattr(D, "calibrate_online", lambda *a, **k: pytest.fail("recalibrated"))
    old_dets, new_dets = build_detectors(old), build_detectors(drift_reference)
    assert old_dets.names == new_dets.names == list(FLAT_FORMAT_CONFIG["detectors"])
    b = next(iter(simulate_stream(digits_splits, "none", n_batches=1, batch_size=60, seed=2)))
    r_old = check_batch(old, b.x, digits_model, old_dets, batch_id="b")
    r_new = check_batch(drift_reference, b.x, digits_model, new_dets, batch_id="b")
    assert [(r.detector, r.drift, r.p_value, round(r.statistic, 6), r.details) for r in r_old] == [
        (r.detector, r.drift, r.p_value, round(r.statistic, 6), r.details) for r in r_new
    ]
    assert r_old[1].details["n_permutations"] == 30 and r_old[3].details["window_size"] == 20


def test_detectors_with_their_own_parameters_are_stored_and_built_with_them(digits_model, digits_splits):
    from tasks.drift.config import DriftConfig

    cfg = DriftConfig(
        detectors=["ks_softmax", {"name": "lsdd", "n_permutations": 20}],
        reference_size=100,
        n_permutations=50,
    )
    ref = build_reference(digits_model, digits_splits.val.x, cfg, seed=4)
    assert ref.config["detectors"][1] == {"name": "lsdd", "p_val": 0.05, "n_permutations": 20, "n_kernel_centers": None}
    assert ref.config["n_permutations"] == 50  # the shared default stays readable
    back = reference_from_files(reference_to_files(ref))
    x = digits_splits.test.x[:40]
    reports = check_batch(back, x, digits_model, None, cfg, batch_id="own")
    assert [r.detector for r in reports] == ["ks_softmax", "lsdd"] and reports[1].details["n_permutations"] == 20
    # A name the reference does not store takes its stored shared keys; a config is built as given.
    from tasks.drift.config import MMDEmbeddingConfig

    dets = build_detectors(back, ["mmd_embedding"])
    assert dets.detectors["mmd_embedding"].impl._detector.n_permutations == 50
    dets = build_detectors(back, [MMDEmbeddingConfig(n_permutations=12)])
    assert dets.detectors["mmd_embedding"].impl._detector.n_permutations == 12


def test_an_online_config_other_than_the_stored_one_is_calibrated_for_itself(drift_reference, monkeypatch):
    from tasks.drift import detectors as D
    from tasks.drift.config import CVMOnlineConfig

    stored = drift_reference.calibration["cvm_online"]["thresholds"]
    calls = []
    real = D.calibrate_online
    monkeypatch.setattr(D, "calibrate_online", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    same = build_detectors(drift_reference, [CVMOnlineConfig(ert=300, window_size=20, n_bootstraps=400)])
    assert calls == []
    np.testing.assert_array_equal(same.detectors["cvm_online"].impl.thresholds.ravel(), stored)  # NaN: warm-up
    other = build_detectors(drift_reference, [{"name": "cvm_online", "window_size": 10}])
    # Unset parameters come from the reference's stored shared keys (ert 300, 400 bootstraps).
    assert calls == [CVMOnlineConfig(ert=300, window_size=10, n_bootstraps=400)]
    assert other.detectors["cvm_online"].window_size == 10
    from tasks.errors import ConfigError

    with pytest.raises(ConfigError, match=r"drift.detectors.window_size: detector 'lsdd' takes no parameter"):
        build_detectors(drift_reference, [{"name": "lsdd", "window_size": 3}])

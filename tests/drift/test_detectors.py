import numpy as np
import pytest

from tasks.drift.detectors import build_detectors, check_batch
from tasks.drift.features import DETECTOR_NAMES, check_detector_names
from tasks.drift.stream import apply_drift, simulate_stream
from tasks.errors import ConfigError, DataError


def _clean(splits, n_batches, batch_size, seed=3):
    return list(simulate_stream(splits, "none", n_batches=n_batches, batch_size=batch_size, seed=seed))


def _noisy(splits, batch_size, seed=5):
    b = _clean(splits, 1, batch_size, seed)[0]
    return apply_drift(b.x, "gaussian_noise", 1.5, np.random.default_rng(seed), (0.0, 1.0))


@pytest.mark.parametrize("name", DETECTOR_NAMES)
def test_detects_strong_gaussian_noise(name, drift_reference, digits_model, digits_splits):
    dets = build_detectors(drift_reference, [name])
    (rep,) = check_batch(drift_reference, _noisy(digits_splits, 200), digits_model, dets, batch_id="noisy")
    assert rep.drift, rep
    assert rep.detector == name and rep.batch_id == "noisy" and rep.n == 200
    if rep.kind == "online":
        assert rep.p_value is None and rep.statistic > rep.threshold
    else:
        assert rep.p_value < rep.threshold


def test_detects_rotation(drift_reference, digits_model, digits_splits):
    b = list(
        simulate_stream(
            digits_splits, "rotation", onset=0, duration=1, n_batches=1, batch_size=200, seed=4, severity=1.5
        )
    )[0]
    reps = check_batch(drift_reference, b.x, digits_model, ["ks_softmax", "mmd_embedding"], batch_id="rot")
    assert all(r.drift for r in reps), reps


def test_ks_with_correction_stays_quiet_on_clean_batches(drift_reference, digits_model, digits_splits):
    dets = build_detectors(drift_reference, ["ks_softmax"])
    alarms = [
        check_batch(drift_reference, b.x, digits_model, dets, batch_id=b.batch_id)[0].drift
        for b in _clean(digits_splits, 20, 100)
    ]
    assert sum(alarms) <= 2, alarms  # configured rate 0.05 (Bonferroni over 10 softmax outputs)


@pytest.mark.parametrize("name", ["mmd_embedding", "lsdd"])
def test_permutation_detectors_stay_quiet(name, drift_reference, digits_model, digits_splits):
    dets = build_detectors(drift_reference, [name])
    reps = [
        check_batch(drift_reference, b.x, digits_model, dets, batch_id=b.batch_id)[0]
        for b in _clean(digits_splits, 10, 100)
    ]
    assert sum(r.drift for r in reps) <= 2, [r.p_value for r in reps]
    # p-values are reproducible: the permutation test is seeded per (detector, batch)
    again = check_batch(
        drift_reference, _clean(digits_splits, 1, 100)[0].x, digits_model, dets, batch_id="batch-00000"
    )[0]
    assert again.p_value == reps[0].p_value


@pytest.mark.parametrize("name", ["mmd_online", "cvm_online"])
def test_online_detectors_quiet_then_detect(name, drift_reference, digits_model, digits_splits):
    # ert=300 instances: batches of 20 give about a 7% false-alarm chance per batch.
    dets = build_detectors(drift_reference, [name])
    alarms = [
        check_batch(drift_reference, b.x, digits_model, dets, batch_id=b.batch_id)[0].drift
        for b in _clean(digits_splits, 10, 20)
    ]
    assert sum(alarms) <= 3, alarms
    rep = check_batch(drift_reference, _noisy(digits_splits, 200), digits_model, dets, batch_id="noisy")[0]
    assert rep.drift and rep.details["first_flagged_step"] is not None


def test_online_state_survives_a_rebuild(drift_reference, digits_model, digits_splits):
    batches = _clean(digits_splits, 3, 40, seed=9)
    names = ["mmd_online", "cvm_online"]
    live = build_detectors(drift_reference, names)
    for b in batches:
        live_reps = check_batch(drift_reference, b.x, digits_model, live, batch_id=b.batch_id)
    first = build_detectors(drift_reference, names)
    for b in batches[:2]:
        check_batch(drift_reference, b.x, digits_model, first, batch_id=b.batch_id)
    state = first.state_arrays()
    assert state["mmd_online.window"].shape == (20, drift_reference.embeddings.shape[1])
    assert int(state["cvm_online.t"]) == 80
    rebuilt = build_detectors(drift_reference, names, state=state)
    reps = check_batch(drift_reference, batches[2].x, digits_model, rebuilt, batch_id=batches[2].batch_id)
    for a, b in zip(live_reps, reps):
        assert a.statistic == pytest.approx(b.statistic, rel=1e-5, abs=1e-7)
        assert a.threshold == pytest.approx(b.threshold) and a.drift == b.drift
        assert a.details["t_end"] == b.details["t_end"] == 120


def test_bad_input_is_refused_before_any_work(drift_reference, digits_model, drift_cfg):
    x = np.random.default_rng(0).random((30, 1, 8, 8)).astype(np.float32)
    with pytest.raises(DataError, match=r"samples have shape \(1, 8, 7\)"):
        check_batch(drift_reference, x[:, :, :, :7], digits_model, ["ks_softmax"], batch_id="b1")
    with pytest.raises(DataError, match="'b2': the batch is empty"):
        check_batch(drift_reference, x[:0], digits_model, ["ks_softmax"], batch_id="b2")
    with pytest.raises(DataError, match="no drift reference"):
        check_batch(None, x, digits_model, ["ks_softmax"], batch_id="b3")
    with pytest.raises(ConfigError, match=r"unknown drift detector\(s\) \['chi2'\]"):
        check_batch(drift_reference, x, digits_model, ["chi2"], batch_id="b4")
    with pytest.raises(DataError, match="fewer than drift.min_batch_size=10"):
        check_batch(drift_reference, x[:5], digits_model, None, drift_cfg, batch_id="b5")
    bad = x.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(DataError, match="NaN"):
        check_batch(drift_reference, bad, digits_model, ["ks_softmax"], batch_id="b6")
    with pytest.raises(ConfigError, match="twice"):
        check_detector_names(["lsdd", "lsdd"])


def test_config_rejects_unknown_detector_and_small_reference():
    from tasks.drift.config import DriftConfig

    with pytest.raises(Exception, match="detectors"):
        DriftConfig(detectors=["chi2"])
    with pytest.raises(Exception, match="reference_size"):
        DriftConfig(detectors=["mmd_online"], reference_size=60, window_size=50)
    assert DriftConfig().n_bootstraps() > DriftConfig().ert


def test_batch_features_in_chunks_are_the_unchunked_values_and_skip_unneeded_embeddings(
    drift_reference, digits_model, digits_splits
):
    # Large batches go through the model in chunks written into one array (no pieces plus their
    # concatenation): the values are the same bit for bit as one predict_proba / embed call.
    import torch

    from tasks.drift import features as F
    from tasks.models.train import embed, predict_proba

    x = np.repeat(digits_splits.test.x, -(-(F._CHUNK_ROWS + 700) // len(digits_splits.test.x)), axis=0)
    assert len(x) > F._CHUNK_ROWS
    feats = F.batch_features(digits_model, x)
    dev = torch.device("cpu")
    assert np.array_equal(feats["probs"], predict_proba(digits_model, x, dev))
    assert np.array_equal(feats["embeddings"], embed(digits_model, x, dev))
    assert np.array_equal(feats["confidence"], feats["probs"].max(axis=1, keepdims=True))
    # The output-only detectors never need the batch's embeddings (often larger than the batch).
    lean = F.batch_features(digits_model, x[:50], embeddings=False)
    assert set(lean) == {"probs", "confidence"} and np.array_equal(lean["probs"], feats["probs"][:50])
    # ... and a model with other embeddings is still told apart from the reference's.
    from tasks.models.config import ModelConfig
    from tasks.models.zoo import build_model

    other = build_model(ModelConfig(arch="mlp", width=16), (1, 8, 8), 10)
    with pytest.raises(DataError, match="10 classes / 16-d embeddings, the reference was built with 10 / 32"):
        check_batch(drift_reference, x[:50], other, ["ks_softmax"], batch_id="wrong-model")

"""CBPE (tasks.drift.harm) on a hand-checked example, and the verdict's trigger policy."""

import math

import numpy as np
import pytest

from tasks.drift.harm import Calibration, calibrate, estimate_harm, expected_accuracy, fit_calibration, fit_temperature
from tasks.drift.report import DriftReport
from tasks.drift.verdict import evidence_report, judge
from tasks.errors import DataError


def test_cbpe_hand_checked_example():
    # Two classes; the model always says class 0 with 0.9, and is right on 80 of 100 samples.
    probs = np.tile([0.9, 0.1], (100, 1))
    y = np.array([0] * 80 + [1] * 20)
    # By hand: the NLL is minimal when the calibrated confidence is the hit rate 0.8, i.e.
    # 1 / (1 + (1/9)^(1/T)) = 0.8  ->  (1/9)^(1/T) = 1/4  ->  T = ln 9 / ln 4 = 1.585.
    t = fit_temperature(probs, y)
    assert t == pytest.approx(math.log(9) / math.log(4), rel=1e-3)
    assert calibrate(probs[:1], t)[0, 0] == pytest.approx(0.8, abs=1e-4)
    cal = fit_calibration(probs, y)
    assert cal.reference_accuracy == pytest.approx(0.8) and cal.n == 100
    # Uncalibrated, CBPE would claim 0.9; calibrated it expects 0.8 on the same confidences.
    assert expected_accuracy(probs) == pytest.approx(0.9)
    assert expected_accuracy(probs, t) == pytest.approx(0.8, abs=1e-4)
    # A batch of less confident outputs: [0.6, 0.4] -> by hand (2/3)^(1/1.585) = e^(-0.2558) = 0.7743,
    # so the calibrated confidence is 1 / 1.7743 = 0.5636.
    batch = np.tile([0.6, 0.4], (50, 1))
    h = estimate_harm(cal, batch, "b", max_drop=0.1)
    assert h.estimated_accuracy == pytest.approx(1 / (1 + (0.4 / 0.6) ** (1 / t)), abs=1e-5)
    assert h.estimated_accuracy == pytest.approx(0.5636, abs=1e-3)
    assert h.basis == "estimated" and h.measured_accuracy is None
    assert h.drop == pytest.approx(0.8 - 0.5636, abs=1e-3) and h.harmful
    # With labels the measured accuracy decides: all class 0 -> accuracy 1.0, no harm.
    h = estimate_harm(cal, batch, "b", max_drop=0.1, y=np.zeros(50, dtype=int))
    assert h.measured_accuracy == 1.0 and h.basis == "measured" and not h.harmful
    # Calibration round-trips through the reference's arrays.
    assert Calibration.from_arrays(cal.as_arrays()) == cal


def test_fit_temperature_refuses_bad_labels():
    with pytest.raises(DataError, match="class indices"):
        fit_temperature(np.tile([0.5, 0.5], (3, 1)), np.array([0, 1, 2]))
    with pytest.raises(DataError, match="do not match"):
        fit_temperature(np.tile([0.5, 0.5], (3, 1)), np.array([0, 1]))


def test_trigger_policy_drift_and_harm():
    cal = Calibration(temperature=1.0, reference_accuracy=0.95, n=100)
    confident = np.tile([0.97, 0.03], (40, 1))
    unsure = np.tile([0.55, 0.45], (40, 1))
    drift = [DriftReport("ks_softmax", "b", True, 0.5, 0.05, 0.001)]
    harmless = judge("b", "u", drift, confident, None, False, cal, "drift_and_harm", 0.05)
    assert harmless.drift and not harmless.harm.harmful and not harmless.triggers
    assert judge("b", "u", drift, confident, None, False, cal, "drift", 0.05).triggers
    harmful = judge("b", "u", drift, unsure, None, False, cal, "drift_and_harm", 0.05)
    assert harmful.triggers and harmful.record()["harm"]["basis"] == "estimated"
    # No calibration in the reference: harm cannot be estimated, drift alone triggers.
    assert judge("b", "u", drift, unsure, None, False, None, "drift_and_harm", 0.05).triggers
    # Distribution evidence alone makes the verdict drift.
    ev = evidence_report("b", [{"rule": "out_of_range", "message": "m", "count": 3}], {"mean_shift": 4.0}, 40)
    v = judge(
        "b",
        "u",
        [DriftReport("ks_softmax", "b", False, 0.1, 0.05, 0.6)],
        confident,
        None,
        False,
        cal,
        "drift",
        0.05,
        ev,
    )
    assert v.drift and v.evidence_rules == ["out_of_range"] and v.reports[-1].kind == "evidence"
    off = evidence_report("b", [{"rule": "out_of_range", "message": "m", "count": 3}], {}, 40, is_drift=False)
    assert not off.drift

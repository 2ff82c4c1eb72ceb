"""The agreement estimate of accuracy without labels (tasks/drift/harm.py), on hand-checked examples."""

import numpy as np
import pytest
import torch

from tasks.drift.harm import AgreementSet, Calibration, agreement_accuracy, estimate_harm, sample_agreement_set
from tasks.errors import DataError
from tasks.models.standardize import Standardization, Standardize, standardized_inputs


def _two_clusters():
    # class 0 around (0, 0), class 1 around (10, 10): five rows each
    x = np.array(
        [[0, 0], [0, 1], [1, 0], [1, 1], [0.5, 0.5], [10, 10], [10, 11], [11, 10], [11, 11], [10.5, 10.5]],
        dtype=np.float32,
    )
    return AgreementSet(x, np.array([0] * 5 + [1] * 5), k=3)


def test_agreement_is_the_share_of_rows_where_the_champion_agrees_with_the_neighbours():
    aset = _two_clusters()
    batch = np.array([[0.2, 0.1], [10.2, 10.3], [0.9, 0.8], [10.9, 10.1]], dtype=np.float32)
    assert list(aset.predict(batch)) == [0, 1, 0, 1]
    # right on rows 0, 1 and 3, wrong on row 2 (says 1 where the neighbours say 0)
    assert agreement_accuracy(np.array([0, 1, 1, 1]), aset, batch) == pytest.approx(0.75)
    assert agreement_accuracy(np.array([0, 1, 0, 1]), aset, batch) == 1.0


def test_the_estimate_uses_agreement_when_given_and_keeps_cbpe_beside_it():
    cal = Calibration(temperature=1.0, reference_accuracy=0.95, n=100)
    probs = np.array([[0.9, 0.1], [0.2, 0.8]])  # CBPE: mean top probability 0.85
    h = estimate_harm(cal, probs, "b1", max_drop=0.05, agreement=0.5)
    assert h.estimator == "agreement" and h.estimated_accuracy == 0.5 and h.cbpe_accuracy == pytest.approx(0.85)
    assert h.drop == pytest.approx(0.45) and h.harmful and h.basis == "estimated"
    plain = estimate_harm(cal, probs, "b1", max_drop=0.05)
    assert plain.estimator == "cbpe" and plain.estimated_accuracy == pytest.approx(0.85) and plain.harmful
    assert plain.drop == pytest.approx(0.10)
    assert plain.agreement_accuracy is None


def test_sampling_keeps_rows_and_labels_together_and_round_trips():
    rng = np.random.default_rng(0)
    x = np.arange(40, dtype=np.float32).reshape(20, 2)
    y = np.arange(20) % 2
    s = sample_agreement_set(x, y, 8, rng)
    assert s.x.shape == (8, 2) and all(int(r[0]) // 2 % 2 == lab for r, lab in zip(s.x, s.y))
    back = AgreementSet.from_arrays(s.as_arrays())
    assert np.array_equal(back.x, s.x) and np.array_equal(back.y, s.y) and back.k == s.k
    assert AgreementSet.from_arrays(None) is None


def test_mismatched_shapes_are_refused_naming_them():
    aset = _two_clusters()
    with pytest.raises(DataError, match="batch rows have 3 values, the set 2"):
        aset.predict(np.zeros((2, 3), dtype=np.float32))
    with pytest.raises(DataError, match="4 rows but 3 labels"):
        sample_agreement_set(np.zeros((4, 2)), np.zeros(3), 2, np.random.default_rng(0))


def test_standardized_inputs_are_what_the_first_layer_computes():
    stats = Standardization("feature", (1.0, 2.0), (2.0, 4.0))
    model = torch.nn.Sequential(Standardize(stats, (2,)), torch.nn.Linear(2, 2))
    x = np.array([[3.0, 6.0], [1.0, 2.0]], dtype=np.float32)
    assert np.allclose(standardized_inputs(model, x), [[1.0, 1.0], [0.0, 0.0]])
    assert np.array_equal(standardized_inputs(torch.nn.Linear(2, 2), x), x)


def test_a_reference_with_an_agreement_set_round_trips_and_estimates_rotated_digits_lower(digits_model, digits_splits):
    """Stored with the reference (the training rows, standardized by the model), the agreement set
    comes back from the files; on rotated digits, where the network stays confident, agreement
    lands nearer the measured accuracy than CBPE does."""
    from tasks.drift.config import DriftConfig
    from tasks.drift.reference import build_reference, reference_from_files, reference_to_files
    from tasks.drift.steps import _harm_agreement
    from tasks.models.train import predict_proba, select_device

    sp = digits_splits
    cfg = DriftConfig(detectors=["ks_softmax"], reference_size=200, agreement_rows=500)
    ref = build_reference(
        digits_model,
        [sp.val.x, sp.test.x],
        cfg,
        seed=3,
        y_inputs=[sp.val.y, sp.test.y],
        agreement_inputs=(sp.train.x, sp.train.y),
    )
    back = reference_from_files(reference_to_files(ref))
    aset = back.agreement()
    assert aset is not None and aset.x.shape == (500, 64) and len(set(aset.y.tolist())) == 10
    assert np.array_equal(aset.x, ref.agreement().x)
    x = sp.test.x
    rotated = np.ascontiguousarray(np.rot90(x, k=1, axes=(-2, -1)))
    dev = select_device("cpu")
    for batch, y in ((x, sp.test.y), (rotated, sp.test.y)):
        probs = predict_proba(digits_model, batch, dev)
        measured = float((probs.argmax(1) == y).mean())
        agree = _harm_agreement(digits_model, aset, batch, probs, chunk=64)  # several chunks
        h = estimate_harm(back.cbpe(), probs, "b", 0.05, agreement=agree)
        if batch is x:
            assert abs(agree - measured) < 0.06
        else:
            assert measured < 0.5 and abs(agree - measured) < abs(h.cbpe_accuracy - measured)
    no_set = build_reference(digits_model, sp.val.x, cfg, seed=3, y_inputs=sp.val.y)
    assert no_set.agreement() is None

"""The robustness gate: promotes only reliable candidates that keep clean accuracy and robustness."""

import pytest

from tasks.adversarial.gate import robustness_gate


def nums(clean, robust, reliable=True, **kw):
    return {
        "clean_accuracy": clean,
        "robust_accuracy": robust,
        "reliable": reliable,
        "epsilon": 0.1,
        "norm": "linf",
        "steps": 10,
        "restarts": 1,
        "failed_checks": [] if reliable else ["large_epsilon_near_chance"],
    } | kw


def test_first_reliable_model_is_promoted():
    d = robustness_gate(nums(0.9, 0.5), None, 0.02)
    assert d.promote and d.champion is None and "no champion" in d.reason


def test_first_unreliable_model_is_refused():
    d = robustness_gate(nums(0.9, 0.9, reliable=False), None, 0.02)
    assert not d.promote and "reliable" in d.reason and "large_epsilon_near_chance" in d.reason


def test_refuses_a_less_robust_candidate():
    d = robustness_gate(nums(0.95, 0.60), nums(0.94, 0.65), 0.02)
    assert not d.promote
    assert "robust_not_lower" in d.reason and "0.6000 vs champion 0.6500" in d.reason
    assert d.candidate["robust_accuracy"] == 0.60 and d.champion["robust_accuracy"] == 0.65


def test_refuses_an_unreliable_candidate_even_if_it_looks_better():
    d = robustness_gate(nums(0.95, 0.90, reliable=False), nums(0.94, 0.65), 0.02)
    assert not d.promote and [r.name for r in d.rules if not r.passed] == ["reliable"]


def test_clean_tolerance():
    assert robustness_gate(nums(0.925, 0.70), nums(0.94, 0.65), 0.02).promote
    d = robustness_gate(nums(0.91, 0.70), nums(0.94, 0.65), 0.02)
    assert not d.promote and [r.name for r in d.rules if not r.passed] == ["clean_within_tolerance"]


def test_equal_robustness_is_not_lower():
    assert robustness_gate(nums(0.94, 0.65), nums(0.94, 0.65), 0.0).promote


def test_unreliable_champion_robust_number_is_waived():
    d = robustness_gate(nums(0.94, 0.50), nums(0.94, 0.95, reliable=False), 0.02)
    assert d.promote and "waived" in next(r.detail for r in d.rules if r.name == "robust_not_lower")


def test_differently_evaluated_models_cannot_be_compared():
    with pytest.raises(ValueError, match="epsilon: 0.1 vs 0.2"):
        robustness_gate(nums(0.9, 0.5), nums(0.9, 0.5, epsilon=0.2), 0.02)
    with pytest.raises(ValueError, match="lack"):
        robustness_gate({"clean_accuracy": 0.9}, None, 0.02)
    with pytest.raises(ValueError, match="clean_tolerance"):
        robustness_gate(nums(0.9, 0.5), None, -0.1)


def test_gate_accepts_evaluations(natural_mlp, digits):
    import torch

    from tasks.adversarial.evaluation import evaluate_robustness

    from .conftest import subset

    x, y = subset(digits.test, 100)
    ev = evaluate_robustness(
        natural_mlp,
        x,
        y,
        epsilons=[0.1],
        epsilon=0.1,
        norm="linf",
        steps=3,
        restarts=1,
        lo=0.0,
        hi=1.0,
        num_classes=10,
        seed=0,
        device=torch.device("cpu"),
    )
    d = robustness_gate(ev, ev, 0.0)
    assert d.promote == ev.reliable
    assert d.as_dict()["candidate"]["clean_accuracy"] == ev.clean_accuracy

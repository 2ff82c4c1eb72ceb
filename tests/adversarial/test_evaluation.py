"""Robust evaluation: the curve, and sanity checks that pass on an honest model and catch
deliberately gradient-masked ones."""

import pytest
import torch
from torch import nn

from tasks.adversarial.config import AdversarialConfig
from tasks.adversarial.evaluation import RobustEvaluation, evaluate_robustness, evaluate_with_config
from tasks.errors import DataError

from .conftest import EPS, HI, LO, subset

CPU = torch.device("cpu")


def _evaluate(model, digits, **kw):
    x, y = subset(digits.test, 200)
    args = (
        dict(
            epsilons=[0.0, 0.05, 0.1, 0.2],
            epsilon=EPS,
            norm="linf",
            steps=7,
            restarts=1,
            lo=LO,
            hi=HI,
            num_classes=10,
            seed=0,
            device=CPU,
        )
        | kw
    )
    return evaluate_robustness(model, x, y, **args)


class Quantised(nn.Module):
    """Rounds its input to 4 grey levels before the real network: torch.round has a zero gradient,
    so every gradient-based attack sees a flat loss (shattered gradients, Athalye et al. 2018)."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(torch.round(x * 3) / 3)


class Saturated(nn.Module):
    """Multiplies the logits by a huge temperature: the softmax saturates to exactly one-hot in
    float32, so the cross-entropy gradient of every correctly classified sample vanishes."""

    def __init__(self, net, temperature=1e4):
        super().__init__()
        self.net, self.t = net, temperature

    def forward(self, x):
        return self.net(x) * self.t


@pytest.mark.parametrize("norm,eps,eps_list", [("linf", EPS, [0.0, 0.05, 0.1, 0.2]), ("l2", 1.0, [0.5, 1.0, 2.0])])
def test_honest_model_passes_every_check(natural_mlp, digits, norm, eps, eps_list):
    ev = _evaluate(natural_mlp, digits, norm=norm, epsilon=eps, epsilons=eps_list)
    assert ev.reliable, ev.checks
    assert [c.name for c in ev.checks] == [
        "epsilon_zero_is_clean",
        "monotone_in_epsilon",
        "pgd_stronger_than_fgsm",
        "large_epsilon_near_chance",
    ]
    assert ev.curve[0].epsilon == 0.0 and ev.curve[0].pgd_accuracy == ev.clean_accuracy
    assert ev.clean_accuracy > 0.85
    assert ev.robust_accuracy < ev.clean_accuracy
    accs = [p.pgd_accuracy for p in ev.curve]
    assert accs == sorted(accs, reverse=True)
    assert ev.curve[-1].epsilon == pytest.approx(1.0 if norm == "linf" else 8.0)
    assert ev.large_epsilon_accuracy <= 0.2
    assert ev.robust_accuracy == next(p.pgd_accuracy for p in ev.curve if p.epsilon == eps)
    # Round trip through the dict stored with the run.
    again = RobustEvaluation.from_dict(ev.as_dict())
    assert again.summary() == ev.summary()


@pytest.mark.parametrize("wrapper", [Quantised, Saturated])
def test_sanity_checks_catch_gradient_masking(natural_mlp, digits, wrapper):
    masked = wrapper(natural_mlp)
    ev = _evaluate(masked, digits)
    # The attacks find (almost) nothing: robust accuracy looks deceptively high...
    assert ev.robust_accuracy > 0.6
    # ...but with the whole data range available the gradient still cannot leave the clean input.
    assert not ev.reliable
    assert "large_epsilon_near_chance" in ev.failed_checks
    assert ev.large_epsilon_accuracy > 0.5
    # Sanity: the honest model under the same attack is much less "robust".
    assert _evaluate(natural_mlp, digits).robust_accuracy < ev.robust_accuracy


def test_check_failures_are_reported_with_numbers(natural_mlp, digits):
    ev = _evaluate(Saturated(natural_mlp), digits)
    detail = next(c.detail for c in ev.checks if c.name == "large_epsilon_near_chance")
    assert "must be <= chance 0.100 + margin 0.1" in detail


def test_evaluate_with_config_subsamples_and_uses_config(natural_mlp, digits):
    cfg = AdversarialConfig(epsilon=0.05, eval_epsilons=[0.1], eval_steps=3, eval_max_samples=50)
    ev = evaluate_with_config(natural_mlp, digits.test.x, digits.test.y, cfg, LO, HI, 10, 0, CPU, label="c")
    assert ev.n == 50 and ev.steps == 3 and ev.epsilon == 0.05
    assert [p.epsilon for p in ev.curve] == [0.0, 0.05, 0.1, 1.0]


def test_bad_evaluation_input(natural_mlp, digits):
    x, y = subset(digits.test, 20)
    with pytest.raises(DataError, match="evaluation data"):
        evaluate_robustness(
            natural_mlp,
            x * 2.0,
            y,
            epsilons=[0.1],
            epsilon=0.1,
            norm="linf",
            steps=3,
            restarts=1,
            lo=LO,
            hi=HI,
            num_classes=10,
            seed=0,
            device=CPU,
        )
    with pytest.raises(ValueError, match="epsilons must be >= 0"):
        evaluate_robustness(
            natural_mlp,
            x,
            y,
            epsilons=[-0.1],
            epsilon=0.1,
            norm="linf",
            steps=3,
            restarts=1,
            lo=LO,
            hi=HI,
            num_classes=10,
            seed=0,
            device=CPU,
        )


def test_sanity_check_rules_on_constructed_curves():
    from tasks.adversarial.evaluation import CurvePoint, _sanity_checks

    def run(clean, pts, **tol):
        curve = [CurvePoint(e, p, f, 0) for e, p, f in pts]
        args = {"monotone_tol": 0.0, "strength_tol": 0.0, "chance_margin": 0.1} | tol
        return {c.name: c.passed for c in _sanity_checks(clean, curve, 100, 0.1, **args)}

    ok = run(0.9, [(0, 0.9, 0.9), (0.1, 0.5, 0.6), (1.0, 0.0, 0.1)])
    assert all(ok.values())
    assert not run(0.9, [(0, 0.8, 0.8), (0.1, 0.5, 0.6), (1.0, 0.0, 0.1)])["epsilon_zero_is_clean"]
    assert not run(0.9, [(0, 0.9, 0.9), (0.1, 0.5, 0.6), (0.2, 0.52, 0.6), (1.0, 0.0, 0.1)])["monotone_in_epsilon"]
    assert run(0.9, [(0, 0.9, 0.9), (0.1, 0.5, 0.6), (0.2, 0.52, 0.6), (1.0, 0.0, 0.1)], monotone_tol=0.03)[
        "monotone_in_epsilon"
    ]
    assert not run(0.9, [(0, 0.9, 0.9), (0.1, 0.65, 0.6), (1.0, 0.0, 0.1)])["pgd_stronger_than_fgsm"]
    assert not run(0.9, [(0, 0.9, 0.9), (0.1, 0.5, 0.6), (1.0, 0.21, 0.3)])["large_epsilon_near_chance"]
    # Accuracies are multiples of 1/n: equal counts never fail a check through float rounding.
    assert run(0.9, [(0, 0.9 + 1e-12, 0.9), (0.1, 0.5, 0.5 - 1e-12), (1.0, 0.2 + 1e-12, 0.2)]) == ok

"""Attack correctness: the ball, the data range, loss ascent, an analytic optimum, bad input."""

import numpy as np
import pytest
import torch
from torch import nn

from tasks.adversarial.attacks import check_input_range, fast_fgsm, fgsm, pgd, project, random_start
from tasks.errors import DataError

from .conftest import HI, LO, subset


def _batch(digits, n=128):
    x, y = subset(digits.test, n)
    return torch.from_numpy(x), torch.from_numpy(y)


def _ce(model, x, y):
    with torch.no_grad():
        return nn.functional.cross_entropy(model(x), y, reduction="none")


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 0.8)])
def test_pgd_stays_in_ball_and_range_and_raises_loss(natural_mlp, digits, norm, eps):
    x, y = _batch(digits)
    gen = torch.Generator().manual_seed(1)
    res = pgd(natural_mlp, x, y, eps, 2.5 * eps / 7, 7, LO, HI, norm, restarts=2, generator=gen)
    delta = (res.x_adv - x).reshape(len(x), -1)
    size = delta.abs().max(1).values if norm == "linf" else delta.norm(dim=1)
    assert float(size.max()) <= eps + 1e-5
    assert float(res.x_adv.min()) >= LO and float(res.x_adv.max()) <= HI
    clean, adv = _ce(natural_mlp, x, y), _ce(natural_mlp, res.x_adv, y)
    assert float(adv.mean()) > float(clean.mean()) + 0.1
    # Per sample the kept loss is never below the clean loss by more than noise: the attack
    # ascends (with random start a sample may end slightly below, but not on average).
    assert float((adv >= clean - 1e-4).float().mean()) > 0.9
    assert torch.allclose(res.loss, adv, atol=1e-5)
    assert res.grad_passes == 14


@pytest.mark.parametrize("norm,eps", [("linf", 0.2), ("l2", 1.0)])
def test_fgsm_and_fast_fgsm_stay_in_ball_and_range(natural_mlp, digits, norm, eps):
    x, y = _batch(digits)
    for x_adv in (
        fgsm(natural_mlp, x, y, eps, LO, HI, norm),
        fast_fgsm(natural_mlp, x, y, eps, 1.25 * eps, LO, HI, norm, torch.Generator().manual_seed(0)).x_adv,
    ):
        d = (x_adv - x).reshape(len(x), -1)
        assert float((d.abs().max(1).values if norm == "linf" else d.norm(dim=1)).max()) <= eps + 1e-5
        assert float(x_adv.min()) >= LO and float(x_adv.max()) <= HI
        assert float(_ce(natural_mlp, x_adv, y).mean()) > float(_ce(natural_mlp, x, y).mean())


def test_per_feature_bounds_are_respected(natural_mlp, digits):
    x, y = _batch(digits, 32)
    lo = np.zeros((1, 8, 8), np.float32)
    hi = np.full((1, 8, 8), 1.0, np.float32)
    hi[0, :, :4] = 0.95  # a tighter range on half the pixels
    x = torch.minimum(x, torch.from_numpy(hi))
    res = pgd(natural_mlp, x, y, 0.3, 0.1, 5, lo, hi, "linf", generator=torch.Generator().manual_seed(0))
    assert float(res.x_adv[:, 0, :, :4].max()) <= 0.95 + 1e-7


def test_attack_restores_model_mode_and_grad_flags(natural_mlp, digits):
    x, y = _batch(digits, 16)
    natural_mlp.train()
    before = [None if p.grad is None else p.grad.clone() for p in natural_mlp.parameters()]
    pgd(natural_mlp, x, y, 0.1, 0.03, 3, LO, HI)
    assert natural_mlp.training
    assert all(p.requires_grad for p in natural_mlp.parameters())
    # The attack differentiates with respect to the input only: parameter gradients are untouched.
    for b, p in zip(before, natural_mlp.parameters()):
        assert (b is None and p.grad is None) or torch.equal(b, p.grad)
    natural_mlp.eval()


def test_zero_epsilon_is_identity(natural_mlp, digits):
    x, y = _batch(digits, 16)
    assert torch.equal(pgd(natural_mlp, x, y, 0.0, 0.1, 3, LO, HI).x_adv, x)
    assert torch.equal(fgsm(natural_mlp, x, y, 0.0, LO, HI), x)


class _Linear2(nn.Module):
    """Two-class logits (0, w.x + b): cross-entropy is monotone in w.x, so the loss-maximising
    L-inf perturbation is -eps*sign(w) for label 1 and +eps*sign(w) for label 0, and the L2 one is
    the same along w/||w||."""

    def __init__(self, w, b):
        super().__init__()
        self.w = nn.Parameter(torch.as_tensor(w, dtype=torch.float32))
        self.b = nn.Parameter(torch.tensor(float(b)))

    def forward(self, x):
        z = x.reshape(len(x), -1) @ self.w + self.b
        return torch.stack([torch.zeros_like(z), z], 1)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_pgd_finds_the_analytic_optimum_of_a_linear_model(norm):
    g = np.random.default_rng(3)
    d, eps = 20, 0.1
    w = g.normal(size=d)
    model = _Linear2(w, 0.2)
    # Inputs well inside [0, 1] so that the data range does not bind.
    x = torch.from_numpy(g.uniform(0.3, 0.7, size=(40, d)).astype(np.float32))
    y = torch.from_numpy(g.integers(0, 2, size=40))
    direction = np.sign(w) if norm == "linf" else w / np.linalg.norm(w)
    sign = torch.where(y == 1, -1.0, 1.0)[:, None]
    x_star = x + sign * eps * torch.as_tensor(direction, dtype=torch.float32)
    best = _ce(model, x_star, y)
    # From the clean input, 4 steps of eps/4 reach the optimum and further steps stay there.
    res = pgd(model, x, y, eps, eps / 4, 10, LO, HI, norm, rand_init=False)
    assert torch.allclose(res.x_adv, x_star, atol=1e-5)
    # From a random start the L-inf corner is reached exactly; on the L2 sphere the orthogonal part
    # of the start decays geometrically, so the loss gets within a hair of the optimum.
    res = pgd(model, x, y, eps, eps / 4, 30, LO, HI, norm, generator=torch.Generator().manual_seed(0))
    assert float((best - res.loss).max()) <= 1e-4 and float((res.loss - best).max()) <= 1e-5
    assert torch.allclose(res.x_adv, x_star, atol=1e-4 if norm == "linf" else 2e-3)
    # FGSM is exact for a linear model under L-inf, too.
    if norm == "linf":
        assert torch.allclose(fgsm(model, x, y, eps, LO, HI, norm), x_star, atol=1e-6)


def test_random_start_and_projection_stay_in_ball():
    x = torch.zeros(500, 1, 4, 4)
    gen = torch.Generator().manual_seed(0)
    for norm, eps in (("linf", 0.2), ("l2", 0.5)):
        d = random_start(x, eps, norm, gen).reshape(500, -1)
        size = d.abs().max(1).values if norm == "linf" else d.norm(dim=1)
        assert float(size.max()) <= eps + 1e-6 and float(size.mean()) > eps / 2
        big = torch.randn(50, 1, 4, 4) * 10
        p = project(big, eps, norm).reshape(50, -1)
        assert float((p.abs().max(1).values if norm == "linf" else p.norm(dim=1)).max()) <= eps + 1e-6


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"epsilon": -0.1}, "epsilon"),
        ({"step_size": 0.0}, "step_size"),
        ({"steps": 0}, "steps"),
        ({"norm": "l1"}, "norm"),
        ({"restarts": 0}, "restarts"),
    ],
)
def test_bad_attack_arguments(natural_mlp, kwargs, match):
    x, y = torch.rand(4, 1, 8, 8), torch.zeros(4, dtype=torch.int64)
    args = {"epsilon": 0.1, "step_size": 0.03, "steps": 3, "norm": "linf", "restarts": 1} | kwargs
    with pytest.raises(ValueError, match=match):
        pgd(
            natural_mlp,
            x,
            y,
            args["epsilon"],
            args["step_size"],
            args["steps"],
            LO,
            HI,
            args["norm"],
            restarts=args["restarts"],
        )


def test_check_input_range():
    x = np.full((3, 1, 2, 2), 0.5, np.float32)
    check_input_range(x, 0.0, 1.0)
    x[1, 0, 0, 0] = 1.5
    with pytest.raises(DataError, match=r"1 values lie outside the valid input range \[0, 1\].*max 1.5"):
        check_input_range(x, 0.0, 1.0, what="training data")
    with pytest.raises(DataError, match="lo < hi"):
        check_input_range(x, 1.0, 1.0)
    x[1, 0, 0, 0] = np.nan
    with pytest.raises(DataError, match="NaN"):
        check_input_range(x, 0.0, 1.0)

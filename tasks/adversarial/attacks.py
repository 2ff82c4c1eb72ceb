"""White-box attacks: FGSM (Goodfellow et al. 2014) and PGD (Madry et al. 2017) in the L-inf and L2
balls, with random start and restarts.

Epsilon and step sizes are in the model's input units. Every adversarial example is clipped to the
valid data range ``[lo, hi]`` (scalars, or arrays broadcastable to one sample, e.g. the per-feature
minimum and maximum recorded in the schema), so an attack never produces an input the data could
not contain. All functions are pure: they leave the model's parameters and its train/eval mode as
they found them, and their randomness comes from an explicit ``torch.Generator``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn

from tasks.errors import DataError

Norm = Literal["linf", "l2"]
_TINY = 1e-12


def check_input_range(x: np.ndarray | torch.Tensor, lo, hi, what: str = "data") -> None:
    """Raise :class:`DataError` if any value of ``x`` lies outside ``[lo, hi]`` (or is not finite).

    Called before training and evaluation: an attack clips to ``[lo, hi]``, so data outside that
    range would be silently moved by the clipping and the robustness numbers would be wrong.
    """
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    lo_a, hi_a = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
    if not (np.all(np.isfinite(lo_a)) and np.all(np.isfinite(hi_a))):
        raise DataError(f"{what}: the valid input range must be finite, got lo={lo}, hi={hi}")
    if np.any(lo_a >= hi_a):
        raise DataError(f"{what}: the valid input range needs lo < hi, got lo={lo}, hi={hi}")
    if arr.size == 0:
        return
    if not np.all(np.isfinite(arr)):
        raise DataError(f"{what}: {int(np.sum(~np.isfinite(arr)))} values are NaN or infinite")
    try:
        below = arr < lo_a
        above = arr > hi_a
    except ValueError as e:
        raise DataError(
            f"{what}: range bounds of shape {lo_a.shape}/{hi_a.shape} do not fit samples of shape {arr.shape[1:]}"
        ) from e
    n_bad = int(np.sum(below | above))
    if n_bad:
        raise DataError(
            f"{what}: {n_bad} values lie outside the valid input range [{_fmt(lo)}, {_fmt(hi)}] "
            f"(data min {float(arr.min()):.6g}, max {float(arr.max()):.6g}); fix the data or the "
            f"range recorded in the schema"
        )


def _fmt(v) -> str:
    a = np.asarray(v)
    return f"{float(a):.6g}" if a.ndim == 0 else f"per-feature {a.min():.6g}..{a.max():.6g}"


def as_bounds(lo, hi, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``lo`` and ``hi`` as tensors on ``like``'s device and dtype, broadcastable to it."""
    return (
        torch.as_tensor(np.asarray(lo), dtype=like.dtype, device=like.device),
        torch.as_tensor(np.asarray(hi), dtype=like.dtype, device=like.device),
    )


def _check_attack_args(epsilon: float, step_size: float | None, steps: int | None, norm: str) -> None:
    if not epsilon >= 0.0:
        raise ValueError(f"attack epsilon must be >= 0, got {epsilon}")
    if step_size is not None and not step_size > 0.0:
        raise ValueError(f"attack step_size must be > 0, got {step_size}")
    if steps is not None and steps < 1:
        raise ValueError(f"attack steps must be >= 1, got {steps}")
    if norm not in ("linf", "l2"):
        raise ValueError(f"attack norm must be 'linf' or 'l2', got {norm!r}")


def _flat_norm(t: torch.Tensor) -> torch.Tensor:
    """Per-sample L2 norm, shaped to broadcast against ``t``."""
    n = t.reshape(len(t), -1).norm(dim=1)
    return n.reshape((-1,) + (1,) * (t.dim() - 1))


def project(delta: torch.Tensor, epsilon: float, norm: Norm) -> torch.Tensor:
    """Project each sample's perturbation onto the ``norm`` ball of radius ``epsilon``."""
    if norm == "linf":
        return delta.clamp(-epsilon, epsilon)
    n = _flat_norm(delta)
    return delta * torch.clamp(epsilon / (n + _TINY), max=1.0)


def _ascent_direction(grad: torch.Tensor, norm: Norm) -> torch.Tensor:
    # Steepest ascent for the norm: the sign for L-inf, the normalised gradient for L2. A zero
    # gradient gives a zero step (this is what gradient masking looks like to the attack).
    if norm == "linf":
        return grad.sign()
    return grad / (_flat_norm(grad) + _TINY)


def random_start(x: torch.Tensor, epsilon: float, norm: Norm, generator: torch.Generator | None) -> torch.Tensor:
    """A perturbation drawn uniformly from the ball: per-coordinate uniform for L-inf; for L2 a
    uniform direction with radius ``epsilon * U^(1/d)`` (uniform in volume)."""
    if norm == "linf":
        u = torch.rand(x.shape, generator=generator, dtype=x.dtype, device="cpu").to(x.device)
        return (2.0 * u - 1.0) * epsilon
    g = torch.randn(x.shape, generator=generator, dtype=x.dtype, device="cpu").to(x.device)
    d = x[0].numel()
    r = torch.rand((len(x),), generator=generator, dtype=x.dtype, device="cpu").to(x.device) ** (1.0 / d)
    r = r.reshape((-1,) + (1,) * (x.dim() - 1))
    return g / (_flat_norm(g) + _TINY) * r * epsilon


class _Mode:
    """Run the attack with the model in eval mode (no dropout noise in the gradient), and without
    accumulating parameter gradients; restore both afterwards."""

    def __init__(self, model: nn.Module):
        self.model = model

    def __enter__(self):
        self.was_training = self.model.training
        self.req = [p.requires_grad for p in self.model.parameters()]
        self.model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        return self

    def __exit__(self, *exc):
        for p, r in zip(self.model.parameters(), self.req):
            p.requires_grad_(r)
        self.model.train(self.was_training)
        return False


def _loss_and_grad(model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor):
    x_adv = x_adv.detach().requires_grad_(True)
    logits = model(x_adv)
    losses = nn.functional.cross_entropy(logits, y, reduction="none")
    (grad,) = torch.autograd.grad(losses.sum(), x_adv)
    return losses.detach(), logits.detach(), grad


def fgsm(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, epsilon: float, lo, hi, norm: Norm = "linf"
) -> torch.Tensor:
    """Fast gradient sign method (Goodfellow et al. 2014): one step of size ``epsilon`` along the
    sign of the input gradient of the cross-entropy (L2: along the normalised gradient), clipped to
    ``[lo, hi]``. One forward and one backward pass."""
    _check_attack_args(epsilon, None, None, norm)
    if epsilon == 0.0:
        return x.detach().clone()
    lo_t, hi_t = as_bounds(lo, hi, x)
    with _Mode(model):
        _, _, grad = _loss_and_grad(model, x, y)
    return torch.max(torch.min(x + epsilon * _ascent_direction(grad, norm), hi_t), lo_t).detach()


@dataclass
class AttackResult:
    x_adv: torch.Tensor
    loss: torch.Tensor | None  # per-sample loss at x_adv (None: not scored, see pgd)
    fooled: torch.Tensor | None  # per-sample: x_adv is misclassified (None: not scored)
    grad_passes: int  # forward+backward passes over the batch


def pgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    epsilon: float,
    step_size: float,
    steps: int,
    lo,
    hi,
    norm: Norm = "linf",
    restarts: int = 1,
    rand_init: bool = True,
    keep_best: bool = True,
    generator: torch.Generator | None = None,
) -> AttackResult:
    """Projected gradient descent on the negative loss (Madry et al. 2017, eq. 2.1 and Sec. 3).

    Each of ``restarts`` runs starts at ``x`` plus a uniform draw from the ball (``rand_init``) and
    takes ``steps`` steps ``delta <- Proj_ball(delta + step_size * dir(grad))``, the perturbed input
    clipped to ``[lo, hi]`` after every step. Across restarts each sample keeps the run that fools
    the model, else the one with the highest loss. With ``keep_best`` each run also keeps its best
    iterate (the loss of every iterate is computed anyway, so this costs one extra forward pass);
    without it the last iterate is returned, as in adversarial training.
    """
    _check_attack_args(epsilon, step_size, steps, norm)
    if restarts < 1:
        raise ValueError(f"attack restarts must be >= 1, got {restarts}")
    lo_t, hi_t = as_bounds(lo, hi, x)
    x = x.detach()
    with _Mode(model):
        if epsilon == 0.0:
            with torch.no_grad():
                logits = model(x)
                loss = nn.functional.cross_entropy(logits, y, reduction="none")
            return AttackResult(x.clone(), loss, logits.argmax(1) != y, 0)
        best_x = best_loss = best_fooled = None
        passes = 0
        for _ in range(restarts):
            delta = random_start(x, epsilon, norm, generator) if rand_init else torch.zeros_like(x)
            x_adv = torch.max(torch.min(x + delta, hi_t), lo_t)
            run_x = run_loss = run_fooled = None
            for _ in range(steps):
                loss, logits, grad = _loss_and_grad(model, x_adv, y)
                passes += 1
                if keep_best:
                    run_x, run_loss, run_fooled = _keep(run_x, run_loss, run_fooled, x_adv, loss, logits.argmax(1) != y)
                delta = project(x_adv + step_size * _ascent_direction(grad, norm) - x, epsilon, norm)
                x_adv = torch.max(torch.min(x + delta, hi_t), lo_t).detach()
            if not keep_best and restarts == 1:
                # Adversarial training needs only the last iterate: skip the scoring forward pass.
                return AttackResult(x_adv, None, None, passes)
            with torch.no_grad():
                logits = model(x_adv)
                loss = nn.functional.cross_entropy(logits, y, reduction="none")
            run_x, run_loss, run_fooled = _keep(run_x, run_loss, run_fooled, x_adv, loss, logits.argmax(1) != y)
            best_x, best_loss, best_fooled = _keep(best_x, best_loss, best_fooled, run_x, run_loss, run_fooled)
    assert best_x is not None  # restarts >= 1
    return AttackResult(best_x.detach(), best_loss, best_fooled, passes)


def _keep(bx, bl, bf, x, loss, fooled):
    """Per sample, keep (x, loss, fooled) when it fools the model and the kept one doesn't, or when
    both agree on fooling and it has the higher loss."""
    if bx is None:
        return x.clone(), loss.clone(), fooled.clone()
    take = (fooled & ~bf) | ((fooled == bf) & (loss > bl))
    m = take.reshape((-1,) + (1,) * (x.dim() - 1))
    return torch.where(m, x, bx), torch.where(take, loss, bl), torch.where(take, fooled, bf)


def fast_fgsm(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    epsilon: float,
    step_size: float,
    lo,
    hi,
    norm: Norm = "linf",
    generator: torch.Generator | None = None,
) -> AttackResult:
    """FGSM from a random start (Wong, Rice and Kolter 2020, "Fast is better than free", Alg. 3):
    ``delta ~ U(ball)``, one step of ``step_size`` (they use 1.25 * epsilon), projected back onto
    the ball and clipped to ``[lo, hi]``. One forward and one backward pass."""
    return pgd(
        model,
        x,
        y,
        epsilon,
        step_size,
        1,
        lo,
        hi,
        norm,
        restarts=1,
        rand_init=True,
        keep_best=False,
        generator=generator,
    )

"""Robust evaluation: accuracy under PGD-k with restarts at a list of epsilons (the
accuracy-vs-epsilon curve), with the sanity checks of Carlini et al. 2019 ("On evaluating
adversarial robustness", Sec. 5) run every time.

The checks, each reported with its numbers:

- ``epsilon_zero_is_clean``: the attack at epsilon 0 leaves accuracy exactly at clean accuracy.
- ``monotone_in_epsilon``: accuracy never rises as epsilon grows. Every point is computed on the
  same samples, so there is no sampling noise to allow for; the only slack is the attack's own
  randomness (random starts), absorbed by ``monotone_tolerance`` (default 0: a sound attack on a
  differentiable model does not lose ground when its ball grows, and a rise is a warning sign).
- ``pgd_stronger_than_fgsm``: at every epsilon, PGD accuracy <= FGSM accuracy (+ ``strength_tolerance``,
  default 0): an iterative attack that loses to a single step is not following the gradient.
- ``large_epsilon_near_chance``: with a ball covering the whole data range the adversary can
  reach any valid input, so accuracy must fall to chance or below (<= 1/k + ``chance_margin``).
  This point runs PGD *without* random start, so it measures what the gradient finds, not what
  random noise does: a model that hides its gradient (quantised inputs, saturated softmax) keeps
  its clean accuracy here and is caught.

A failed check marks the evaluation unreliable (possible gradient masking); the gate refuses to
promote a model whose evaluation is unreliable.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np
import torch
from torch import nn

from tasks.adversarial.attacks import Norm, check_input_range, fgsm, pgd
from tasks.adversarial.config import AdversarialConfig
from tasks.models.train import batches, evaluate
from tasks.seeding import derive_seed


@dataclass
class CurvePoint:
    epsilon: float
    pgd_accuracy: float
    fgsm_accuracy: float
    grad_passes: int


@dataclass
class SanityCheck:
    name: str
    passed: bool
    detail: str


@dataclass
class RobustEvaluation:
    """The accuracy-vs-epsilon curve, the sanity checks and the numbers the gate compares."""

    norm: str
    epsilon: float  # the configured epsilon: robust_accuracy is measured there
    clean_accuracy: float
    robust_accuracy: float
    curve: list[CurvePoint]
    large_epsilon: float
    large_epsilon_accuracy: float
    chance: float
    checks: list[SanityCheck]
    n: int
    num_classes: int
    steps: int
    restarts: int
    step_factor: float
    seconds: float = 0.0
    label: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def reliable(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def failed_checks(self) -> list[str]:
        return [c.name for c in self.checks if not c.passed]

    def summary(self) -> dict:
        """The numbers recorded in the manifest and compared by the gate."""
        return {
            "clean_accuracy": self.clean_accuracy,
            "robust_accuracy": self.robust_accuracy,
            "epsilon": self.epsilon,
            "norm": self.norm,
            "steps": self.steps,
            "restarts": self.restarts,
            "reliable": self.reliable,
            "failed_checks": self.failed_checks,
            "n": self.n,
        }

    def as_dict(self) -> dict:
        d = asdict(self)
        d["reliable"] = self.reliable
        d["failed_checks"] = self.failed_checks
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "RobustEvaluation":
        d = {k: v for k, v in d.items() if k not in ("reliable", "failed_checks")}
        d["curve"] = [CurvePoint(**p) for p in d["curve"]]
        d["checks"] = [SanityCheck(**c) for c in d["checks"]]
        return cls(**d)


def attack_accuracy(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    epsilon: float,
    *,
    attack: str,
    norm: Norm,
    lo,
    hi,
    device: torch.device,
    steps: int = 10,
    step_size: float | None = None,
    restarts: int = 1,
    rand_init: bool = True,
    seed: int = 0,
    batch_size: int = 256,
) -> tuple[float, int]:
    """Accuracy of ``model`` on (x, y) under ``attack`` ("pgd" or "fgsm") at ``epsilon``; returns
    (accuracy, forward+backward passes). ``step_size`` defaults to 2.5 * epsilon / steps."""
    if len(y) == 0:
        raise ValueError("attack_accuracy: no samples")
    gen = torch.Generator().manual_seed(derive_seed(seed, "attack", attack, norm, f"{epsilon:.8g}"))
    correct, passes = 0, 0
    for xb, yb in batches(x, y, batch_size, None, device):
        if attack == "fgsm":
            x_adv = fgsm(model, xb, yb, epsilon, lo, hi, norm)
            passes += 1 if epsilon > 0 else 0
        elif attack == "pgd":
            alpha = step_size if step_size is not None else 2.5 * epsilon / steps
            res = pgd(
                model,
                xb,
                yb,
                epsilon,
                alpha if epsilon > 0 else 1.0,
                steps,
                lo,
                hi,
                norm,
                restarts=restarts,
                rand_init=rand_init,
                keep_best=True,
                generator=gen,
            )
            x_adv, passes = res.x_adv, passes + res.grad_passes
        else:
            raise ValueError(f"unknown attack {attack!r}; use 'pgd' or 'fgsm'")
        was = model.training
        model.eval()
        with torch.no_grad():
            correct += int((model(x_adv).argmax(1) == yb).sum())
        model.train(was)
    return correct / len(y), passes


def large_epsilon_for(lo, hi, norm: Norm, sample_shape: tuple[int, ...]) -> float:
    """A radius whose ball holds the whole data range around any valid input: the widest feature
    range for L-inf, that times sqrt(d) for L2."""
    span = float(np.max(np.asarray(hi, dtype=np.float64) - np.asarray(lo, dtype=np.float64)))
    return span if norm == "linf" else span * math.sqrt(float(np.prod(sample_shape)))


def evaluate_robustness(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    *,
    epsilons: Sequence[float],
    epsilon: float,
    norm: Norm,
    steps: int,
    restarts: int,
    lo,
    hi,
    num_classes: int,
    seed: int,
    device: torch.device,
    step_factor: float = 2.5,
    monotone_tolerance: float = 0.0,
    strength_tolerance: float = 0.0,
    chance_margin: float = 0.1,
    batch_size: int = 256,
    label: str = "",
) -> RobustEvaluation:
    """Clean accuracy, PGD-``steps`` (``restarts`` random restarts, step ``step_factor * eps / steps``)
    and FGSM accuracy at every epsilon in ``epsilons`` plus 0, the configured ``epsilon`` and a
    radius covering the data range; then the sanity checks (module docstring).

    Raises ``DataError`` when ``x`` leaves ``[lo, hi]`` and ``ValueError`` on bad arguments, both
    before any attack runs.
    """
    import time

    if len(y) == 0 or len(x) != len(y):
        raise ValueError(f"evaluate_robustness: need matching non-empty x and y, got {len(x)} and {len(y)}")
    if any(not e >= 0 for e in list(epsilons) + [epsilon]):
        raise ValueError(f"evaluate_robustness: epsilons must be >= 0, got {list(epsilons)} and {epsilon}")
    if steps < 1 or restarts < 1 or num_classes < 2:
        raise ValueError(
            f"evaluate_robustness: need steps >= 1, restarts >= 1, num_classes >= 2; "
            f"got {steps}, {restarts}, {num_classes}"
        )
    check_input_range(x, lo, hi, what="evaluation data")
    t0 = time.perf_counter()
    model.to(device)
    clean = evaluate(model, x, y, device, num_classes, batch_size).accuracy
    big = large_epsilon_for(lo, hi, norm, tuple(x.shape[1:]))
    eps_list = sorted({0.0, float(epsilon), *(float(e) for e in epsilons)} - {big})
    eps_list = [e for e in eps_list if e < big]
    curve = []
    for e in eps_list:
        p, passes = attack_accuracy(
            model,
            x,
            y,
            e,
            attack="pgd",
            norm=norm,
            lo=lo,
            hi=hi,
            device=device,
            steps=steps,
            step_size=step_factor * e / steps if e > 0 else None,
            restarts=restarts,
            seed=seed,
            batch_size=batch_size,
        )
        f, fpasses = attack_accuracy(
            model, x, y, e, attack="fgsm", norm=norm, lo=lo, hi=hi, device=device, seed=seed, batch_size=batch_size
        )
        curve.append(CurvePoint(e, p, f, passes + fpasses))
    big_acc, big_passes = attack_accuracy(
        model,
        x,
        y,
        big,
        attack="pgd",
        norm=norm,
        lo=lo,
        hi=hi,
        device=device,
        steps=steps,
        step_size=step_factor * big / steps,
        restarts=1,
        rand_init=False,
        seed=seed,
        batch_size=batch_size,
    )
    big_fgsm, _ = attack_accuracy(
        model, x, y, big, attack="fgsm", norm=norm, lo=lo, hi=hi, device=device, seed=seed, batch_size=batch_size
    )
    curve.append(CurvePoint(big, big_acc, big_fgsm, big_passes + 1))
    n = len(y)
    chance = 1.0 / num_classes
    checks = _sanity_checks(clean, curve, n, chance, monotone_tolerance, strength_tolerance, chance_margin)
    robust = next(p.pgd_accuracy for p in curve if p.epsilon == float(epsilon)) if epsilon < big else big_acc
    return RobustEvaluation(
        norm=norm,
        epsilon=float(epsilon),
        clean_accuracy=clean,
        robust_accuracy=robust,
        curve=curve,
        large_epsilon=big,
        large_epsilon_accuracy=big_acc,
        chance=chance,
        checks=checks,
        n=n,
        num_classes=num_classes,
        steps=steps,
        restarts=restarts,
        step_factor=step_factor,
        seconds=time.perf_counter() - t0,
        label=label,
    )


def _sanity_checks(
    clean: float,
    curve: list[CurvePoint],
    n: int,
    chance: float,
    monotone_tol: float,
    strength_tol: float,
    chance_margin: float,
) -> list[SanityCheck]:
    # Accuracies are multiples of 1/n; half a sample absorbs float rounding without hiding a flip.
    half = 0.5 / n
    zero = curve[0]
    checks = [
        SanityCheck(
            "epsilon_zero_is_clean",
            abs(zero.pgd_accuracy - clean) <= half,
            f"accuracy at epsilon 0 = {zero.pgd_accuracy:.4f}, clean accuracy = {clean:.4f}",
        )
    ]
    # A rise, or PGD losing to FGSM, among accuracies below chance is not a sign of gradient
    # masking (masking keeps accuracy high); it is a few samples of attack noise once the model
    # is broken (seen on a 20-feature table where eps 0.1 of each range already left 1% accuracy).
    rises = [
        (a.epsilon, a.pgd_accuracy, b.epsilon, b.pgd_accuracy)
        for a, b in zip(curve, curve[1:])
        if b.pgd_accuracy > a.pgd_accuracy + monotone_tol + half and b.pgd_accuracy >= chance
    ]
    checks.append(
        SanityCheck(
            "monotone_in_epsilon",
            not rises,
            "accuracy never rises as epsilon grows"
            if not rises
            else "accuracy rises: "
            + "; ".join(f"eps {e1:g}: {a1:.4f} -> eps {e2:g}: {a2:.4f}" for e1, a1, e2, a2 in rises)
            + f" (tolerance {monotone_tol:g})",
        )
    )
    weaker = [
        (p.epsilon, p.pgd_accuracy, p.fgsm_accuracy)
        for p in curve
        if p.epsilon > 0 and p.pgd_accuracy > p.fgsm_accuracy + strength_tol + half and p.pgd_accuracy >= chance
    ]
    checks.append(
        SanityCheck(
            "pgd_stronger_than_fgsm",
            not weaker,
            "PGD accuracy <= FGSM accuracy at every epsilon"
            if not weaker
            else "PGD weaker than FGSM at "
            + "; ".join(f"eps {e:g}: PGD {p:.4f} > FGSM {f:.4f}" for e, p, f in weaker)
            + f" (tolerance {strength_tol:g})",
        )
    )
    big = curve[-1]
    limit = chance + chance_margin
    checks.append(
        SanityCheck(
            "large_epsilon_near_chance",
            big.pgd_accuracy <= limit + half,
            f"accuracy at epsilon {big.epsilon:g} (whole data range, PGD without random start) = "
            f"{big.pgd_accuracy:.4f}; must be <= chance {chance:.3f} + margin {chance_margin:g} = {limit:.3f}",
        )
    )
    return checks


def evaluate_with_config(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    cfg: AdversarialConfig,
    lo,
    hi,
    num_classes: int,
    seed: int,
    device: torch.device,
    label: str = "",
) -> RobustEvaluation:
    """:func:`evaluate_robustness` with every setting taken from the adversarial config section
    (``eval_max_samples`` picks a seed-determined subset)."""
    if cfg.eval_max_samples is not None and len(y) > cfg.eval_max_samples:
        idx = np.sort(
            np.random.default_rng(derive_seed(seed, "eval-subset")).permutation(len(y))[: cfg.eval_max_samples]
        )
        x, y = x[idx], y[idx]
    return evaluate_robustness(
        model,
        x,
        y,
        epsilons=cfg.eval_epsilons,
        epsilon=cfg.epsilon,
        norm=cfg.norm,
        steps=cfg.eval_steps,
        restarts=cfg.eval_restarts,
        lo=lo,
        hi=hi,
        num_classes=num_classes,
        seed=seed,
        device=device,
        step_factor=cfg.eval_step_factor,
        monotone_tolerance=cfg.monotone_tolerance,
        strength_tolerance=cfg.strength_tolerance,
        chance_margin=cfg.chance_margin,
        label=label,
    )

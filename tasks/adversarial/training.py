"""Adversarial training: regular PGD-k (Madry et al. 2017), delayed (Gupta et al. 2020), fast
FGSM with random start (Wong et al. 2020), and natural training as the baseline.

Madry et al. train on the inner maximisation's solution, ``min_theta E[max_{delta in S}
L(theta, x + delta, y)]``, found by PGD-k: each step costs k+1 forward/backward passes instead
of 1. Delayed adversarial training (DAT) observes that adversarial examples made against the
fast-changing early parameters help little, so it trains naturally for the first
``switch_epoch`` epochs and adversarially afterwards, saving roughly
``switch/epochs * k/(k+1)`` of the cost. Fast adversarial training replaces PGD-k by one FGSM
step of 1.25 * epsilon from a uniform random start (2 passes per batch).

``mix_ratio`` makes that share of every batch adversarial (the rest stays natural), as in
Goodfellow et al.'s mixed objective. Natural epochs go through ``tasks.models.train.train_one_epoch``
unchanged; adversarial epochs need the attack between the batch and the update, so they run their
own loop over the same ``batches`` iterator, with the same seeded order and optimiser.

Gradient evaluations (one forward plus one backward pass over a mini-batch) are counted so that
the benchmark can compare the modes' cost independently of the machine.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import nn

from tasks.adversarial.attacks import check_input_range, fast_fgsm, pgd
from tasks.adversarial.config import AdversarialConfig
from tasks.adversarial.evaluation import attack_accuracy
from tasks.models.config import TrainingConfig
from tasks.models.train import batches, evaluate, make_optimizer, select_device, train_one_epoch
from tasks.seeding import derive_seed


@dataclass
class EpochRecord:
    epoch: int  # 0: before fine-tuning
    phase: str  # "start", "natural" or "adversarial"
    train_loss: float | None
    natural_accuracy: float
    robust_accuracy: float
    grad_passes: int  # cumulative forward+backward passes over mini-batches
    example_grads: int  # cumulative per-example forward+backward passes
    train_seconds: float  # cumulative training time (history evaluation excluded)


@dataclass
class HardenResult:
    mode: str
    norm: str
    epsilon: float
    epochs: int
    switch_epoch: int  # natural epochs before the first adversarial one
    history: list[EpochRecord] = field(default_factory=list)
    grad_passes: int = 0
    example_grads: int = 0
    train_seconds: float = 0.0
    train_cpu_seconds: float = 0.0  # process CPU time of training: less sensitive to a busy machine
    eval_seconds: float = 0.0
    history_samples: int = 0
    # The epoch whose weights the model holds at the end: the last one, or with a clean-accuracy
    # budget (``max_clean_drop``) the most robust epoch within it (0: the starting weights).
    selected_epoch: int | None = None
    max_clean_drop: float | None = None

    @property
    def final(self) -> EpochRecord | None:
        return self.history[-1] if self.history else None

    def as_dict(self) -> dict:
        return asdict(self)


def _check_inputs(train_x, train_y, val_x, val_y, cfg: AdversarialConfig, lo, hi, num_classes: int) -> None:
    if len(train_y) == 0 or len(train_x) != len(train_y):
        raise ValueError(
            f"adversarial training: need matching non-empty x and y, got {len(train_x)} and {len(train_y)}"
        )
    if len(val_x) != len(val_y):
        raise ValueError(f"adversarial training: validation x and y differ in length ({len(val_x)} vs {len(val_y)})")
    if num_classes < 2:
        raise ValueError(f"adversarial training: num_classes must be >= 2, got {num_classes}")
    if int(train_y.max()) >= num_classes or int(train_y.min()) < 0:
        raise ValueError(
            f"adversarial training: labels must lie in [0, {num_classes}), got "
            f"{int(train_y.min())}..{int(train_y.max())}"
        )
    # The config validates itself when loaded; re-check here for configs built without validation.
    if not cfg.epsilon >= 0 or not cfg.step_size > 0 or cfg.steps < 1:
        raise ValueError(
            f"adversarial: need epsilon >= 0, step_size > 0, steps >= 1; got "
            f"{cfg.epsilon}, {cfg.step_size}, {cfg.steps}"
        )
    if cfg.switch_epoch_resolved() > cfg.epochs:
        raise ValueError(
            f"adversarial.switch_epoch={cfg.switch_epoch_resolved()} is beyond the budget of {cfg.epochs} epochs"
        )
    check_input_range(train_x, lo, hi, what="training data")
    if len(val_y):
        check_input_range(val_x, lo, hi, what="validation data")


def adversarial_train(
    model: nn.Module,
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    cfg: AdversarialConfig,
    training: TrainingConfig,
    seed: int,
    lo,
    hi,
    num_classes: int,
    track_history: bool = True,
    on_epoch: Callable[[EpochRecord], None] | None = None,
    max_clean_drop: float | None = None,
) -> HardenResult:
    """Train ``model`` in place for ``cfg.epochs`` epochs in ``cfg.mode`` and return its history.

    Optimiser, batch size, device and threads come from ``training`` (``cfg.lr`` and
    ``cfg.batch_size`` override its learning rate and batch size). Epoch ``e`` shuffles with
    ``derive_seed(seed, "epoch", e)`` and attacks with ``derive_seed(seed, "attack", e)``, so
    modes run on the same seed see the same batches. With ``track_history`` every epoch (and epoch 0,
    the starting point) records natural and PGD accuracy at ``cfg.epsilon`` on up to
    ``cfg.history_samples`` validation samples; that evaluation is timed separately from training.

    ``max_clean_drop`` (fine-tuning a trained model; needs ``track_history``): at the end the model
    holds the weights of the epoch :func:`select_epoch` picks: the most robust on validation among
    those whose natural validation accuracy is at most ``max_clean_drop`` below the starting
    point's (epoch 0 always qualifies, so fine-tuning never costs more clean accuracy than that),
    robust accuracies within one standard error counting as a tie that the higher natural accuracy
    breaks. ``None``: the last epoch's weights, as in the papers.

    Raises ``DataError`` (data outside ``[lo, hi]``) or ``ValueError`` before any training.
    """
    _check_inputs(train_x, train_y, val_x, val_y, cfg, lo, hi, num_classes)
    if max_clean_drop is not None and not (0.0 <= max_clean_drop <= 1.0):
        raise ValueError(f"adversarial training: max_clean_drop must lie in [0, 1], got {max_clean_drop}")
    if training.num_threads:
        torch.set_num_threads(training.num_threads)
    device = select_device(training.device)
    model.to(device)
    opt = make_optimizer(model, training.optimizer, cfg.lr, training.weight_decay, training.momentum)
    bs = cfg.batch_size or training.batch_size
    switch = cfg.switch_epoch_resolved()
    result = HardenResult(cfg.mode, cfg.norm, cfg.epsilon, cfg.epochs, switch, max_clean_drop=max_clean_drop)

    hx, hy = val_x, val_y
    if track_history and len(val_y) > cfg.history_samples:
        idx = np.sort(
            np.random.default_rng(derive_seed(seed, "history")).permutation(len(val_y))[: cfg.history_samples]
        )
        hx, hy = val_x[idx], val_y[idx]
    result.history_samples = int(len(hy)) if track_history else 0
    selecting = max_clean_drop is not None and track_history and len(hy) > 0
    # Weights (on the CPU) of every epoch that select_epoch could still pick: within the clean
    # budget, and not beaten on both accuracies by a later one.
    kept: dict[int, dict[str, torch.Tensor]] = {}

    def keep_candidate(rec: EpochRecord) -> None:
        assert max_clean_drop is not None
        if rec.natural_accuracy < result.history[0].natural_accuracy - max_clean_drop - 1e-9:
            return
        kept[rec.epoch] = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        for e in [e for e in kept if e != rec.epoch]:
            old = result.history[e]
            if old.natural_accuracy <= rec.natural_accuracy and old.robust_accuracy <= rec.robust_accuracy:
                del kept[e]

    def record(epoch: int, phase: str, loss: float | None) -> None:
        if not track_history or len(hy) == 0:
            return
        t0 = time.perf_counter()
        nat = evaluate(model, hx, hy, device, num_classes).accuracy
        rob, _ = attack_accuracy(
            model,
            hx,
            hy,
            cfg.epsilon,
            attack="pgd",
            norm=cfg.norm,
            lo=lo,
            hi=hi,
            device=device,
            steps=cfg.eval_steps,
            step_size=cfg.eval_step_factor * cfg.epsilon / cfg.eval_steps if cfg.epsilon > 0 else None,
            restarts=1,
            seed=derive_seed(seed, "history", epoch),
        )
        result.eval_seconds += time.perf_counter() - t0
        rec = EpochRecord(epoch, phase, loss, nat, rob, result.grad_passes, result.example_grads, result.train_seconds)
        result.history.append(rec)
        if selecting:
            keep_candidate(rec)
        if on_epoch is not None:
            on_epoch(rec)

    record(0, "start", None)
    for epoch in range(1, cfg.epochs + 1):
        t0, c0 = time.perf_counter(), time.process_time()
        order_seed = derive_seed(seed, "epoch", epoch)
        if epoch <= switch or cfg.epsilon == 0.0:
            loss = train_one_epoch(model, opt, train_x, train_y, bs, order_seed, device)
            result.grad_passes += math.ceil(len(train_y) / bs)
            result.example_grads += len(train_y)
            phase = "natural"
        else:
            loss = _adversarial_epoch(
                model,
                opt,
                train_x,
                train_y,
                bs,
                order_seed,
                device,
                cfg,
                lo,
                hi,
                torch.Generator().manual_seed(derive_seed(seed, "attack", epoch)),
                result,
            )
            phase = "adversarial"
        result.train_seconds += time.perf_counter() - t0
        result.train_cpu_seconds += time.process_time() - c0
        record(epoch, phase, loss)
    if selecting:
        assert max_clean_drop is not None
        result.selected_epoch = select_epoch(result.history, max_clean_drop, len(hy))
        model.load_state_dict(kept[result.selected_epoch])
    else:
        result.selected_epoch = cfg.epochs
    model.eval()
    return result


def select_epoch(history: list[EpochRecord], max_clean_drop: float, samples: int) -> int:
    """The epoch fine-tuning keeps under a clean-accuracy budget (``history[0]`` is the start).

    Eligible: epochs whose natural accuracy is at most ``max_clean_drop`` below the start's (the
    start always is). Among them the most robust wins, but robust accuracies measured on
    ``samples`` examples within one standard error of the best, ``sqrt(r (1 - r) / samples)``, are
    a tie, broken by the higher natural accuracy, then the later epoch. Without the tie rule the
    choice chases noise where robustness barely moves (a table at 0.09 robust accuracy, 300
    validation rows: 0.097 against 0.093) and gives up the clean accuracy that the natural epochs
    of delayed training won back.
    """
    start = history[0].natural_accuracy
    ok = [r for r in history if r.natural_accuracy >= start - max_clean_drop - 1e-9]
    best = max(r.robust_accuracy for r in ok)
    tol = math.sqrt(best * (1.0 - best) / max(samples, 1))
    ties = [r for r in ok if r.robust_accuracy >= best - tol - 1e-9]
    return max(ties, key=lambda r: (r.natural_accuracy, r.epoch)).epoch


def _adversarial_epoch(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    x: np.ndarray,
    y: np.ndarray,
    bs: int,
    order_seed: int,
    device: torch.device,
    cfg: AdversarialConfig,
    lo,
    hi,
    gen: torch.Generator,
    result: HardenResult,
) -> float:
    """One epoch whose batches carry ``mix_ratio`` adversarial examples (PGD-k, or FGSM-RS in fast mode)."""
    total, count = 0.0, 0
    for xb, yb in batches(x, y, bs, order_seed, device):
        # The batch order is already random, so its first m samples are a random share of it.
        m = min(len(yb), max(1, int(round(cfg.mix_ratio * len(yb)))))
        if cfg.mode == "fast":
            att = fast_fgsm(
                model, xb[:m], yb[:m], cfg.epsilon, cfg.fast_step_factor * cfg.epsilon, lo, hi, cfg.norm, generator=gen
            )
        else:
            att = pgd(
                model,
                xb[:m],
                yb[:m],
                cfg.epsilon,
                cfg.step_size,
                cfg.steps,
                lo,
                hi,
                cfg.norm,
                restarts=cfg.restarts,
                rand_init=True,
                keep_best=False,
                generator=gen,
            )
        xin = att.x_adv if m == len(yb) else torch.cat([att.x_adv, xb[m:]])
        model.train()
        opt.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(xin), yb)
        loss.backward()
        opt.step()
        result.grad_passes += att.grad_passes + 1
        result.example_grads += att.grad_passes * m + len(yb)
        total += float(loss.detach()) * len(yb)
        count += len(yb)
    return total / count

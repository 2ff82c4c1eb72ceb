"""Seedable train and evaluate loops shared by every stage (plain training, Ray Tune trials,
Flower clients, adversarial fine-tuning). CUDA when present, CPU otherwise."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import nn

from tasks.models.config import TrainingConfig
from tasks.seeding import derive_seed


def select_device(name: str = "auto") -> torch.device:
    """``"auto"``: the first CUDA device when present, else the CPU; otherwise ``torch.device(name)``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def make_optimizer(
    model: nn.Module, optimizer: str, lr: float, weight_decay: float = 0.0, momentum: float = 0.9
) -> torch.optim.Optimizer:
    if optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    if optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    if optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {optimizer!r}; use adam, adamw or sgd")


def batches(x: np.ndarray, y: np.ndarray, batch_size: int, seed: int | None, device: torch.device):
    """Yield (x, y) tensors in mini-batches; shuffled by ``seed`` when it is not None."""
    n = len(y)
    order = np.arange(n) if seed is None else np.random.default_rng(seed).permutation(n)
    xt = torch.from_numpy(np.ascontiguousarray(x))
    yt = torch.from_numpy(np.ascontiguousarray(y))
    for i in range(0, n, batch_size):
        idx = torch.from_numpy(order[i : i + batch_size])
        yield xt[idx].to(device), yt[idx].to(device)


LossHook = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def train_one_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    seed: int,
    device: torch.device,
    loss_hook: LossHook | None = None,
) -> float:
    """One pass over (x, y) in a seed-determined order; returns the mean training loss.

    ``loss_hook(model, xb, yb, loss)`` may add a term (FedProx's proximal term does).
    """
    model.train()
    total, count = 0.0, 0
    for xb, yb in batches(x, y, batch_size, seed, device):
        optimizer.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(xb), yb)
        if loss_hook is not None:
            loss = loss_hook(model, xb, yb, loss)
        loss.backward()
        optimizer.step()
        total += float(loss.detach()) * len(yb)
        count += len(yb)
    if count == 0:
        raise ValueError("train_one_epoch: no training samples")
    return total / count


@dataclass
class EvalResult:
    loss: float
    accuracy: float
    per_class_accuracy: dict[int, float]
    confusion: list[list[int]]
    n: int

    def as_metrics(self, prefix: str) -> dict[str, float]:
        return {f"{prefix}_loss": self.loss, f"{prefix}_accuracy": self.accuracy}


@torch.no_grad()
def evaluate(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    device: torch.device,
    num_classes: int | None = None,
    batch_size: int = 512,
) -> EvalResult:
    """Loss, accuracy, per-class accuracy and the confusion matrix (rows: true, cols: predicted)."""
    model.eval()
    k = int(num_classes or (int(y.max()) + 1 if len(y) else 0))
    conf = np.zeros((k, k), dtype=np.int64)
    total = 0.0
    for xb, yb in batches(x, y, batch_size, None, device):
        logits = model(xb)
        total += float(nn.functional.cross_entropy(logits, yb, reduction="sum"))
        pred = logits.argmax(1).cpu().numpy()
        np.add.at(conf, (yb.cpu().numpy(), pred), 1)
    n = int(len(y))
    support = conf.sum(1)
    per_class = {int(c): float(conf[c, c] / support[c]) for c in range(k) if support[c] > 0}
    acc = float(np.trace(conf) / n) if n else math.nan
    return EvalResult(total / n if n else math.nan, acc, per_class, conf.tolist(), n)


@torch.no_grad()
def predict_proba(model: nn.Module, x: np.ndarray, device: torch.device, batch_size: int = 512) -> np.ndarray:
    model.eval()
    out = [
        torch.softmax(model(torch.from_numpy(x[i : i + batch_size]).to(device)), 1).cpu().numpy()
        for i in range(0, len(x), batch_size)
    ]
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


@torch.no_grad()
def embed(model: nn.Module, x: np.ndarray, device: torch.device, batch_size: int = 512) -> np.ndarray:
    """Penultimate-layer features (``model.embed``)."""
    model.eval()
    out = [
        model.embed(torch.from_numpy(x[i : i + batch_size]).to(device)).cpu().numpy()  # type: ignore[operator]
        for i in range(0, len(x), batch_size)
    ]
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


@dataclass
class History:
    epochs: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)

    def as_dict(self) -> dict[str, list]:
        return {
            "epoch": self.epochs,
            "train_loss": self.train_loss,
            "val_loss": self.val_loss,
            "val_accuracy": self.val_accuracy,
        }


def fit(
    model: nn.Module,
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    cfg: TrainingConfig,
    seed: int,
    num_classes: int,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
) -> History:
    """Train for ``cfg.epochs`` epochs, evaluating on the validation split after each.

    Epoch ``e`` shuffles with ``derive_seed(seed, "epoch", e)``, so a resumed run (Ray Tune
    restoring a paused trial) sees the same order as an uninterrupted one.
    """
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    device = select_device(cfg.device)
    model.to(device)
    opt = make_optimizer(model, cfg.optimizer, cfg.lr, cfg.weight_decay, cfg.momentum)
    hist = History()
    for epoch in range(1, cfg.epochs + 1):
        tl = train_one_epoch(model, opt, train_x, train_y, cfg.batch_size, derive_seed(seed, "epoch", epoch), device)
        ev = evaluate(model, val_x, val_y, device, num_classes)
        hist.epochs.append(epoch)
        hist.train_loss.append(tl)
        hist.val_loss.append(ev.loss)
        hist.val_accuracy.append(ev.accuracy)
        if on_epoch is not None:
            on_epoch(epoch, {"train_loss": tl, "val_loss": ev.loss, "val_accuracy": ev.accuracy})
    return hist

"""A trained model as plain values (JSON spec + safetensors bytes + history) that stages hand on."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from tasks.models.config import ModelConfig, TrainingConfig
from tasks.models.serialize import build_from_spec, load_model, model_spec, same_architecture
from tasks.models.standardize import fit_standardization
from tasks.models.train import EvalResult, evaluate, fit, select_device
from tasks.seeding import derive_seed, seed_everything
from tasks.store.codecs import state_dict_to_bytes


@dataclass
class TrainedModel:
    spec: dict[str, Any]
    weights: bytes
    history: dict[str, list] = field(default_factory=dict)
    origin: str = "train"  # which stage produced it: train, federate, harden, champion

    def module(self) -> torch.nn.Module:
        return load_model(self.spec, self.weights)


def num_classes_of(*ys: np.ndarray) -> int:
    return int(max(int(y.max()) for y in ys if len(y)) + 1)


def train_candidate(
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    model_cfg: ModelConfig,
    training_cfg: TrainingConfig,
    seed: int,
    num_classes: int,
    initial: TrainedModel | None = None,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
) -> TrainedModel:
    """Train the configured model (warm-started from ``initial`` when its architecture matches).

    The model's initial weights come from ``derive_seed(seed, "init")``; epoch order from ``fit``.
    Its standardization layer holds the mean/std of ``train_x`` (a warm start keeps the initial
    model's weights but takes this split's statistics).
    """
    seed_everything(derive_seed(seed, "init"))
    in_shape = tuple(int(d) for d in train_x.shape[1:])
    spec = model_spec(model_cfg, in_shape, num_classes, fit_standardization(train_x))
    if initial is not None and same_architecture(initial.spec, spec):
        model = load_model(spec, initial.weights)
    else:
        model = build_from_spec(spec)
    hist = fit(model, train_x, train_y, val_x, val_y, training_cfg, derive_seed(seed, "train"), num_classes, on_epoch)
    return TrainedModel(spec, state_dict_to_bytes(model), hist.as_dict(), origin="train")


def evaluate_candidate(m: TrainedModel, x: np.ndarray, y: np.ndarray, device: str = "auto") -> EvalResult:
    dev = select_device(device)
    model = m.module().to(dev)
    return evaluate(model, x, y, dev, int(m.spec["num_classes"]))

"""Shared fixtures of the adversarial tests: digits splits, and small MLPs trained once per module."""

import numpy as np
import pytest
import torch

from tasks.adversarial.config import AdversarialConfig
from tasks.adversarial.training import adversarial_train
from tasks.data.sources import load_digits_dataset, split_dataset
from tasks.models.config import ModelConfig, TrainingConfig
from tasks.models.zoo import build_model
from tasks.seeding import seed_everything

LO, HI = 0.0, 1.0
EPS = 0.1


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    # Two shared cores: one intra-op thread is faster for these tiny models than two contending.
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="session")
def digits():
    return split_dataset(load_digits_dataset(), 0, 0.15, 0.2)


def train_mlp(splits, mode: str, epochs: int = 6, seed: int = 0, **over):
    """A fresh digits MLP trained from scratch in ``mode``; returns (model, HardenResult)."""
    seed_everything(seed)
    model = build_model(ModelConfig(arch="mlp", width=64, depth=2, dropout=0.0), (1, 8, 8), 10)
    args = (
        dict(mode=mode, epochs=epochs, epsilon=EPS, lr=3e-3, steps=5, step_size=0.03, history_samples=150, eval_steps=5)
        | over
    )
    cfg = AdversarialConfig(**args)
    res = adversarial_train(
        model,
        splits.train.x,
        splits.train.y,
        splits.val.x,
        splits.val.y,
        cfg,
        TrainingConfig(batch_size=32),
        seed,
        LO,
        HI,
        10,
    )
    return model, res


@pytest.fixture(scope="session")
def natural_mlp(digits):
    model, _ = train_mlp(digits, "natural")
    return model


def subset(ds, n=200):
    idx = np.random.default_rng(0).permutation(len(ds.y))[:n]
    return ds.x[idx], ds.y[idx]

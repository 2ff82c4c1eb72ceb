"""Shared drift fixtures: one small digits MLP and one reference per session (alibi imports once)."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="session")
def digits_splits():
    from tasks.data.sources import load_digits_dataset, split_dataset

    # A larger validation split: the reference is drawn from data the model was not fitted on.
    return split_dataset(load_digits_dataset(), seed=0, val_fraction=0.3, test_fraction=0.2)


@pytest.fixture(scope="session")
def digits_model(digits_splits):
    import torch

    from tasks.models.config import ModelConfig, TrainingConfig
    from tasks.models.train import fit
    from tasks.models.zoo import build_model

    torch.manual_seed(0)
    sp = digits_splits
    model = build_model(ModelConfig(arch="mlp", width=32), (1, 8, 8), 10)
    fit(
        model,
        sp.train.x,
        sp.train.y,
        sp.val.x,
        sp.val.y,
        TrainingConfig(epochs=8, batch_size=32, lr=3e-3, num_threads=1),
        seed=0,
        num_classes=10,
    )
    return model


@pytest.fixture(scope="session")
def drift_cfg():
    from tasks.drift.config import DriftConfig

    # Small online calibration (ert 300 instances) and few permutations keep the tests quick.
    return DriftConfig(
        detectors=["ks_softmax", "mmd_embedding", "lsdd", "mmd_online", "cvm_online"],
        reference_size=300,
        n_permutations=30,
        ert=300,
        window_size=20,
        online_n_bootstraps=400,
    )


@pytest.fixture(scope="session")
def drift_reference(digits_model, digits_splits, drift_cfg):
    from tasks.drift.reference import build_reference

    x_inputs = np.concatenate([digits_splits.val.x, digits_splits.train.x])
    return build_reference(digits_model, x_inputs, drift_cfg, seed=7, meta={"model": "digits", "version": 1})

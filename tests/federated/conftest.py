"""Shared set-up of the federated tests: a small digits split and smoke settings for Flower runs."""

from __future__ import annotations

import pytest

from tasks.data.sources import load_digits_dataset, split_dataset
from tasks.settings import load_settings


@pytest.fixture(scope="session")
def digits_splits():
    ds = load_digits_dataset()
    return split_dataset(ds, 7, 0.15, 0.15)


def fed_settings(**federated):
    """Smoke settings with a tiny MLP; ``federated`` overrides the section."""
    base = {"num_clients": 3, "rounds": 3, "min_fit_clients": 2, "partition": "iid", "local_epochs": 1,
            "batch_size": 32, "round_timeout_s": 60.0}
    base.update(federated)
    return load_settings(profile="smoke", overrides={"model": {"arch": "mlp", "width": 32, "depth": 1, "dropout": 0.0},
                                                     "training": {"lr": 0.01, "optimizer": "adam", "num_threads": 1},
                                                     "federated": base}, environ={})

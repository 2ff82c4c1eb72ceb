"""Shared set-up of the federated tests: a small digits split, smoke settings for Flower runs, and the
reliability `figures` recorder (the deployment scenarios report figures too)."""

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
    base = {
        "num_clients": 3,
        "rounds": 3,
        "min_fit_clients": 2,
        "partition": "iid",
        "local_epochs": 1,
        "batch_size": 32,
        "round_timeout_s": 60.0,
        "strategy": "fedavg",
        "client_lr": None,
        "client_lr_scale": 1.0,
        "central_baseline": False,
    }
    base.update(federated)
    return load_settings(
        profile="smoke",
        overrides={
            "model": {"arch": "mlp", "width": 32, "depth": 1, "dropout": 0.0},
            "training": {"lr": 0.01, "optimizer": "adam", "num_threads": 1},
            "federated": base,
        },
        environ={},
    )


@pytest.fixture
def figures(request):
    """Record a scenario's figures like tests/reliability does (``test-output/reliability/figures/``),
    for ``scripts/reliability_report.py``: ``figures["runs_completed"] = 1``."""
    from tests.reliability.conftest import Figures

    rec = Figures(request.node.nodeid)
    yield rec
    rec.write()

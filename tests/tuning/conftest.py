"""Shared fixtures of the tuning tests: a small digits split and one local Ray per module."""

import pytest

from tasks.data.sources import load_digits_dataset, split_dataset


@pytest.fixture(scope="session")
def small_splits():
    """Digits with 300 training samples: an MLP epoch takes milliseconds."""
    return split_dataset(load_digits_dataset(), seed=5, val_fraction=0.2, test_fraction=0.2, max_train_samples=300)


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray (2 CPUs, no dashboard, token authentication) for a whole test module; run_study reuses it."""
    import ray

    from tasks.ray_security import enable_token_auth

    enable_token_auth()  # as connect_ray does: Ray Tune runs under token authentication
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()

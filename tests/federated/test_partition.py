"""Client partitions: shapes, coverage, label skew, shard labels, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.errors import ConfigError
from tasks.federated.partition import label_table, partition_indices, partition_summary

Y = np.repeat(np.arange(10), 60)  # 600 samples, 60 per label
np.random.default_rng(0).shuffle(Y)


def _check_cover(parts, n):
    allidx = np.concatenate(parts)
    assert len(allidx) == n and len(np.unique(allidx)) == n  # disjoint and complete
    assert all(p.dtype == np.int64 and np.all(np.diff(p) > 0) for p in parts)


@pytest.mark.parametrize("scheme", ["iid", "dirichlet", "shards", "unbalanced"])
def test_partitions_cover_and_are_deterministic(scheme):
    a = partition_indices(Y, 12, scheme, seed=3, alpha=0.3)
    b = partition_indices(Y, 12, scheme, seed=3, alpha=0.3)
    c = partition_indices(Y, 12, scheme, seed=4, alpha=0.3)
    assert len(a) == 12
    _check_cover(a, len(Y))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))
    assert min(len(p) for p in a) >= 1


def test_iid_sizes_equal_and_labels_mixed():
    parts = partition_indices(Y, 10, "iid", seed=1)
    assert {len(p) for p in parts} == {60}
    assert (label_table(Y, parts, 10) > 0).sum(1).min() >= 8


def test_dirichlet_skew_grows_as_alpha_shrinks():
    def mean_labels(alpha):
        parts = partition_indices(Y, 20, "dirichlet", seed=2, alpha=alpha)
        return partition_summary(Y, parts, 10, "dirichlet")["mean_labels_per_client"]

    skewed, mild = mean_labels(0.05), mean_labels(100.0)
    assert skewed < 4.0 < 9.0 < mild


def test_shards_hold_at_most_two_labels_each():
    parts = partition_indices(Y, 100, "shards", seed=5, shards_per_client=2)
    held = (label_table(Y, parts, 10) > 0).sum(1)
    assert held.max() <= 2 and held.min() >= 1
    assert {len(p) for p in parts} <= {6}  # 600 samples / 200 shards
    # with uneven label counts too (digits-like): still <= 2 labels
    y2 = np.concatenate([np.full(n, k) for k, n in enumerate([13, 17, 9, 21, 11, 15, 12, 18, 10, 14])])
    parts2 = partition_indices(y2, 30, "shards", seed=1)
    _check_cover(parts2, len(y2))
    assert (label_table(y2, parts2, 10) > 0).sum(1).max() <= 2


def test_unbalanced_sizes_vary_but_labels_iid():
    parts = partition_indices(Y, 10, "unbalanced", seed=9, sigma=1.0, min_size=5)
    sizes = np.array([len(p) for p in parts])
    assert sizes.min() >= 5 and sizes.max() > 2 * sizes.min()


def test_summary_table():
    parts = [np.array([0, 1, 2]), np.array([3, 4])]
    y = np.array([0, 0, 1, 2, 2])
    s = partition_summary(y, parts, 3, "custom")
    assert s["label_counts"] == [[2, 1, 0], [0, 0, 2]]
    assert s["labels_per_client"] == [2, 1] and s["sizes"] == [3, 2]


def test_errors_name_the_key():
    with pytest.raises(ConfigError, match="federated.num_clients=601"):
        partition_indices(Y, 601, "iid", seed=0)
    with pytest.raises(ConfigError, match="federated.alpha must be > 0"):
        partition_indices(Y, 5, "dirichlet", seed=0, alpha=0.0)
    with pytest.raises(ConfigError, match="federated.num_clients=400"):
        partition_indices(Y, 400, "shards", seed=0)  # 800 shards > 600 samples
    with pytest.raises(ConfigError, match="federated.partition: unknown scheme"):
        partition_indices(Y, 5, "zipf", seed=0)

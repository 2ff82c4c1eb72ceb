"""Client partitions of a training split: IID, Dirichlet label skew, pathological shards, unbalanced.

Every function is pure and seed-deterministic: the same labels, scheme, client count and seed give
the same index arrays. Each partition is a sorted int64 array of row indices into the training set;
partitions are disjoint and together cover every training sample.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from tasks.errors import ConfigError
from tasks.seeding import rng


def _check_counts(n: int, num_clients: int, min_size: int) -> None:
    if num_clients < 1:
        raise ConfigError(f"federated.num_clients must be >= 1, got {num_clients}")
    if num_clients * min_size > n:
        raise ConfigError(
            f"federated.num_clients={num_clients} clients need at least {num_clients * min_size} training samples "
            f"(min_partition_size={min_size} each) but the training split has {n}: use fewer clients"
        )


def iid_partition(n: int, num_clients: int, seed: int) -> list[np.ndarray]:
    """Shuffle the ``n`` indices and cut them into ``num_clients`` near-equal parts (sizes differ by <= 1)."""
    _check_counts(n, num_clients, 1)
    perm = rng(seed, "partition", "iid").permutation(n)
    return [np.sort(p).astype(np.int64) for p in np.array_split(perm, num_clients)]


def _repair_min_size(parts: list[list[int]], min_size: int, g: np.random.Generator) -> list[list[int]]:
    # Move samples from the largest clients to those below min_size; deterministic in g.
    parts = [list(p) for p in parts]
    while True:
        small = [i for i, p in enumerate(parts) if len(p) < min_size]
        if not small:
            return parts
        i = small[0]
        donor = int(np.argmax([len(p) for p in parts]))
        j = int(g.integers(len(parts[donor])))
        parts[i].append(parts[donor].pop(j))


def dirichlet_partition(
    y: np.ndarray, num_clients: int, alpha: float, seed: int, min_size: int = 1, max_tries: int = 100
) -> list[np.ndarray]:
    """Label skew by a Dirichlet draw per class (Hsu, Qi & Brown 2019, "Measuring the Effects of
    Non-Identical Data Distribution"): for each class ``k``, ``p_k ~ Dir(alpha * 1_K)`` over the
    clients and class ``k``'s samples are split in those proportions. Small ``alpha`` gives clients
    few labels; large ``alpha`` approaches IID. Draws are repeated (up to ``max_tries``) until every
    client holds ``min_size`` samples, then the remainder is repaired by moving single samples
    from the largest clients.
    """
    if not alpha > 0:
        raise ConfigError(f"federated.alpha must be > 0 for a Dirichlet partition, got {alpha}")
    y = np.asarray(y)
    _check_counts(len(y), num_clients, min_size)
    g = rng(seed, "partition", "dirichlet")
    classes = np.unique(y)
    parts: list[list[int]] = []
    for _ in range(max_tries):
        parts = [[] for _ in range(num_clients)]
        for k in classes:
            idx = np.flatnonzero(y == k)
            g.shuffle(idx)
            p = g.dirichlet(np.full(num_clients, alpha))
            cuts = (np.cumsum(p)[:-1] * len(idx)).astype(int)
            for c, chunk in enumerate(np.split(idx, cuts)):
                parts[c].extend(chunk.tolist())
        if min(len(p) for p in parts) >= min_size:
            break
    parts = _repair_min_size(parts, min_size, g)
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]


def shard_partition(y: np.ndarray, num_clients: int, seed: int, shards_per_client: int = 2) -> list[np.ndarray]:
    """Pathological non-IID shards (McMahan et al. 2017, "Communication-Efficient Learning of Deep
    Networks from Decentralized Data", section 3): sort the data by label, divide it into
    ``num_clients * shards_per_client`` shards and give each client ``shards_per_client`` random shards.

    On MNIST the paper's 300-sample shards each hold a single digit. To keep that property on any
    dataset, shards are cut within each label (a label with a share ``s`` of the data gets about
    ``s * num_shards`` shards, by largest remainder), so a client holds at most
    ``shards_per_client`` labels.
    """
    y = np.asarray(y)
    num_shards = num_clients * shards_per_client
    _check_counts(len(y), num_clients, 1)
    if num_shards > len(y):
        raise ConfigError(
            f"federated.num_clients={num_clients} clients x shards_per_client={shards_per_client} "
            f"need {num_shards} shards but the training split has only {len(y)} samples"
        )
    g = rng(seed, "partition", "shards")
    classes, counts = np.unique(y, return_counts=True)
    # Largest-remainder allocation of shards to labels, at least one per present label when possible,
    # never more shards than samples of that label.
    quota = counts / counts.sum() * num_shards
    alloc = np.floor(quota).astype(int)
    alloc = np.minimum(np.maximum(alloc, 1 if num_shards >= len(classes) else 0), counts)
    order = np.argsort(-(quota - np.floor(quota)), kind="stable")
    i = 0
    while alloc.sum() < num_shards:
        k = order[i % len(order)]
        if alloc[k] < counts[k]:
            alloc[k] += 1
        i += 1
    while alloc.sum() > num_shards:
        k = int(np.argmax(alloc))
        alloc[k] -= 1
    shards: list[np.ndarray] = []
    for k, a in zip(classes, alloc):
        if a == 0:
            continue
        idx = np.flatnonzero(y == k)
        g.shuffle(idx)
        shards.extend(np.array_split(idx, int(a)))
    assign = g.permutation(len(shards))
    parts = []
    for c in range(num_clients):
        mine = assign[c * shards_per_client : (c + 1) * shards_per_client]
        parts.append(np.sort(np.concatenate([shards[s] for s in mine]).astype(np.int64)))
    return parts


def unbalanced_partition(
    n: int, num_clients: int, seed: int, sigma: float = 1.0, min_size: int = 1
) -> list[np.ndarray]:
    """IID labels but unequal sizes: client shares drawn log-normal(0, ``sigma``), as in the
    unbalanced settings of McMahan et al. 2017 and LEAF; every client gets at least ``min_size``.
    """
    _check_counts(n, num_clients, min_size)
    g = rng(seed, "partition", "unbalanced")
    share = g.lognormal(0.0, sigma, num_clients)
    spare = n - num_clients * min_size
    quota = share / share.sum() * spare
    sizes = np.floor(quota).astype(int)
    rest = spare - sizes.sum()
    sizes[np.argsort(-(quota - sizes), kind="stable")[:rest]] += 1
    sizes += min_size
    perm = g.permutation(n)
    cuts = np.cumsum(sizes)[:-1]
    return [np.sort(p).astype(np.int64) for p in np.split(perm, cuts)]


def partition_indices(
    y: np.ndarray,
    num_clients: int,
    scheme: str,
    seed: int,
    *,
    alpha: float = 0.5,
    shards_per_client: int = 2,
    sigma: float = 1.0,
    min_size: int = 1,
) -> list[np.ndarray]:
    """Partition a training split with labels ``y`` into ``num_clients`` client index arrays.

    ``scheme``: ``"iid"``, ``"dirichlet"`` (uses ``alpha``), ``"shards"`` (``shards_per_client``)
    or ``"unbalanced"`` (``sigma``). Raises :class:`ConfigError` naming the key when the data cannot
    be split that way (more clients than samples, alpha <= 0, an unknown scheme).
    """
    n = len(y)
    if scheme == "iid":
        return iid_partition(n, num_clients, seed)
    if scheme == "dirichlet":
        return dirichlet_partition(y, num_clients, alpha, seed, min_size)
    if scheme == "shards":
        return shard_partition(y, num_clients, seed, shards_per_client)
    if scheme == "unbalanced":
        return unbalanced_partition(n, num_clients, seed, sigma, min_size)
    raise ConfigError(f"federated.partition: unknown scheme {scheme!r}; use iid, dirichlet, shards or unbalanced")


def partition_from_config(y: np.ndarray, cfg, seed: int) -> list[np.ndarray]:
    """:func:`partition_indices` with the fields of a ``FederatedConfig``."""
    return partition_indices(
        y,
        cfg.num_clients,
        cfg.partition,
        seed,
        alpha=cfg.alpha,
        shards_per_client=cfg.shards_per_client,
        sigma=cfg.unbalanced_sigma,
        min_size=cfg.min_partition_size,
    )


def label_table(y: np.ndarray, parts: Sequence[np.ndarray], num_classes: int) -> np.ndarray:
    """Counts per client and label: an int64 array of shape ``(num_clients, num_classes)``."""
    y = np.asarray(y)
    return np.stack([np.bincount(y[p], minlength=num_classes)[:num_classes] for p in parts]).astype(np.int64)


def partition_summary(y: np.ndarray, parts: Sequence[np.ndarray], num_classes: int, scheme: str) -> dict:
    """JSON-ready description: per-client sizes, label counts, labels held, and overall figures."""
    table = label_table(y, parts, num_classes)
    sizes = table.sum(1)
    labels_held = (table > 0).sum(1)
    return {
        "scheme": scheme,
        "num_clients": len(parts),
        "num_classes": int(num_classes),
        "sizes": sizes.tolist(),
        "label_counts": table.tolist(),
        "labels_per_client": labels_held.tolist(),
        "mean_labels_per_client": float(labels_held.mean()) if len(parts) else 0.0,
        "min_size": int(sizes.min()) if len(parts) else 0,
        "max_size": int(sizes.max()) if len(parts) else 0,
    }

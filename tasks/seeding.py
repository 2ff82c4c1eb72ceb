"""One base seed drives every random choice.

Derived seeds follow nanoGPT's ``1337 + seed_offset`` idea but hash the offset's name, so that
"trial 3" and "client 3" never share a stream: ``derive_seed(base, "trial", 3)``.
"""

from __future__ import annotations

import hashlib
import os
import random

import numpy as np


def derive_seed(base: int, *keys: object) -> int:
    """Return a 31-bit seed determined by ``base`` and the ``keys`` (stage, trial, client, round...)."""
    if not keys:
        return int(base) % (2**31)
    h = hashlib.sha256(repr((int(base),) + tuple(str(k) for k in keys)).encode()).digest()
    return int.from_bytes(h[:4], "little") % (2**31)


def seed_everything(seed: int, deterministic_torch: bool = True) -> None:
    """Seed Python's ``random``, numpy and torch (CPU and CUDA) with ``seed``."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
    import torch

    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    if deterministic_torch:
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


def rng(base: int, *keys: object) -> np.random.Generator:
    """A numpy Generator seeded from ``derive_seed(base, *keys)``."""
    return np.random.default_rng(derive_seed(base, *keys))

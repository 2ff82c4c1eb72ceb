"""Standardization as part of the model: the mean and std of the training split are stored in the
model's spec and applied by its first layer, so a stored model takes raw inputs everywhere (training,
prediction, the attacks, the drift reference) and nothing outside the model has to remember them.

Flat features (tabular data) are standardized per feature: columns come in their own units
(years, dollars, ratios), and a network trained on raw columns is dominated by the largest ones.
Image-shaped samples (C, H, W) are standardized per channel, the usual practice for images:
every pixel of a channel shares one domain, and a per-pixel std would divide an edge pixel that
never lit up in training by almost zero.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

# A feature whose training std is below this (a constant column) is only centred: dividing by
# a near-zero std would turn rounding noise in new data into huge inputs.
_MIN_STD = 1e-6
# Bytes of one float64 chunk of rows when computing the statistics: a few copies of a chunk are
# live at once, never of the whole set (benchmarks/data_scale.py measures the peak).
_CHUNK_BYTES = 256 * 1024


@dataclass(frozen=True)
class Standardization:
    """``(x - mean) / std`` with ``mean``/``std`` per feature (flat samples) or per channel (images)."""

    axis: Literal["feature", "channel"]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def as_dict(self) -> dict[str, Any]:
        return {"axis": self.axis, "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Standardization":
        return cls(d["axis"], tuple(float(v) for v in d["mean"]), tuple(float(v) for v in d["std"]))

    def broadcast_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The shape of the mean/std buffers for samples of ``in_shape``."""
        if self.axis == "channel":
            return (len(self.mean),) + (1,) * (len(in_shape) - 1)
        return tuple(in_shape)


def fit_standardization(x: np.ndarray) -> Standardization:
    """Mean and std of the training inputs ``x`` (shape ``(n, *sample_shape)``), float64, in chunks.

    Per channel for samples of shape (C, H, W), per feature otherwise (see the module docstring).
    """
    n = int(x.shape[0])
    if n == 0:
        raise ValueError("fit_standardization: no training rows")
    image = x.ndim == 4
    width = int(x.shape[1]) if image else int(np.prod(x.shape[1:]))
    s1 = np.zeros(width)
    s2 = np.zeros(width)
    count = 0
    step = max(1, _CHUNK_BYTES // (8 * max(int(np.prod(x.shape[1:])), 1)))
    for i in range(0, n, step):
        c = np.asarray(x[i : i + step], dtype=np.float64)
        c = c.transpose(1, 0, 2, 3).reshape(width, -1).T if image else c.reshape(len(c), -1)
        s1 += c.sum(axis=0)
        count += c.shape[0]
    mean = s1 / count
    for i in range(0, n, step):  # second pass: exact variance, no cancellation
        c = np.asarray(x[i : i + step], dtype=np.float64)
        c = c.transpose(1, 0, 2, 3).reshape(width, -1).T if image else c.reshape(len(c), -1)
        s2 += ((c - mean) ** 2).sum(axis=0)
    std = np.sqrt(s2 / count)
    std = np.where(std < _MIN_STD, 1.0, std)
    # float32 values: what the layer computes with, and exact in JSON.
    return Standardization(
        "channel" if image else "feature",
        tuple(float(np.float32(v)) for v in mean),
        tuple(float(np.float32(v)) for v in std),
    )


class Standardize(nn.Module):
    """The model's first layer: ``(x - mean) / std``. The buffers are not persistent: the spec holds
    the statistics, so the weights file stays the same shape with or without them."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, stats: Standardization, in_shape: tuple[int, ...]):
        super().__init__()
        shape = stats.broadcast_shape(in_shape)
        self.register_buffer("mean", torch.tensor(stats.mean, dtype=torch.float32).reshape(shape), persistent=False)
        self.register_buffer("std", torch.tensor(stats.std, dtype=torch.float32).reshape(shape), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


@torch.no_grad()
def standardized_inputs(model: nn.Module, x: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """``x`` as ``model``'s first layer sees it (float32, same shape): standardized by the model's
    own :class:`Standardize` layer, unchanged for a model without one."""
    layer = next((m for m in model.modules() if isinstance(m, Standardize)), None)
    x = np.asarray(x, dtype=np.float32)
    if layer is None:
        return x
    mean, std = layer.mean.detach().cpu(), layer.std.detach().cpu()
    out = np.empty_like(x)
    for i in range(0, len(x), batch_size):
        out[i : i + batch_size] = ((torch.from_numpy(x[i : i + batch_size]) - mean) / std).numpy()
    return out

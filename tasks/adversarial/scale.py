"""One epsilon scale for every dataset: a fraction of each feature's training range.

An attack's epsilon and step sizes are given in *unit coordinates*: ``u = (x - min) / (max - min)``
with each feature's training minimum and maximum (tabular data: per column, each in its own units;
image-shaped samples: the training data's overall value range, since every pixel shares one
domain). So ``adversarial.epsilon = 0.1`` lets the L-inf adversary move every feature by a tenth
of its training range: 0.1 of the pixel range on digits or an image folder (pixels in [0, 1]:
0.1 exactly, i.e. 25.5 grey levels of 255), and for a tabular column spanning 20..90 years, 7
years. The L2 ball is a ball in the same unit coordinates.

The attacks themselves (:mod:`tasks.adversarial.attacks`) are unchanged: they run on the model
composed with the map back to raw inputs (:class:`UnitInput`), on data mapped to unit
coordinates. The valid box is the training range, ``[0, 1]`` per feature, widened where this
run's data already lie outside it (a held-out value past the training maximum is a clean input;
clipping it back would change the clean accuracy).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


class UnitInput(nn.Module):
    """``model(min + u * span)``: the model seen from unit coordinates. Shares ``model``'s
    parameters, so training the wrapper trains the model."""

    origin: torch.Tensor
    span: torch.Tensor

    def __init__(self, model: nn.Module, origin: np.ndarray, span: np.ndarray):
        super().__init__()
        self.model = model
        self.register_buffer("origin", torch.as_tensor(origin, dtype=torch.float32), persistent=False)
        self.register_buffer("span", torch.as_tensor(span, dtype=torch.float32), persistent=False)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return self.model(self.origin + u * self.span)

    def embed(self, u: torch.Tensor) -> torch.Tensor:
        return self.model.embed(self.origin + u * self.span)  # type: ignore[operator]  # zoo models define embed


@dataclass(frozen=True)
class AttackScale:
    """Unit coordinates of the attacks (module docstring): per-feature ``origin`` and ``span`` in
    sample shape, and the valid box ``[lo, hi]`` in unit coordinates."""

    origin: np.ndarray
    span: np.ndarray
    lo: np.ndarray
    hi: np.ndarray

    def to_unit(self, x: np.ndarray) -> np.ndarray:
        return ((np.asarray(x, dtype=np.float32) - self.origin) / self.span).astype(np.float32)

    def wrap(self, model: nn.Module) -> nn.Module:
        return UnitInput(model, self.origin, self.span)


def attack_scale(schema, *inputs: np.ndarray) -> AttackScale:
    """The unit coordinates for data described by ``schema`` (its per-feature or overall training
    range) with the box widened to hold every value of ``inputs`` (this run's splits)."""
    shape = tuple(schema.sample_shape)
    if schema.is_image_like:
        origin = np.full(shape, schema.value_min, dtype=np.float32)
        span = np.full(shape, schema.value_span or 1.0, dtype=np.float32)
    else:
        mins, maxs = schema.array("min"), schema.array("max")
        mins = np.where(np.isfinite(mins), mins, 0.0)
        span = np.where(np.isfinite(maxs - mins) & (maxs - mins > 0), maxs - mins, 1.0)
        origin, span = mins.astype(np.float32).reshape(shape), span.astype(np.float32).reshape(shape)
    lo = np.zeros(shape, dtype=np.float32)
    hi = np.ones(shape, dtype=np.float32)
    scale = AttackScale(origin, span, lo, hi)
    for x in inputs:
        if len(x):
            u = scale.to_unit(x)
            lo = np.minimum(lo, u.min(axis=0))
            hi = np.maximum(hi, u.max(axis=0))
    return AttackScale(origin, span, lo, hi)

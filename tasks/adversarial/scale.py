"""One epsilon scale for every dataset: a fraction of each feature's training range (its central
P1..P99 range for tabular columns, the value range for images).

An attack's epsilon and step sizes are given in *unit coordinates* ``u = (x - origin) / span``:

- image-shaped samples: the training data's overall value range (``origin`` the minimum, ``span``
  max - min), since every pixel shares one domain. ``adversarial.epsilon = 0.1`` moves every pixel
  by a tenth of the pixel range: 0.1 exactly for pixels in [0, 1] (digits, an image folder), i.e.
  25.5 grey levels of 255;
- tabular data: each column's *central* training range, from its 1st to its 99th percentile
  (``origin`` P1, ``span`` P99 - P1), each in its own units. A column's extremes are single rows,
  and on long-tailed columns (areas, counts, incomes) they stretch max - min to 8-13 standard
  deviations, so the same epsilon would be a far larger move there than on a bounded column. The
  central range is about 4.65 standard deviations for normal data whatever the outliers, so
  ``epsilon = 0.1`` moves a column by about 0.47 of its standard deviation; a column spanning
  20..90 years evenly moves by about 6.9 years, a binary column by 0.1. A column whose P1 and P99
  coincide (almost constant) falls back to its min..max, then to 1.

The L2 ball is a ball in the same unit coordinates. The attacks themselves
(:mod:`tasks.adversarial.attacks`) are unchanged: they run on the model composed with the map back
to raw inputs (:class:`UnitInput`), on data mapped to unit coordinates. The valid box is the
training [min, max] in unit coordinates (``[0, 1]`` for images; a little wider than ``[0, 1]`` for
a column, since its extremes lie past P1 and P99), widened where this run's data already lie
outside it (a held-out value past the training maximum is a clean input; clipping it back would
change the clean accuracy).
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
    """The unit coordinates for data described by ``schema`` (its per-column central range or its
    overall value range, module docstring) with the box widened to hold every value of ``inputs``
    (this run's splits)."""
    shape = tuple(schema.sample_shape)
    if schema.is_image_like:
        origin = np.full(shape, schema.value_min, dtype=np.float32)
        span = np.full(shape, schema.value_span or 1.0, dtype=np.float32)
        lo = np.zeros(shape, dtype=np.float32)
        hi = np.ones(shape, dtype=np.float32)
    else:
        mins, maxs = schema.array("min"), schema.array("max")
        q01, q99 = schema.quantile_array("q01"), schema.quantile_array("q99")
        full = maxs - mins
        central = q99 - q01
        origin64 = np.where(np.isfinite(central) & (central > 0), q01, mins)
        span64 = np.where(np.isfinite(central) & (central > 0), central, full)
        origin64 = np.where(np.isfinite(origin64), origin64, 0.0)
        span64 = np.where(np.isfinite(span64) & (span64 > 0), span64, 1.0)
        origin, span = origin64.astype(np.float32).reshape(shape), span64.astype(np.float32).reshape(shape)
        # The training box [min, max] in these coordinates.
        lo64 = np.where(np.isfinite(mins), (mins - origin64) / span64, 0.0)
        hi64 = np.where(np.isfinite(maxs), (maxs - origin64) / span64, 1.0)
        lo = np.minimum(lo64, 0.0).astype(np.float32).reshape(shape)
        hi = np.maximum(hi64, 1.0).astype(np.float32).reshape(shape)
    scale = AttackScale(origin, span, lo, hi)
    for x in inputs:
        if len(x):
            u = scale.to_unit(x)
            lo = np.minimum(lo, u.min(axis=0))
            hi = np.maximum(hi, u.max(axis=0))
    return AttackScale(origin, span, lo, hi)

"""The model zoo: an MLP and a small CNN. Both expose ``embed(x)`` (penultimate features),
which the drift detectors use for the network-embedding approach."""

from __future__ import annotations

import math

import torch
from torch import nn

from tasks.models.config import ModelConfig
from tasks.models.standardize import Standardization, Standardize


def _first_layer(standardize: Standardization | None, in_shape: tuple[int, ...]) -> nn.Module:
    return nn.Identity() if standardize is None else Standardize(standardize, in_shape)


class MLP(nn.Module):
    def __init__(
        self,
        in_shape: tuple[int, ...],
        num_classes: int,
        width: int = 64,
        depth: int = 2,
        dropout: float = 0.1,
        standardize: Standardization | None = None,
    ):
        super().__init__()
        self.standardize = _first_layer(standardize, tuple(in_shape))
        layers: list[nn.Module] = [nn.Flatten()]
        d = math.prod(in_shape)
        for _ in range(depth):
            layers += [nn.Linear(d, width), nn.ReLU(), nn.Dropout(dropout)]
            d = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(d, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(self.standardize(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))


class SmallCNN(nn.Module):
    """Conv blocks (3x3 conv, ReLU; 2x2 max-pool while the map is larger than 2x2), then a linear head."""

    def __init__(
        self,
        in_shape: tuple[int, ...],
        num_classes: int,
        width: int = 32,
        depth: int = 2,
        dropout: float = 0.1,
        standardize: Standardization | None = None,
    ):
        super().__init__()
        self.standardize = _first_layer(standardize, tuple(in_shape))
        if len(in_shape) != 3:
            raise ValueError(f"the CNN needs image-shaped samples (C, H, W), got {in_shape}; use model.arch='mlp'")
        c, h, w = in_shape
        layers: list[nn.Module] = []
        ch = width
        for _ in range(depth):
            layers += [nn.Conv2d(c, ch, 3, padding=1), nn.ReLU()]
            if min(h, w) > 2:
                layers.append(nn.MaxPool2d(2))
                h, w = h // 2, w // 2
            c, ch = ch, ch * 2
        layers += [nn.Flatten(), nn.Dropout(dropout), nn.Linear(c * h * w, 128), nn.ReLU()]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(128, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(self.standardize(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))


def build_model(
    cfg: ModelConfig, in_shape: tuple[int, ...], num_classes: int, standardize: Standardization | None = None
) -> nn.Module:
    """Build the configured architecture for samples of ``in_shape`` and ``num_classes`` outputs.

    ``arch="auto"`` picks by the sample shape (:func:`tasks.models.auto.arch_for`); ``standardize``
    (the training split's statistics) becomes the first layer when ``cfg.standardize`` is on.
    """
    from tasks.models.auto import arch_for

    arch = arch_for(cfg.arch, tuple(in_shape))
    std = standardize if cfg.standardize else None
    if arch == "mlp":
        return MLP(in_shape, num_classes, cfg.width, cfg.depth, cfg.dropout, std)
    return SmallCNN(in_shape, num_classes, cfg.width, cfg.depth, cfg.dropout, std)

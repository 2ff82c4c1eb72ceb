"""Configuration of the model architecture and the plain training loop."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tasks.config_base import Section


class ModelConfig(Section):
    # "auto": the CNN for image-shaped samples (C, H, W), the MLP for flat features (resolved from
    # the data before any stage starts, see tasks.models.auto; an explicit choice the data cannot
    # fit fails there, naming this key).
    arch: Literal["auto", "mlp", "cnn"] = "auto"
    width: int = Field(64, ge=4, description="hidden units (MLP) or channels of the first conv (CNN)")
    depth: int = Field(2, ge=1, le=8, description="hidden layers (MLP) or conv blocks (CNN)")
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    # Standardize inputs with the training split's mean/std inside the model (its first layer, the
    # statistics stored in its spec): per feature for flat data, per channel for images.
    standardize: bool = True


class TrainingConfig(Section):
    epochs: int = Field(30, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(1e-3, gt=0.0)
    weight_decay: float = Field(0.0, ge=0.0)
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    # "auto": CUDA when present, else CPU.
    device: str = "auto"
    # torch intra-op threads (None: torch's default). Two cores here; more threads only contend.
    num_threads: int | None = Field(None, ge=1)

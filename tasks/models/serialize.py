"""Models to and from bytes without pickles: weights as safetensors, architecture as a JSON spec."""

from __future__ import annotations

from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from tasks.models.config import ModelConfig
from tasks.models.zoo import build_model


def model_spec(cfg: ModelConfig, in_shape: tuple[int, ...], num_classes: int) -> dict[str, Any]:
    """Everything needed to rebuild the architecture: stored as ``model.json`` beside the weights."""
    return {"model": cfg.model_dump(mode="json"), "in_shape": list(in_shape), "num_classes": int(num_classes)}


def build_from_spec(spec: dict[str, Any]) -> nn.Module:
    return build_model(ModelConfig.model_validate(spec["model"]), tuple(spec["in_shape"]), int(spec["num_classes"]))


def state_dict_to_bytes(model_or_state: nn.Module | dict[str, torch.Tensor]) -> bytes:
    state = model_or_state.state_dict() if isinstance(model_or_state, nn.Module) else model_or_state
    return st_save({k: v.detach().cpu().contiguous() for k, v in state.items()})


def state_dict_from_bytes(data: bytes) -> dict[str, torch.Tensor]:
    """Parse safetensors bytes (never executes code, unlike a pickle)."""
    return st_load(data)


def load_model(spec: dict[str, Any], weights: bytes) -> nn.Module:
    model = build_from_spec(spec)
    model.load_state_dict(state_dict_from_bytes(weights))
    return model

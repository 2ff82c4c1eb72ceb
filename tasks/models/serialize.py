"""Models to and from bytes without pickles: weights as safetensors (the store's codec,
:func:`tasks.store.codecs.state_dict_to_bytes`), architecture as a JSON spec.

The spec holds the resolved architecture (never ``"auto"``), the input shape, the class count
and the training split's standardization statistics (:mod:`tasks.models.standardize`), so a
model rebuilt from its spec takes raw inputs.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from tasks.models.auto import resolve_model_config
from tasks.models.config import ModelConfig
from tasks.models.standardize import Standardization
from tasks.models.zoo import build_model
from tasks.store.codecs import state_dict_from_bytes


def model_spec(
    cfg: ModelConfig, in_shape: tuple[int, ...], num_classes: int, standardize: Standardization | None = None
) -> dict[str, Any]:
    """Everything needed to rebuild the architecture: stored as ``model.json`` beside the weights.

    ``standardize``: the training split's statistics (:func:`~tasks.models.standardize.fit_standardization`);
    recorded only when ``cfg.standardize`` is on.
    """
    cfg = resolve_model_config(cfg, tuple(in_shape))
    return {
        "model": cfg.model_dump(mode="json"),
        "in_shape": list(in_shape),
        "num_classes": int(num_classes),
        "standardize": standardize.as_dict() if (standardize is not None and cfg.standardize) else None,
    }


def same_architecture(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """True when weights of spec ``a`` load into spec ``b`` (standardization statistics aside:
    a warm start recomputes them from the new training split)."""
    strip = ("standardize",)
    return {k: v for k, v in a.items() if k not in strip} == {k: v for k, v in b.items() if k not in strip}


def build_from_spec(spec: dict[str, Any]) -> nn.Module:
    std = spec.get("standardize")
    return build_model(
        ModelConfig.model_validate(spec["model"]),
        tuple(spec["in_shape"]),
        int(spec["num_classes"]),
        Standardization.from_dict(std) if std else None,
    )


def load_model(spec: dict[str, Any], weights: bytes) -> nn.Module:
    model = build_from_spec(spec)
    model.load_state_dict(state_dict_from_bytes(weights))
    return model

"""Defaults that follow the data: which architecture fits the samples.

``model.arch = "auto"`` (the default) is resolved once, from the loaded data's sample shape,
before any stage starts; the resolved value is what the manifest records and every stage uses.
An explicit choice the data cannot fit fails there too, with an error naming the key, instead of
minutes later inside a tuning trial.
"""

from __future__ import annotations

from typing import Any, Mapping

from tasks.errors import ConfigError
from tasks.models.config import ModelConfig


def is_image_shaped(in_shape: tuple[int, ...]) -> bool:
    """Samples of shape (C, H, W): what the CNN's 2-d convolutions need."""
    return len(in_shape) == 3 and all(int(d) >= 1 for d in in_shape)


def arch_for(arch: str, in_shape: tuple[int, ...]) -> str:
    """The concrete architecture for ``arch`` ("auto", "mlp", "cnn") and samples of ``in_shape``.

    "auto": the CNN for image-shaped samples, the MLP for flat features. Raises ConfigError naming
    ``model.arch`` when an explicit "cnn" meets samples that are not (C, H, W).
    """
    shape = tuple(int(d) for d in in_shape)
    if arch == "auto":
        return "cnn" if is_image_shaped(shape) else "mlp"
    if arch == "cnn" and not is_image_shaped(shape):
        raise ConfigError(
            f"model.arch='cnn' needs image-shaped samples (C, H, W), but the data's samples have shape "
            f"{shape}; use model.arch='auto' or 'mlp' (or data.sample_shape=[C, H, W] if the features are pixels)"
        )
    if arch not in ("mlp", "cnn"):
        raise ConfigError(f"model.arch: unknown architecture {arch!r}; use auto, mlp or cnn")
    return arch


def resolve_model_config(cfg: ModelConfig, in_shape: tuple[int, ...]) -> ModelConfig:
    """``cfg`` with ``arch`` resolved for samples of ``in_shape`` (see :func:`arch_for`)."""
    return cfg.model_copy(update={"arch": arch_for(cfg.arch, in_shape)})


def check_search_space(search_space: Mapping[str, Any], in_shape: tuple[int, ...]) -> None:
    """Fail before tuning when ``tuning.search_space`` offers an architecture the data cannot fit."""
    spec = search_space.get("arch") if isinstance(search_space, Mapping) else None
    # A typed choice (tasks.tuning.config.Choice: not imported, tasks.tuning imports this package)
    # or its plain dict form.
    values = spec.get("values") if isinstance(spec, Mapping) else getattr(spec, "values", None)
    for v in values or []:
        try:
            arch_for(str(v), in_shape)
        except ConfigError as e:
            raise ConfigError(f"tuning.search_space['arch'] offers {v!r}: {e}") from None


def resolve_for_data(settings, sample_shape: tuple[int, ...]):
    """``settings`` with ``model.arch`` resolved for the loaded data's ``sample_shape``; raises
    ConfigError (naming the key) when ``model.arch`` or the tuning search space cannot fit it."""
    model = resolve_model_config(settings.model, tuple(sample_shape))
    if settings.tuning.enabled:
        check_search_space(settings.tuning.search_space, tuple(sample_shape))
    return settings.model_copy(update={"model": model})

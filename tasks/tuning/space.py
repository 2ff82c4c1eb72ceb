"""The search space: validation (errors name ``tuning.*`` keys), sampling, the Ray
``param_space``, and how a sampled configuration maps onto the model and training sections.

Pure: imports neither prefect nor Ray at module level (``param_space`` imports ``ray.tune`` when called).
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any, Mapping

import numpy as np

from tasks.errors import ConfigError
from tasks.models.config import ModelConfig, TrainingConfig
from tasks.seeding import derive_seed
from tasks.tuning.config import TuningConfig
from tasks.tuning.plan import check_plan_args

# Which section each searchable parameter belongs to.
MODEL_PARAMS = ("arch", "width", "depth", "dropout")
TRAINING_PARAMS = ("lr", "batch_size", "weight_decay", "optimizer", "momentum")
SPACE_TYPES = ("loguniform", "uniform", "randint", "choice")
SCHEDULERS = ("hyperband", "asha", "bohb")
METRICS = ("val_accuracy", "val_loss")

# --------------------------------------------------------------------------- validation


def validate_search_space(
    space: Mapping[str, Any], base_model: ModelConfig | None = None, base_training: TrainingConfig | None = None
) -> None:
    """Raise :class:`ConfigError` naming ``tuning.search_space.<param>`` for anything invalid.

    Checks: a non-empty mapping; known parameter names; known distribution types with their
    keys; ``low < high`` (``low > 0`` for loguniform); non-empty choices; and that the bounds and
    every choice are values the model/training configuration accepts.
    """
    base_model = base_model or ModelConfig()
    base_training = base_training or TrainingConfig()
    if not isinstance(space, Mapping) or not space:
        raise ConfigError(
            "tuning.search_space is empty: give at least one parameter to search "
            f"(any of {', '.join(MODEL_PARAMS + TRAINING_PARAMS)})"
        )
    for name, spec in space.items():
        key = f"tuning.search_space.{name}"
        if name not in MODEL_PARAMS + TRAINING_PARAMS:
            raise ConfigError(f"{key}: unknown parameter; searchable are {', '.join(MODEL_PARAMS + TRAINING_PARAMS)}")
        if not isinstance(spec, Mapping) or "type" not in spec:
            raise ConfigError(f"{key}: must be a mapping with a 'type' ({', '.join(SPACE_TYPES)})")
        kind = spec["type"]
        if kind not in SPACE_TYPES:
            raise ConfigError(f"{key}.type: unknown distribution {kind!r}; use one of {', '.join(SPACE_TYPES)}")
        if kind == "choice":
            extra = set(spec) - {"type", "values"}
            values = spec.get("values")
            if not isinstance(values, (list, tuple)) or len(values) == 0:
                raise ConfigError(f"{key}.values: a choice needs a non-empty list of values")
            probes = list(values)
        else:
            extra = set(spec) - {"type", "low", "high"}
            lo, hi = spec.get("low"), spec.get("high")
            for bound, v in (("low", lo), ("high", hi)):
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                    raise ConfigError(f"{key}.{bound}: must be a finite number, got {v!r}")
            if lo >= hi:
                raise ConfigError(f"{key}: low ({lo}) must be below high ({hi})")
            if kind == "loguniform" and lo <= 0:
                raise ConfigError(f"{key}.low: a loguniform range needs low > 0, got {lo}")
            if kind == "randint":
                if not (isinstance(lo, int) and isinstance(hi, int)):
                    raise ConfigError(f"{key}: randint bounds must be integers, got {lo!r}, {hi!r}")
                probes = [lo, hi - 1]  # high is excluded
            else:
                probes = [lo]  # a continuous range never draws `high` itself
                if name in ("width", "depth", "batch_size"):
                    raise ConfigError(f"{key}.type: {name} is an integer; use randint or choice, not {kind}")
        if extra:
            raise ConfigError(f"{key}: unexpected keys {sorted(extra)} for type {kind!r}")
        for v in probes:
            try:
                apply_params(base_model, base_training, {name: v})
            except ConfigError as e:
                raise ConfigError(f"{key}: value {v!r} is not accepted: {e}") from None


def validate_tuning(
    cfg: TuningConfig, base_model: ModelConfig | None = None, base_training: TrainingConfig | None = None
) -> None:
    """Every check that must pass before a study starts; each error names its ``tuning.*`` key."""
    if cfg.scheduler not in SCHEDULERS:
        raise ConfigError(f"tuning.scheduler: unknown scheduler {cfg.scheduler!r}; use one of {', '.join(SCHEDULERS)}")
    if cfg.metric not in METRICS:
        raise ConfigError(f"tuning.metric: unknown metric {cfg.metric!r}; the trainable reports {', '.join(METRICS)}")
    if cfg.mode not in ("max", "min"):
        raise ConfigError(f"tuning.mode: must be 'max' or 'min', got {cfg.mode!r}")
    check_plan_args(cfg.max_t, cfg.eta)
    if cfg.num_samples < 1:
        raise ConfigError(f"tuning.num_samples must be >= 1, got {cfg.num_samples}")
    validate_search_space(cfg.search_space, base_model, base_training)
    gpu = cfg.resources_per_trial.gpu
    if gpu != "auto" and (not isinstance(gpu, (int, float)) or gpu < 0):
        raise ConfigError(f"tuning.resources_per_trial.gpu: a number >= 0 or 'auto', got {gpu!r}")
    if cfg.scheduler == "bohb":
        missing = bohb_missing_packages()
        if missing:
            raise ConfigError(
                "tuning.scheduler='bohb' needs packages that are not installed "
                f"({', '.join(missing)}): pip install hpbandster==0.7.4 ConfigSpace==0.7.1 "
                "(the dev extra; Ray 2.55.1's TuneBOHB needs ConfigSpace < 1)"
            )


def bohb_missing_packages() -> list[str]:
    """The BOHB dependencies (Ray's TuneBOHB imports ConfigSpace and hpbandster) not importable here."""
    import importlib.util

    return [m for m in ("ConfigSpace", "hpbandster") if importlib.util.find_spec(m) is None]


# --------------------------------------------------------------------------- configs


def apply_params(
    model: ModelConfig, training: TrainingConfig, params: Mapping[str, Any]
) -> tuple[ModelConfig, TrainingConfig]:
    """The model and training configurations with the searched ``params`` put in their fields.

    Values are validated by the configuration models; an unknown name or a rejected value
    raises :class:`ConfigError`.
    """
    m_upd = {k: _plain(v) for k, v in params.items() if k in MODEL_PARAMS}
    t_upd = {k: _plain(v) for k, v in params.items() if k in TRAINING_PARAMS}
    unknown = set(params) - set(m_upd) - set(t_upd)
    if unknown:
        raise ConfigError(f"unknown searched parameters {sorted(unknown)}")
    from pydantic import ValidationError

    try:
        return (
            ModelConfig.model_validate({**model.model_dump(), **m_upd}),
            TrainingConfig.model_validate({**training.model_dump(), **t_upd}),
        )
    except ValidationError as e:
        raise ConfigError("; ".join(f"{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors())) from None


def _plain(v: Any) -> Any:
    """numpy scalars (Ray's samplers return them) as Python numbers."""
    return v.item() if isinstance(v, np.generic) else v


def config_key(params: Mapping[str, Any]) -> str:
    """A stable hash of a sampled configuration: it names the trial's seed stream."""
    canon = json.dumps({k: _plain(params[k]) for k in sorted(params)}, sort_keys=True, default=str)
    return hashlib.sha256(canon.encode()).hexdigest()[:16]


def trial_seed(base_seed: int, params: Mapping[str, Any]) -> int:
    """The seed of the trial that trains ``params``: ``derive_seed(seed, "trial", config_key)``."""
    return derive_seed(base_seed, "trial", config_key(params))


def sample_config(space: Mapping[str, Mapping[str, Any]], gen: np.random.Generator) -> dict[str, Any]:
    """Draw one configuration from ``space`` with numpy (the sampler the benchmark's in-process
    Hyperband and random search share; parameters drawn in sorted name order)."""
    out: dict[str, Any] = {}
    for name in sorted(space):
        spec = space[name]
        kind = spec["type"]
        if kind == "choice":
            out[name] = _plain(spec["values"][int(gen.integers(len(spec["values"])))])
        elif kind == "uniform":
            out[name] = float(gen.uniform(spec["low"], spec["high"]))
        elif kind == "loguniform":
            out[name] = float(math.exp(gen.uniform(math.log(spec["low"]), math.log(spec["high"]))))
        elif kind == "randint":
            out[name] = int(gen.integers(spec["low"], spec["high"]))
        else:
            raise ConfigError(f"tuning.search_space.{name}.type: unknown distribution {kind!r}")
    return out


def param_space(space: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The Ray Tune ``param_space`` for a validated search space."""
    from ray import tune

    out: dict[str, Any] = {}
    for name, spec in space.items():
        kind = spec["type"]
        if kind == "loguniform":
            out[name] = tune.loguniform(spec["low"], spec["high"])
        elif kind == "uniform":
            out[name] = tune.uniform(spec["low"], spec["high"])
        elif kind == "randint":
            out[name] = tune.randint(spec["low"], spec["high"])
        elif kind == "choice":
            out[name] = tune.choice(list(spec["values"]))
        else:
            raise ConfigError(f"tuning.search_space.{name}.type: unknown distribution {kind!r}")
    return out


def apply_best_config(settings, best_config: Mapping[str, Any]):
    """``settings`` (a :class:`tasks.settings.Settings`) with the study's best parameters put in
    its ``model`` and ``training`` sections; the next stages train with it."""
    model, training = apply_params(settings.model, settings.training, best_config)
    return settings.model_copy(update={"model": model, "training": training})

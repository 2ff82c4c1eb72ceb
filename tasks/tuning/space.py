"""The search space: validation (errors name ``tuning.*`` keys), sampling, the Ray
``param_space``, and how a sampled configuration maps onto the model and training sections.
The specs themselves, and the rules each checks on its own, are in ``tasks.tuning.config``.

Pure: imports neither prefect nor Ray at module level (``param_space`` imports ``ray.tune`` when called).
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any, Mapping, TypeVar

import numpy as np
from pydantic import BaseModel, TypeAdapter, ValidationError

from tasks.errors import ConfigError
from tasks.models.config import ModelConfig, TrainingConfig
from tasks.seeding import derive_seed
from tasks.tuning.config import (
    MODEL_PARAMS,
    TRAINING_PARAMS,
    Choice,
    ParamName,
    RandInt,
    SearchSpace,
    SpaceSpec,
    TuningConfig,
    Uniform,
)
from tasks.tuning.plan import check_plan_args

SCHEDULERS = ("hyperband", "asha", "bohb")
METRICS = ("val_accuracy", "val_loss")

# --------------------------------------------------------------------------- validation

_SEARCH_SPACE: TypeAdapter[dict[ParamName, SpaceSpec]] = TypeAdapter(SearchSpace)


def parse_search_space(space: Mapping[Any, Any]) -> dict[ParamName, SpaceSpec]:
    """``space`` (typed specs, or the plain dicts of a file or a form) as typed specs.

    The specs' own rules (``tasks.tuning.config``) apply; a violation raises :class:`ConfigError`
    naming ``tuning.search_space.<param>[.<key>]``. Also a guard for a configuration built without
    validation (``model_copy(update=...)``).
    """
    try:
        return _SEARCH_SPACE.validate_python(space)
    except ValidationError as e:
        raise ConfigError(
            "; ".join(f"{'.'.join(['tuning.search_space', *map(str, x['loc'])])}: {x['msg']}" for x in e.errors())
        ) from None


def validate_search_space(
    space: Mapping[Any, Any], base_model: ModelConfig | None = None, base_training: TrainingConfig | None = None
) -> dict[ParamName, SpaceSpec]:
    """The typed space, once every bound and choice is a value the model and training sections
    (``base_model``, ``base_training``; defaults when None) accept.

    Raises :class:`ConfigError` naming ``tuning.search_space.<param>.<key>``: the specs' own rules
    first (:func:`parse_search_space`), then each draw that the section would reject.
    """
    specs = parse_search_space(space)
    base_model = base_model or ModelConfig()
    base_training = base_training or TrainingConfig()
    for name, spec in specs.items():
        for key, value, shown in _extremes(spec):
            try:
                apply_params(base_model, base_training, {name: value})
            except ConfigError as e:
                raise ConfigError(f"tuning.search_space.{name}.{key}: {shown} is not accepted ({e})") from None
    return specs


def _extremes(spec: SpaceSpec) -> list[tuple[str, Any, str]]:
    """(key, value, how to name it) for the values that stand for everything ``spec`` draws: every
    choice, and the smallest and largest draw of a range (its ``high`` is never drawn)."""
    if isinstance(spec, Choice):
        return [("values", v, repr(v)) for v in spec.values]
    if isinstance(spec, RandInt):
        return [("low", spec.low, repr(spec.low)), ("high", spec.high - 1, f"{spec.high - 1} (its largest draw)")]
    below = math.nextafter(spec.high, spec.low)
    return [("low", spec.low, repr(spec.low)), ("high", below, f"a draw just below {spec.high!r}")]


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

_C = TypeVar("_C", bound=BaseModel)


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
    return _updated("model", model, m_upd), _updated("training", training, t_upd)


def _updated(section: str, cfg: _C, update: Mapping[str, Any]) -> _C:
    try:
        return type(cfg).model_validate({**cfg.model_dump(), **update})
    except ValidationError as e:
        problems = [".".join([section, *map(str, err["loc"])]) + ": " + err["msg"] for err in e.errors()]
        raise ConfigError("; ".join(problems)) from None


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


def sample_config(space: Mapping[Any, Any], gen: np.random.Generator) -> dict[str, Any]:
    """Draw one configuration from ``space`` (see :func:`parse_search_space`) with numpy: the
    sampler the benchmark's in-process Hyperband and random search share. Parameters are drawn in
    sorted name order."""
    specs = parse_search_space(space)
    out: dict[str, Any] = {}
    for name in sorted(specs):
        spec = specs[name]
        if isinstance(spec, Choice):
            out[name] = _plain(spec.values[int(gen.integers(len(spec.values)))])
        elif isinstance(spec, RandInt):
            out[name] = int(gen.integers(spec.low, spec.high))
        elif isinstance(spec, Uniform):
            out[name] = float(gen.uniform(spec.low, spec.high))
        else:  # loguniform
            out[name] = float(math.exp(gen.uniform(math.log(spec.low), math.log(spec.high))))
    return out


def param_space(space: Mapping[Any, Any]) -> dict[str, Any]:
    """The Ray Tune ``param_space`` for ``space`` (see :func:`parse_search_space`)."""
    from ray import tune

    out: dict[str, Any] = {}
    for name, spec in parse_search_space(space).items():
        if isinstance(spec, Choice):
            out[name] = tune.choice(list(spec.values))
        elif isinstance(spec, RandInt):
            out[name] = tune.randint(spec.low, spec.high)
        elif isinstance(spec, Uniform):
            out[name] = tune.uniform(spec.low, spec.high)
        else:
            out[name] = tune.loguniform(spec.low, spec.high)
    return out


def apply_best_config(settings, best_config: Mapping[str, Any]):
    """``settings`` (a :class:`tasks.settings.Settings`) with the study's best parameters put in
    its ``model`` and ``training`` sections; the next stages train with it."""
    model, training = apply_params(settings.model, settings.training, best_config)
    return settings.model_copy(update={"model": model, "training": training})

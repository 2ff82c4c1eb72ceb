"""The one typed configuration tree of driftloop.

Sources, later ones winning: defaults in code, a profile (``smoke``), a config file (TOML, YAML or
JSON, ``--config``), ``DRIFTLOOP_*`` environment variables (``DRIFTLOOP_TRAINING__EPOCHS=5``;
``__`` separates levels, values are parsed as JSON when they parse), then flow parameters /
``--param key.path=value`` overrides. Unknown keys are rejected with the source that supplied them.

The layering is pydantic-settings' (one source per layer, ordered in ``settings_customise_sources``);
what is ours is the strictness on top: exact ``DRIFTLOOP_`` spelling, no unknown variable, no key
given twice in a file, and errors that name the key and the layer, file or variable that set it.
"""

from __future__ import annotations

import copy
import os
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from pydantic import Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, InitSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict

from tasks.adversarial.config import AdversarialConfig
from tasks.config_base import Section
from tasks.config_sources import (
    ENV_NESTED_DELIMITER,
    ENV_PREFIX,
    EnvSource,
    config_path,
    file_label,
    file_source,
    leaf_paths,
)
from tasks.data.config import DataConfig
from tasks.drift.config import DriftConfig
from tasks.errors import ConfigError
from tasks.federated.config import FederatedConfig
from tasks.models.config import ModelConfig, TrainingConfig
from tasks.store.config import RegistryConfig, StoreConfig
from tasks.tuning.config import TuningConfig


class Settings(Section):
    """The whole configuration. ``seed`` is the one base seed every random choice derives from.

    A plain pydantic model on purpose: Prefect validates it from a dict in every flow run and on
    workers, and a ``BaseSettings`` would read that process's ``DRIFTLOOP_*`` variables again.
    """

    seed: int = Field(1337, ge=0)
    profile: str = "default"
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    training: TrainingConfig = TrainingConfig()
    store: StoreConfig = StoreConfig()
    registry: RegistryConfig = RegistryConfig()
    tuning: TuningConfig = TuningConfig()
    federated: FederatedConfig = FederatedConfig()
    adversarial: AdversarialConfig = AdversarialConfig()
    drift: DriftConfig = DriftConfig()

    @model_validator(mode="after")
    def _default_model_name(self):
        # registry.model_name defaults to a name derived from the data source (digits ->
        # digits-classifier, /data/churn.parquet -> churn-classifier), so a user's dataset does
        # not land in the digits model's registry.
        if self.registry.model_name is None:
            from tasks.data.sources import model_name_for_source

            self.registry.model_name = model_name_for_source(self.data.source)
        return self

    def resolved(self) -> dict[str, Any]:
        """The JSON form stored with every artifact (secrets masked)."""
        return self.model_dump(mode="json")


# Profiles are layers applied over the defaults, under the file, env and parameters.
PROFILES: dict[str, dict[str, Any]] = {
    "default": {},
    # Every flow finishes in well under a minute on 2 CPU cores; used by tests and `--smoke`.
    "smoke": {
        "training": {"epochs": 12, "batch_size": 32, "lr": 3e-3, "num_threads": 1},
        "tuning": {"max_t": 3, "eta": 3, "num_samples": 5},
        "federated": {"num_clients": 4, "rounds": 4, "local_epochs": 3, "min_fit_clients": 2},
        "adversarial": {"epochs": 3, "steps": 3, "eval_steps": 5, "eval_epsilons": [0.0, 0.1, 0.3, 1.0]},
        "drift": {"reference_size": 200},
    },
}


def load_settings(
    config_file: str | os.PathLike | None = None,
    profile: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Resolve the configuration from all sources (see module docstring) and validate it.

    ``overrides`` may be nested (``{"training": {"epochs": 3}}``) or dotted (``{"training.epochs": 3}``).
    ``DRIFTLOOP_CONFIG`` and ``DRIFTLOOP_PROFILE`` name a file / profile when the arguments don't.
    ``environ`` replaces ``os.environ`` as the source of ``DRIFTLOOP_*`` variables (tests pass ``{}``).
    """
    environ = os.environ if environ is None else environ
    config_file = config_file or environ.get("DRIFTLOOP_CONFIG") or None
    profile = profile or environ.get("DRIFTLOOP_PROFILE") or "default"
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; known: {', '.join(sorted(PROFILES))}")
    call = _Call(profile, config_path(config_file) if config_file else None, environ, _parameters(overrides))

    token = _CALL.set(call)
    try:
        layered: _LayeredSettings | None = _LayeredSettings()
        errors = []
    except ValidationError as e:
        layered, errors = None, e.errors()
    finally:
        _CALL.reset(token)

    origin = call.origin()
    problems = [
        (".".join(str(p) for p in item["loc"]), "unknown key" if item["type"] == "extra_forbidden" else item["msg"])
        for item in errors
    ]
    lines = [f"  {key or '(top level)'}: {msg} (from {_source_of(key, origin)})" for key, msg in problems]
    lines += [f"  {key}: {msg} (from environment variable {name})" for key, msg, name in call.env_unapplied()]
    if lines or layered is None:
        raise ConfigError("\n".join(["invalid configuration:", *lines]))
    # The public type is the plain model, made from the dump the way a flow run re-validates it.
    return Settings.model_validate(layered.model_dump())


def env_layer(environ: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """The ``DRIFTLOOP_*`` variables as a nested dict (as the environment layer reads them), and a
    map from dotted key to variable name. Variables that name no key are in the map only."""
    source = EnvSource(_LayeredSettings, environ)
    return source(), dict(source.names)


# --- the layers, in pydantic-settings' order (the sources: tasks/config_sources.py) -------------------


@dataclass
class _Call:
    """The inputs of one ``load_settings`` call and the sources made from them, lowest layer first."""

    profile: str
    config_file: Path | None
    environ: Mapping[str, str]
    params: dict[str, Any]
    sources: list[tuple[str, PydanticBaseSettingsSource]] = field(default_factory=list)

    def origin(self) -> dict[str, tuple[int, str]]:
        """Dotted key -> (layer rank, what set it) for every key a layer set; the highest layer wins."""
        out: dict[str, tuple[int, str]] = {}
        for rank, (label, source) in enumerate(self.sources):
            if isinstance(source, EnvSource):
                out.update({key: (rank, f"environment variable {name}") for key, name in source.names.items()})
            else:
                out.update({key: (rank, label) for key in leaf_paths(source())})
        return out

    def env_unapplied(self) -> list[tuple[str, str, str]]:
        env = next((s for _, s in self.sources if isinstance(s, EnvSource)), None)
        return env.unapplied() if env is not None else []


# settings_customise_sources is a classmethod without arguments of its own; the call's inputs reach it here.
_CALL: ContextVar[_Call] = ContextVar("driftloop_settings_call")


class _LayeredSettings(BaseSettings, Settings):
    """``Settings`` read through the layers; only ``load_settings`` constructs it (see ``Settings``)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_NESTED_DELIMITER,
        case_sensitive=True,  # keys in files and parameters (EnvSource: any case after DRIFTLOOP_)
        extra="forbid",
        validate_default=False,  # as in Settings: the defaults in code are not re-checked
        validate_assignment=True,
        protected_namespaces=(),
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # pydantic-settings' own env source reads os.environ; ours reads the mapping load_settings got.
        call = _CALL.get()
        profile = {"profile": call.profile, **copy.deepcopy(PROFILES[call.profile])}
        call.sources = [(f"profile {call.profile!r}", InitSettingsSource(settings_cls, profile))]
        if call.config_file is not None:
            call.sources.append((file_label(call.config_file), file_source(settings_cls, call.config_file)))
        call.sources.append(("environment", EnvSource(settings_cls, call.environ)))
        call.sources.append(("parameters", InitSettingsSource(settings_cls, call.params)))
        return tuple(source for _, source in reversed(call.sources))  # highest precedence first


# --- parameters and error sources ----------------------------------------------------------------


def deep_merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``over`` into a copy of ``base``; nested dicts merge, everything else replaces."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def set_path(tree: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``tree["a"]["b"] = value`` for ``dotted == "a.b"``, creating levels as needed."""
    parts = [p for p in dotted.split(".") if p]
    if not parts:
        raise ConfigError(f"empty configuration key in override {dotted!r}")
    node = tree
    for p in parts[:-1]:
        nxt = node.setdefault(p, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"configuration key {dotted!r}: {p!r} is a value, not a section")
        node = nxt
    node[parts[-1]] = value


def _parameters(overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for k, v in (overrides or {}).items():
        if isinstance(v, Mapping) and "." not in k:
            params = deep_merge(params, {k: v})
        else:
            set_path(params, k, v)
    return params


def _source_of(key: str, origin: Mapping[str, tuple[int, str]]) -> str:
    """What set ``key``: its own layer, else that of the section a layer gave whole (a JSON variable,
    a list), else, for a rule across a section's keys, every layer that set one, highest first."""
    parts = key.split(".") if key else []
    for n in range(len(parts), 0, -1):
        if (hit := origin.get(".".join(parts[:n]))) is not None:
            return hit[1]
    under = sorted({v for k, v in origin.items() if not key or k.startswith(key + ".")}, reverse=True)
    return " and ".join(dict.fromkeys(label for _, label in under)) or "defaults"

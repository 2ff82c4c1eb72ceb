"""The one typed configuration tree of driftloop.

Sources, later ones winning: defaults in code, a profile (``smoke``), a config file (TOML or
YAML, ``--config``), ``DRIFTLOOP_*`` environment variables (``DRIFTLOOP_TRAINING__EPOCHS=5``;
``__`` separates levels, values are parsed as JSON when they parse), then flow parameters /
``--param key.path=value`` overrides. Unknown keys are rejected with the source that supplied them.
"""

from __future__ import annotations

import copy
import json
import os
import tomllib
from pathlib import Path
from typing import Any, Mapping

import yaml
from pydantic import Field, ValidationError, model_validator

from tasks.adversarial.config import AdversarialConfig
from tasks.config_base import Section
from tasks.data.config import DataConfig
from tasks.drift.config import DriftConfig
from tasks.errors import ConfigError
from tasks.federated.config import FederatedConfig
from tasks.models.config import ModelConfig, TrainingConfig
from tasks.store.config import RegistryConfig, StoreConfig
from tasks.tuning.config import TuningConfig

ENV_PREFIX = "DRIFTLOOP_"


class Settings(Section):
    """The whole configuration. ``seed`` is the one base seed every random choice derives from."""

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


def deep_merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``over`` into a copy of ``base``; nested dicts merge, everything else replaces."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _parse_scalar(text: str) -> Any:
    try:
        return json.loads(text)
    except (json.JSONDecodeError, ValueError):
        return text


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


def read_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """Read a TOML (.toml) or YAML (.yaml/.yml) config file into a dict; errors name the file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"config file {str(p)!r} is not UTF-8 text (byte {e.start}: {e.reason}); save it as UTF-8"
        ) from None
    except OSError as e:
        raise ConfigError(f"config file {str(p)!r} cannot be read: {e.strerror or e}") from None
    try:
        if p.suffix == ".toml":
            data = tomllib.loads(text)  # TOML itself refuses a key defined twice
        elif p.suffix in (".yaml", ".yml"):
            data = yaml.load(text, Loader=_UniqueKeyLoader) or {}
        elif p.suffix == ".json":
            data = json.loads(text, object_pairs_hook=_unique_json_object)
        else:
            raise ConfigError(f"config file {str(p)!r}: use .toml, .yaml/.yml or .json")
    except (tomllib.TOMLDecodeError, yaml.YAMLError, json.JSONDecodeError, _DuplicateKey) as e:
        raise ConfigError(f"config file {str(p)!r} is malformed: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(p)!r} must hold a mapping at the top level")
    return data


class _DuplicateKey(ValueError):
    pass


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a mapping key given twice (PyYAML keeps the last one silently)."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"duplicate key {key!r} (first at line {seen[key] + 1})",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def _unique_json_object(pairs):
    out = {}
    for k, v in pairs:
        if k in out:
            raise _DuplicateKey(f"duplicate key {k!r}")
        out[k] = v
    return out


def env_layer(environ: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """The ``DRIFTLOOP_*`` variables as a nested dict, and a map from dotted key to variable name."""
    tree: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for name, raw in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX) or name in _ENV_NOT_CONFIG:
            continue
        dotted = ".".join(part.lower() for part in name[len(ENV_PREFIX) :].split("__"))
        set_path(tree, dotted, _parse_scalar(raw))
        origin[dotted] = name
    return tree, origin


# Variables with the prefix that select things rather than set keys.
_ENV_NOT_CONFIG = {"DRIFTLOOP_CONFIG", "DRIFTLOOP_PROFILE"}


def _leaf_paths(tree: Mapping[str, Any], prefix: str = "") -> list[str]:
    out = []
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.extend(_leaf_paths(v, key + "."))
        else:
            out.append(key)
    return out


def load_settings(
    config_file: str | os.PathLike | None = None,
    profile: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Resolve the configuration from all sources (see module docstring) and validate it.

    ``overrides`` may be nested (``{"training": {"epochs": 3}}``) or dotted (``{"training.epochs": 3}``).
    ``DRIFTLOOP_CONFIG`` and ``DRIFTLOOP_PROFILE`` name a file / profile when the arguments don't.
    """
    environ = os.environ if environ is None else environ
    config_file = config_file or environ.get("DRIFTLOOP_CONFIG") or None
    profile = profile or environ.get("DRIFTLOOP_PROFILE") or "default"
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; known: {', '.join(sorted(PROFILES))}")

    layers: list[tuple[str, dict[str, Any]]] = [(f"profile {profile!r}", PROFILES[profile])]
    if config_file:
        layers.append((f"config file {str(config_file)!r}", read_config_file(config_file)))
    env_tree, env_origin = env_layer(environ)
    layers.append(("environment", env_tree))
    params: dict[str, Any] = {}
    for k, v in (overrides or {}).items():
        if isinstance(v, Mapping) and "." not in k:
            params = deep_merge(params, {k: v})
        else:
            set_path(params, k, v)
    layers.append(("parameters", params))

    merged: dict[str, Any] = {"profile": profile}
    origin: dict[str, str] = {}
    for source, layer in layers:
        merged = deep_merge(merged, layer)
        for leaf in _leaf_paths(layer):
            origin[leaf] = f"environment variable {env_origin[leaf]}" if source == "environment" else source
    try:
        return Settings.model_validate(merged)
    except ValidationError as e:
        raise ConfigError(_explain(e, origin)) from None


def _explain(err: ValidationError, origin: Mapping[str, str]) -> str:
    lines = ["invalid configuration:"]
    for item in err.errors():
        key = ".".join(str(p) for p in item["loc"])
        src = origin.get(key)
        if src is None:  # a section-level error: find a leaf under it
            src = next((v for k, v in origin.items() if k.startswith(key + ".")), "defaults")
        msg = "unknown key" if item["type"] == "extra_forbidden" else item["msg"]
        lines.append(f"  {key or '(top level)'}: {msg} (from {src})")
    return "\n".join(lines)

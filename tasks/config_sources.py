"""The layers of the configuration as pydantic-settings sources, with driftloop's strictness on top.

pydantic-settings does the reading (``DRIFTLOOP_`` prefix, ``__`` between levels, JSON for lists and
sections, TOML/YAML/JSON files); these subclasses add what it does not: the variables come from a
given mapping (``os.environ`` or a test's dict), only the exact upper-case prefix counts, scalar values
are JSON when they parse, a variable that names no key is reported rather than ignored, a file may not
give a key twice, and every failure is a :class:`~tasks.errors.ConfigError` naming the file or variable.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Hashable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

import yaml
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    JsonConfigSettingsSource,
    PydanticBaseSettingsSource,
    TomlConfigSettingsSource,
    YamlConfigSettingsSource,
)

from tasks.errors import ConfigError

if TYPE_CHECKING:
    from pydantic.fields import FieldInfo
    from pydantic_settings.sources.types import Traversable

ENV_PREFIX = "DRIFTLOOP_"
ENV_NESTED_DELIMITER = "__"
# Variables with the prefix that select things rather than set keys: the config file and profile, and
# the ones driftloop sets for its own processes (a worker's checkout, the Flower simulation's work dir,
# data and test faults), which a process that loads settings may have inherited.
ENV_NOT_CONFIG = {
    "DRIFTLOOP_CONFIG",
    "DRIFTLOOP_PROFILE",
    "DRIFTLOOP_CHECKOUT",
    "DRIFTLOOP_FED_WORKDIR",
    "DRIFTLOOP_FED_SIM_DATA",
    "DRIFTLOOP_FED_FAULTS",
}


class EnvSource(EnvSettingsSource):
    """The ``DRIFTLOOP_*`` variables of ``environ``; ``names`` maps each dotted key to its variable."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]):
        # Exactly the upper-case prefix, as before pydantic-settings (which would take any case).
        self.variables = {k: v for k, v in environ.items() if k.startswith(ENV_PREFIX) and k not in ENV_NOT_CONFIG}
        self.names = {_dotted(name): name for name in sorted(self.variables)}
        self.applied: dict[str, Any] = {}
        # Prefix and delimiter come from the settings class's model_config; names match in any case
        # there (files and parameters are case-sensitive), as before: DRIFTLOOP_TRAINING__EPOCHS.
        super().__init__(settings_cls, case_sensitive=False)

    def _load_env_vars(self) -> Mapping[str, str | None]:  # pydantic-settings' own reads os.environ
        return {k.lower(): v for k, v in self.variables.items()}

    def _coerce_env_val_strict(self, field: FieldInfo | None, value: Any) -> Any:
        # pydantic-settings passes every scalar it reads from a variable through this hook. Values are
        # JSON when they parse (`5` the number, `true` the boolean), else text: the sections' scalars
        # are strict (tasks/config_base.py), so the text "5" would not be an int.
        return parse_scalar(value) if isinstance(value, str) else value

    def prepare_field_value(self, field_name: str, field: FieldInfo, value: Any, value_is_complex: bool) -> Any:
        try:
            return super().prepare_field_value(field_name, field, value, value_is_complex)
        except ValueError:  # a list or section given as text that is not JSON; name the variable
            under = [(k, n) for k, n in self.names.items() if k == field_name or k.startswith(field_name + ".")]
            bad = [(k, n) for k, n in under if not _is_json(self.variables[n])] or under
            lines = [f"  {k}: expects JSON, got {self.variables[n]!r} (from environment variable {n})" for k, n in bad]
            raise ConfigError("\n".join(["invalid configuration:", *lines])) from None

    def __call__(self) -> dict[str, Any]:
        self.applied = super().__call__()
        return self.applied

    def unapplied(self) -> list[tuple[str, str, str]]:
        """(key, problem, variable) for each variable that set nothing. pydantic-settings reads only the
        variables of known top-level keys, so a misspelled one would otherwise be ignored silently."""
        leaves = leaf_paths(self.applied)
        out = []
        for key, name in self.names.items():
            if not any(leaf == key or leaf.startswith(key + ".") for leaf in leaves):
                known_top = key in self.settings_cls.model_fields  # dropped only when its value is null
                out.append((key or "(top level)", "must not be null" if known_top else "unknown key", name))
        return out


def _dotted(name: str) -> str:
    return ".".join(part.lower() for part in name[len(ENV_PREFIX) :].split(ENV_NESTED_DELIMITER))


def parse_scalar(text: str) -> Any:
    """``text`` as JSON when it parses, else ``text`` itself."""
    try:
        return json.loads(text)
    except (json.JSONDecodeError, ValueError):
        return text


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except (json.JSONDecodeError, ValueError):
        return False
    return True


def leaf_paths(tree: Mapping[str, Any], prefix: str = "") -> list[str]:
    """The dotted keys of the values in ``tree`` (an empty section counts as one)."""
    out = []
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.extend(leaf_paths(v, key + "."))
        else:
            out.append(key)
    return out


# --- the config file: pydantic-settings' file sources over strict readers ------------------------


def config_path(path: str | os.PathLike) -> Path:
    """``path`` checked: an existing file with a known suffix."""
    p = Path(path)
    if not p.is_file():  # pydantic-settings skips a missing file silently
        raise ConfigError(f"config file {str(p)!r} does not exist")
    if p.suffix not in _FILE_SOURCES:
        raise ConfigError(f"config file {str(p)!r}: use .toml, .yaml/.yml or .json")
    return p


def file_label(path: Path) -> str:
    return f"config file {str(path)!r}"


def file_source(settings_cls: type[BaseSettings], path: Path) -> PydanticBaseSettingsSource:
    """The source that reads ``path`` (a :func:`config_path`)."""
    return _FILE_SOURCES[path.suffix](settings_cls, path)


def _read_mapping(path: Path | Traversable, parse: Callable[[str], Any]) -> dict[str, Any]:
    """The file's top-level mapping; every failure is a ConfigError naming the file."""
    name = file_label(Path(str(path)))
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{name} is not UTF-8 text (byte {e.start}: {e.reason}); save it as UTF-8") from None
    except OSError as e:
        raise ConfigError(f"{name} cannot be read: {e.strerror or e}") from None
    try:
        data = parse(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError, json.JSONDecodeError, _DuplicateKey) as e:
        raise ConfigError(f"{name} is malformed: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{name} must hold a mapping at the top level")
    for key in data:  # YAML allows `1: 2`; a key that is not text names no setting
        if not isinstance(key, str):
            raise ConfigError(f"invalid configuration:\n  {key!r}: unknown key, not text (from {name})")
    return data


class _TomlFile(TomlConfigSettingsSource):
    def _read_file(self, file_path: Path | Traversable) -> dict[str, Any]:
        return _read_mapping(file_path, tomllib.loads)  # TOML itself refuses a key defined twice


class _YamlFile(YamlConfigSettingsSource):
    def _read_file(self, file_path: Path | Traversable) -> dict[str, Any]:
        return _read_mapping(file_path, lambda text: yaml.load(text, Loader=_UniqueKeyLoader) or {})


class _JsonFile(JsonConfigSettingsSource):
    def _read_file(self, file_path: Path | Traversable) -> dict[str, Any]:
        return _read_mapping(file_path, lambda text: json.loads(text, object_pairs_hook=_unique_json_object))


_FILE_SOURCES: dict[str, Callable[[type[BaseSettings], Path], PydanticBaseSettingsSource]] = {
    ".toml": _TomlFile,
    ".yaml": _YamlFile,
    ".yml": _YamlFile,
    ".json": _JsonFile,
}


class _DuplicateKey(ValueError):
    pass


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a mapping key given twice (PyYAML keeps the last one silently)."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, Hashable):
                continue  # SafeLoader refuses it below ("found unhashable key")
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

"""YAML profiles and `key=value` overrides into typed config: unknown keys and wrong types fail by name."""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import yaml

from vlclip_core.config.sections import VlclipConfig
from vlclip_core.errors import ConfigError

_OPTIONAL_TYPES = {"Optional[float]": float, "Optional[int]": int, "Optional[str]": str}
_UNION_TYPES = {"Union[int, str]": (int, str)}  # a count or a word such as "auto"; the section validates


def load_config(path: Optional[str] = None, overrides: tuple = ()) -> VlclipConfig:
    """Load a YAML profile, apply `key=value` overrides (dotted keys, YAML values) and validate."""
    raw = read_profile(path)
    for item in overrides:
        apply_override(raw, item)
    return build(VlclipConfig, raw, "").validate()


def read_profile(path: Optional[str]) -> dict:
    """A YAML profile's top-level mapping ({} without a path); not YAML or not a mapping: ConfigError."""
    if not path:
        return {}
    with open(path, encoding="utf-8") as fh:
        try:
            raw = yaml.safe_load(fh) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(raw).__name__}")
    return raw


def apply_override(raw: dict, item: str) -> None:
    """Apply one `dotted.key=yaml-value` override to a raw profile mapping, in place."""
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects key=value, got {item!r}")
    parts = key.strip().split(".")
    node = raw
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {key}: {part} is not a section")
    try:
        node[parts[-1]] = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError as err:
        raise ConfigError(
            f"--set {key.strip()}: {value!r} is not a valid YAML value "
            f"({_yaml_problem(err)}); quote it, e.g. {key.strip()}='\"...\"'"
        ) from err


def _yaml_problem(err: yaml.YAMLError) -> str:
    return str(getattr(err, "problem", None) or err).strip()


def build(cls, raw: Any, where: str):
    """Build dataclass `cls` from a mapping, rejecting unknown keys and wrong types by name."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where or 'config'} must be a mapping, got {raw!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ConfigError(f"unknown config key(s) {', '.join(_join(where, k) for k in unknown)}")
    kwargs = {name: _coerce(fields[name], value, _join(where, name)) for name, value in raw.items()}
    return cls(**kwargs)


def _coerce(f: dataclasses.Field, value: Any, where: str) -> Any:
    default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    if dataclasses.is_dataclass(default):
        return build(type(default), value or {}, where)
    if value is None:
        return value
    if str(f.type) in _UNION_TYPES:
        kinds = _UNION_TYPES[str(f.type)]
        if isinstance(value, bool) or not isinstance(value, kinds):
            raise ConfigError(f"{where} must be {' or '.join(k.__name__ for k in kinds)}, got {value!r}")
        return value
    kind = type(default) if default is not None else _OPTIONAL_TYPES.get(str(f.type))
    if kind is None:
        return value
    expected = (int, float) if kind is float else kind
    if kind in (int, float) and isinstance(value, bool):
        raise ConfigError(f"{where} must be a number, got {value!r}")
    if not isinstance(value, expected):
        raise ConfigError(f"{where} must be {kind.__name__}, got {value!r}")
    return float(value) if kind is float else value


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key

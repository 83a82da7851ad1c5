"""Validators shared by every config section: each raises ConfigError naming the key and the bad value."""

from __future__ import annotations

import re
from typing import Any

from vlclip_core.errors import ConfigError

# Model dtype names (models.detector.dtype, models.llm.dtype); models.clip.precision takes the short forms.
DTYPES = ("float32", "float16", "bfloat16")
PRECISIONS = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")


def one_of(name: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")


def positive(name: str, value: Any) -> None:
    if value is None or value <= 0:
        raise ConfigError(f"{name} must be > 0, got {value!r}")


def fraction(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"{name} must be in [0, 1], got {value}")


def check_run_id(run_id: str, name: str = "run_id") -> str:
    """A run id is a directory name and a SQL literal: letters, digits and . _ : - only."""
    if not isinstance(run_id, str) or not _RUN_ID.fullmatch(run_id):
        raise ConfigError(
            f"{name} must be 1-128 of letters, digits and . _ : - (starting with a letter or "
            f"digit), got {run_id!r}"
        )
    return run_id


def check_prompt_template(template: str) -> None:
    """The detector prompt template may use {product_type} only (the item's type, or title words)."""
    try:
        rendered = template.format(product_type="x")
    except (KeyError, IndexError, ValueError) as err:
        raise ConfigError(
            f"models.detector.prompt_template may only use {{product_type}}, got {template!r}"
        ) from err
    if not rendered.strip():
        raise ConfigError(f"models.detector.prompt_template renders an empty prompt: {template!r}")


def parse_host_entry(entry: Any) -> tuple:
    """("name", port or None) of a host entry: "name", "name:port", "[ipv6]" or "[ipv6]:port"
    (a bare IPv6 address has no port); ValueError names a bad entry."""
    text = str(entry).strip().lower()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else (None if not rest else "bad")
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    else:
        host, port_text = text, None
    if not host or (port_text is not None and not port_text.isdigit()):
        raise ValueError(f"{entry!r} is not host, host:port or [ipv6]:port")
    return host, int(port_text) if port_text is not None else None


def check_host_entries(name: str, entries: Any) -> None:
    if not isinstance(entries, (list, tuple)):
        raise ConfigError(f"{name} must be a list of host or host:port entries, got {entries!r}")
    for entry in entries:
        try:
            parse_host_entry(entry)
        except ValueError as err:
            raise ConfigError(f"{name}: {err}") from err

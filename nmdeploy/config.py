"""Build frozen config dataclasses from plain mappings, rejecting unknown keys by name."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

from nmdeploy.errors import ConfigError

__all__ = ["build_config", "env_flag"]

T = TypeVar("T")


def build_config(cls: type[T], values: Mapping[str, Any] | None, where: str) -> T:
    """Return ``cls(**values)`` after checking every key is a field of ``cls``.

    ``where`` names the place the values came from (e.g. ``"method 'maxq' options"``), so
    the error points the user at what to edit.
    """
    values = dict(values or {})
    fields = [f.name for f in dataclasses.fields(cls) if f.init]  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown key(s) {', '.join(map(repr, unknown))} in {where}; "
            f"allowed: {', '.join(fields) or '(none)'}"
        )
    return cls(**values)


def env_flag(value: str | None, name: str, default: bool = False) -> bool:
    """Parse an environment boolean strictly: only 1/0/true/false (any case) are accepted."""
    if value is None or value == "":
        return default
    lowered = value.strip().lower()
    if lowered in ("1", "true"):
        return True
    if lowered in ("0", "false"):
        return False
    raise ConfigError(f"environment variable {name}={value!r} is not a boolean; use 1/0/true/false")

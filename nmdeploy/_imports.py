"""Resolve ``package.module:name`` plug-in specs (models, data) the same way everywhere."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

from nmdeploy.errors import InputError

__all__ = ["import_target"]


def import_target(target: str, spec: str, kind: str) -> Any:
    """Import ``module:name`` from ``target``; ``spec`` and ``kind`` ("model", "data") word the error."""
    module_name, _, name = target.partition(":")
    here = str(Path.cwd())
    if here not in sys.path:
        sys.path.append(here)  # like `python -m`: a package in the current folder resolves too
    try:
        return getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as exc:
        raise InputError(f"{kind} spec {spec!r} cannot be imported ({exc}); check the module path and name") from None

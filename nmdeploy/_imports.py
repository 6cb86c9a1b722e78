"""Resolve and call ``package.module:name`` plug-in specs (models, data, tasks) the same way everywhere.

A plug-in is the user's own code: whatever it raises (or if it is no callable, or wants
other arguments) becomes one :class:`InputError` line that names the spec, the exception
type and its message; the original stays chained for ``--debug``.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

from nmdeploy.errors import InputError, NMDeployError, describe

__all__ = ["call_target", "import_target"]


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
    except Exception as exc:  # the module itself fails while it is imported
        raise InputError(f"{kind} spec {spec!r}: importing {module_name} raised {describe(exc)}") from exc


def call_target(target: str, spec: str, kind: str, *args: Any) -> Any:
    """Import ``target`` and call it with ``args``: anything the user's code raises is one line."""
    function = import_target(target, spec, kind)
    if not callable(function):
        raise InputError(
            f"{kind} spec {spec!r} names a value of type {type(function).__name__}, not a callable; "
            "name a function or a class"
        )
    try:
        return function(*args)
    except NMDeployError:
        raise  # already one line (e.g. a built-in example's own check)
    except Exception as exc:
        raise InputError(
            f"{kind} spec {spec!r} raised {describe(exc)}; fix that code, or run with --debug for the traceback"
        ) from exc

"""Lazy imports of optional dependencies with an actionable error when they are missing."""

from __future__ import annotations

import importlib
from types import ModuleType

from nmdeploy.errors import MissingDependencyError, first_line

__all__ = ["require"]

# Why each optional module may be missing and how to get it; shown in the error message.
_HINTS = {
    "tensorrt": "install nmdeploy[trt] on a machine with an NVIDIA GPU and TensorRT (on Jetson use JetPack's TensorRT)",
    "transformers": "hf: models and text data need it: install nmdeploy[hf] (or pip install transformers)",
}


def require(name: str, extra: str | None = None) -> ModuleType:
    """Import ``name`` or raise :class:`MissingDependencyError` saying how to install it.

    Import errors other than "not found" (e.g. a missing shared library behind a Python
    wheel) are reported with their original text, since that is what the user must fix.
    """
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        hint = _HINTS.get(name) or (f"install nmdeploy[{extra}]" if extra else f"pip install {name}")
        detail = first_line(exc)
        raise MissingDependencyError(f"{name} is not importable ({detail}); {hint}") from exc

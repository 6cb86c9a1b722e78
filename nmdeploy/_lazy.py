"""Package attributes imported on first use, so that importing a package stays cheap.

``nmdeploy``, ``nmdeploy.sparsity`` (and its ``methods``), ``nmdeploy.train``, ``nmdeploy.data`` and
``nmdeploy.engine`` expose their public names this way: ``import nmdeploy``, reading a config class
(and so ``nmdeploy --help``) never imports torch, onnx or tensorrt.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any

__all__ = ["lazy_getattr"]


def lazy_getattr(package: str, names: Mapping[str, str], cache: MutableMapping[str, Any]) -> Callable[[str], Any]:
    """A module ``__getattr__`` resolving ``names`` (public name -> defining module) into ``cache``."""

    def __getattr__(name: str) -> Any:
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        cache[name] = value
        return value

    return __getattr__

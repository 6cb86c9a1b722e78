"""TensorRT engines: build (10.x and 11.x), layer report, timing, and the target bundle.

Importing this package never imports TensorRT; the functions that need it raise
:class:`EngineUnavailable` (exit code 3 on the CLI) with the fix when it is missing.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "build_engine": "nmdeploy.engine.build",
    "EngineReport": "nmdeploy.engine.build",
    "bench_engines": "nmdeploy.engine.bench",
    "write_bundle": "nmdeploy.engine.bundle",
    "EngineUnavailable": "nmdeploy.engine.trt",
    "import_tensorrt": "nmdeploy.engine.trt",
    "probe": "nmdeploy.engine.trt",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'nmdeploy.engine' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)

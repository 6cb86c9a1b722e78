"""TensorRT engines: build (10.x and 11.x), layer report, timing, and the target bundle.

Importing this package never imports TensorRT; the functions that need it raise
:class:`EngineUnavailable` (exit code 3 on the CLI) with the fix when it is missing.
"""

from __future__ import annotations

from nmdeploy._lazy import lazy_getattr

_LAZY = {
    "build_engine": "nmdeploy.engine.build",
    "EngineReport": "nmdeploy.engine.build",
    "bench_engines": "nmdeploy.engine.bench",
    "write_bundle": "nmdeploy.engine.bundle",
    "EngineUnavailable": "nmdeploy.errors",
    "import_tensorrt": "nmdeploy.engine.trt",
    "probe": "nmdeploy.engine.trt",
}

__all__ = list(_LAZY)
__getattr__ = lazy_getattr("nmdeploy.engine", _LAZY, globals())

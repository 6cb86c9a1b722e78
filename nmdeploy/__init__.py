"""nmdeploy: take a trained PyTorch model to a fast sparse (2:4) INT8 TensorRT engine.

The top-level names are resolved lazily so that ``import nmdeploy`` (and therefore
``nmdeploy --help``) never imports torch, onnx or tensorrt.
"""

from __future__ import annotations

from nmdeploy._lazy import lazy_getattr

__version__ = "0.1.0"

# public name -> module that defines it
_LAZY = {
    "sparsify": "nmdeploy.sparsity.api",
    "finalize": "nmdeploy.sparsity.api",
    "Sparsifier": "nmdeploy.sparsity.api",
    "nm_mask": "nmdeploy.sparsity.nm",
    "maxq_mask": "nmdeploy.sparsity.nm",
    "export_onnx": "nmdeploy.export.onnx",
    "verify_onnx": "nmdeploy.export.verify",
    "quantize_int8": "nmdeploy.quant.int8",
    "lint_qdq": "nmdeploy.quant.lint",
    "evaluate_onnx": "nmdeploy.quant.evaluate",
}

__all__ = ["__version__", *_LAZY]
__getattr__ = lazy_getattr("nmdeploy", _LAZY, globals())


def __dir__() -> list[str]:
    return sorted(__all__)

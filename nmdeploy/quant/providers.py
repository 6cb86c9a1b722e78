"""onnxruntime sessions on the CPU, CUDA or TensorRT execution provider (``--provider``).

``onnxruntime-gpu`` lists the CUDA and TensorRT providers whether or not their libraries and a
GPU are there, and when one cannot start it quietly runs on the CPU instead. A measurement
that silently ran on the wrong device is worse than none, so a session that did not get the
provider it was asked for is refused (:class:`EngineUnavailable`, exit 3, like a missing
TensorRT) with what is missing and the fix.

The TensorRT provider gets the options that make it build what nmdeploy builds: INT8 for a
Q/DQ graph (explicit quantization: no calibration table), sparse weights, and an engine and
timing cache so that the second run of a model skips the minutes-long build.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from pathlib import Path
from typing import Any

from nmdeploy.errors import EngineUnavailable, InputError, first_line

__all__ = ["PROVIDERS", "provider_options", "start_session"]

PROVIDERS = ("cpu", "cuda", "tensorrt")
_NAMES = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}
_NEEDS = {
    "cuda": "an NVIDIA GPU with the CUDA and cuDNN libraries this onnxruntime-gpu was built for",
    "tensorrt": "an NVIDIA GPU with CUDA, cuDNN and TensorRT's libraries (pip install tensorrt) this onnxruntime-gpu was built for",
}


def provider_options(provider: str, path: str | Path, cache: str | Path | None = None) -> list[Any]:
    """onnxruntime's ``providers=`` list for ``provider``, best first, the CPU last (for the ops the
    GPU providers leave to it)."""
    if provider not in PROVIDERS:
        raise InputError(f"provider {provider!r} is unknown; use one of {', '.join(PROVIDERS)}")
    if provider == "cpu":
        return [_NAMES["cpu"]]
    chain: list[Any] = [_NAMES["cuda"], _NAMES["cpu"]]
    if provider == "tensorrt":
        from nmdeploy._onnx import has_qdq  # onnx, loaded only for this provider

        folder = str(cache or Path(tempfile.gettempdir()) / "nmdeploy-ort-trt")
        options = {
            "trt_int8_enable": has_qdq(path),  # a Q/DQ graph: the scales are in it, no calibration table
            "trt_sparsity_enable": True,
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": folder,
            "trt_timing_cache_enable": True,
            "trt_timing_cache_path": folder,
        }
        chain.insert(0, (_NAMES["tensorrt"], options))
    return chain


def start_session(path: str | Path, provider: str = "cpu", threads: int = 0, cache: str | Path | None = None) -> Any:
    """An ``onnxruntime.InferenceSession`` of ``path`` that really runs on ``provider``."""
    import onnxruntime as ort

    chain = provider_options(provider, path, cache)
    wanted = _NAMES[provider]
    if wanted not in ort.get_available_providers():
        raise EngineUnavailable(
            f"this onnxruntime ({ort.__version__}) has no {wanted} (it has {', '.join(ort.get_available_providers())})",
            "pip install onnxruntime-gpu (and uninstall any plain onnxruntime beside it)",
        )
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    if provider != "cpu":
        ort.set_default_logger_severity(4)  # its provider-load failure is reported below, in one line
    try:
        # onnxruntime prints its provider fallback ("EP Error ... Falling back") to stdout; it is reported below
        with contextlib.redirect_stdout(io.StringIO()):
            session = ort.InferenceSession(str(path), options, providers=chain)
    except Exception as exc:
        raise InputError(f"{path}: onnxruntime cannot load it ({first_line(exc)})") from None
    finally:
        if provider != "cpu":
            ort.set_default_logger_severity(2)
    if session.get_providers()[0] != wanted:
        raise EngineUnavailable(
            f"onnxruntime could not start {wanted} here (it fell back to {session.get_providers()[0]})",
            f"run where there is {_NEEDS[provider]}, or use --provider cpu",
        )
    return session

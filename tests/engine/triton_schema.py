"""Triton's own ``ModelConfig`` schema, to parse every ``config.pbtxt`` nmdeploy writes.

The protobuf module ships inside ``tritonclient`` (a test dependency). It is loaded from its
file, because ``tritonclient.grpc``'s package import needs grpcio, which the schema does not.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest


def model_config_module() -> Any:
    tritonclient = pytest.importorskip("tritonclient")
    path = Path(tritonclient.__file__).parent / "grpc" / "model_config_pb2.py"
    spec = importlib.util.spec_from_file_location("triton_model_config_pb2", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def parse_config(path: Path) -> Any:
    """The ModelConfig message of a config.pbtxt; raises on anything Triton's schema rejects."""
    from google.protobuf import text_format

    schema = model_config_module()
    return text_format.Parse(path.read_text(), schema.ModelConfig())


def io_of(config: Any) -> tuple[list[tuple[str, str, list[int]]], list[tuple[str, str, list[int]]]]:
    """(inputs, outputs) as (name, TYPE_*, dims)."""
    schema = model_config_module()
    kind = schema.DataType.Name
    return (
        [(t.name, kind(t.data_type), list(t.dims)) for t in config.input],
        [(t.name, kind(t.data_type), list(t.dims)) for t in config.output],
    )


def accelerator(config: Any) -> dict[str, str]:
    (trt,) = config.optimization.execution_accelerators.gpu_execution_accelerator
    assert trt.name == "tensorrt"
    return dict(trt.parameters)

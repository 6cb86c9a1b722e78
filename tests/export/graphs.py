"""Hand-built ONNX graphs for the verifier tests."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def sparse_24(shape: tuple[int, ...], axis: int, seed: int = 0, dtype=np.float32) -> np.ndarray:
    """Random weights, exactly 2:4 along ``axis`` (the 2 largest of every 4 kept)."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(shape).astype(np.float32) + 0.01
    moved = np.moveaxis(w, axis, -1).copy()
    groups = moved.reshape(-1, 4)
    order = np.argsort(-np.abs(groups), axis=1)
    np.put_along_axis(groups, order[:, 2:], 0.0, axis=1)
    return np.moveaxis(groups.reshape(moved.shape), -1, axis).astype(dtype)


def model(nodes, initializers, inputs, outputs, opset: int = 17) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape) for name, shape in inputs],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in outputs],
        [numpy_helper.from_array(v, k) for k, v in initializers.items()],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m

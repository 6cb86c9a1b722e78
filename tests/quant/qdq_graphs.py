"""Hand-made Q/DQ graphs: one legal Conv -> Gemm model and the knobs to break each rule."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tests.export.graphs import sparse_24


def qdq_model(
    act_zp_dtype=np.int8,
    act_zp=0,
    weight_dtype=np.int8,
    act_scales=1,
    weight_axis=0,
    gemm_axis=0,
    weight_dq=True,
    opset=17,
    scale=0.05,
    qlinear=False,
    contrib=False,
    trans_b=1,
) -> onnx.ModelProto:
    """x -> Q/DQ -> Conv(W int8 -> DQ) -> Relu -> Flatten -> Q/DQ -> Gemm(B int8 -> DQ)."""
    w = sparse_24((8, 4, 3, 3), 1)
    w_scale = (np.abs(w).reshape(8, -1).max(1) / 127).astype(np.float32)
    w_q = np.round(w / w_scale[:, None, None, None]).astype(weight_dtype if weight_dtype is not np.uint8 else np.int8)
    if weight_dtype is np.uint8:
        w_q = (w_q.astype(np.int16) + 128).astype(np.uint8)
    b = sparse_24((10, 8 * 6 * 6), 1) if trans_b else sparse_24((8 * 6 * 6, 10), 0)
    b_scale = (np.abs(b).max(1 if trans_b else 0) / 127).astype(np.float32)
    b_q = np.round(b / (b_scale[:, None] if trans_b else b_scale[None, :])).astype(np.int8)
    inits = {
        "x_scale": np.full(act_scales, scale, np.float32) if act_scales > 1 else np.array(scale, np.float32),
        "x_zp": np.full(act_scales, act_zp, act_zp_dtype) if act_scales > 1 else np.array(act_zp, act_zp_dtype),
        "w_q": w_q,
        "w_scale": w_scale,
        "w_zp": np.zeros(8, w_q.dtype),
        "h_scale": np.array(0.1, np.float32),
        "h_zp": np.array(0, np.int8),
        "b_q": b_q,
        "b_scale": b_scale,
        "b_zp": np.zeros(10, np.int8),
        "bias": np.zeros(10, np.float32),
    }
    domain = "com.microsoft" if contrib else ""
    nodes = [
        helper.make_node(
            "QuantizeLinear",
            ["x", "x_scale", "x_zp"],
            ["xq"],
            name="x_q",
            domain=domain,
            **({"axis": 1} if act_scales > 1 else {}),
        ),
        helper.make_node(
            "DequantizeLinear",
            ["xq", "x_scale", "x_zp"],
            ["xd"],
            name="x_dq",
            domain=domain,
            **({"axis": 1} if act_scales > 1 else {}),
        ),
    ]
    if weight_dq:
        nodes.append(
            helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zp"], ["wd"], name="w_dq", axis=weight_axis)
        )
    if qlinear:
        nodes.append(
            helper.make_node(
                "QLinearConv",
                ["xq", "x_scale", "x_zp", "w_q", "w_scale", "w_zp", "h_scale", "h_zp"],
                ["hq"],
                name="qconv",
            )
        )
        nodes.append(helper.make_node("DequantizeLinear", ["hq", "h_scale", "h_zp"], ["c"], name="c_dq"))
    else:
        nodes.append(helper.make_node("Conv", ["xd", "wd" if weight_dq else "w_q"], ["c"], name="conv"))
    nodes += [
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Flatten", ["r"], ["f"], name="flatten"),
        helper.make_node("QuantizeLinear", ["f", "h_scale", "h_zp"], ["fq"], name="f_q"),
        helper.make_node("DequantizeLinear", ["fq", "h_scale", "h_zp"], ["fd"], name="f_dq"),
        helper.make_node("DequantizeLinear", ["b_q", "b_scale", "b_zp"], ["bd"], name="b_dq", axis=gemm_axis),
        helper.make_node("Gemm", ["fd", "bd", "bias"], ["y"], name="fc", transB=trans_b),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    opsets = [helper.make_opsetid("", opset)] + ([helper.make_opsetid("com.microsoft", 1)] if contrib else [])
    m = helper.make_model(graph, opset_imports=opsets)
    m.ir_version = 8
    return m

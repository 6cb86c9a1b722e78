"""The Q/DQ lint: a legal graph passes (and runs); each hand-broken rule is caught by name."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from nmdeploy.export.verify import verify_model
from nmdeploy.quant.lint import lint_qdq
from tests.quant.qdq_graphs import qdq_model


def _rules(model) -> list[tuple[str, str]]:
    return [(v.node, v.rule) for v in lint_qdq(model).violations]


@pytest.mark.parametrize("trans_b, gemm_axis", [(1, 0), (0, 1)])
def test_legal_graph_passes_runs_and_is_still_2_4(trans_b, gemm_axis):
    m = qdq_model(trans_b=trans_b, gemm_axis=gemm_axis)
    report = lint_qdq(m, "m")
    assert report.ok and report.violations == ()
    assert (report.quantize_nodes, report.dequantize_nodes) == (2, 4)
    session = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    out = session.run(None, {"x": np.ones((2, 4, 8, 8), np.float32)})[0]
    assert out.shape == (2, 10)
    assert verify_model(m, "2:4", "all").ok  # int8 weights behind DQ are checked too


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        ({"act_zp": 3}, [("x_q", "zero-point"), ("x_dq", "zero-point")]),
        ({"act_zp_dtype": np.uint8}, [("x_q", "int8"), ("x_dq", "int8")]),
        ({"weight_dtype": np.uint8}, [("w_dq", "int8"), ("w_dq", "int8")]),
        ({"act_scales": 4}, [("x_q", "per-axis"), ("x_dq", "per-axis")]),
        ({"weight_axis": 1}, [("w_dq", "per-axis")]),
        ({"gemm_axis": 1}, [("b_dq", "per-axis")]),
        ({"trans_b": 0, "gemm_axis": 0}, [("b_dq", "per-axis")]),
        ({"weight_dq": False}, [("conv", "weight-dq")]),
        ({"opset": 12}, [("(model)", "opset")]),
        ({"scale": 0.0}, [("x_q", "scale"), ("x_dq", "scale")]),
        ({"scale": -0.5}, [("x_q", "scale"), ("x_dq", "scale")]),
        ({"scale": float("inf")}, [("x_q", "scale"), ("x_dq", "scale")]),
        ({"contrib": True}, [("x_q", "domain"), ("x_dq", "domain")]),
    ],
    ids=[
        "asymmetric",
        "uint8-zero-point",
        "uint8-weight",
        "per-channel-activation",
        "conv-axis",
        "gemm-axis",
        "gemm-no-transB-axis",
        "missing-dq",
        "opset",
        "zero-scale",
        "negative-scale",
        "inf-scale",
        "contrib",
    ],
)
def test_each_rule_is_caught_at_the_node(kwargs, expected):
    assert _rules(qdq_model(**kwargs)) == expected


def test_qlinear_ops_are_rejected():
    rules = _rules(qdq_model(qlinear=True))
    assert ("qconv", "op") in rules


def test_quantize_without_zero_point_defaults_to_uint8_and_is_caught():
    m = qdq_model()
    q = next(n for n in m.graph.node if n.name == "f_q")
    del q.input[2]
    assert ("f_q", "zero-point") in _rules(m)


def test_violation_messages_name_the_rule_and_the_fix():
    v = lint_qdq(qdq_model(act_zp=3)).violations[0]
    assert str(v) == "x_q: [zero-point] zero point 3 != 0: asymmetric; use symmetric quantization"
    v = lint_qdq(qdq_model(weight_axis=1)).violations[0]
    assert str(v) == "w_dq: [per-axis] per-axis scales along axis 1; Conv weight needs the output-channel axis 0"

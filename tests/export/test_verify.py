"""The 2:4 verifier on hand-built graphs: every op, axis, transpose, Q/DQ and int8 case."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from nmdeploy.errors import InputError, PatternError
from nmdeploy.export.nmcheck import check_tensor
from nmdeploy.export.verify import verify_model, verify_onnx
from tests.export.graphs import model, sparse_24


def _one(report):
    (layer,) = report.layers
    return layer


def test_conv_weight_is_checked_along_input_channels():
    w = sparse_24((8, 16, 3, 3), axis=1)
    m = model([helper.make_node("Conv", ["x", "W"], ["y"], name="conv")], {"W": w}, [("x", [1, 16, 8, 8])], ["y"])
    layer = _one(verify_model(m))
    assert (layer.node, layer.op, layer.weight, layer.shape, layer.axis) == ("conv", "Conv", "W", (8, 16, 3, 3), 1)
    assert (layer.groups, layer.violations, layer.first_violation) == (8 * 4 * 9, 0, None)
    assert (layer.observed, layer.sparsity, layer.hw_2of4, layer.required) == ("2:4", 0.5, True, True)
    assert (layer.likely_to_pay, layer.pay_reason, layer.gemm) == (
        "no",
        "8 channels is below 256: TensorRT usually keeps the dense kernel",
        "M=batch×36 N=8 K=144",  # 8x8 input, 3x3 kernel, no padding: 6x6 outputs
    )


def test_one_bad_group_is_found_exactly():
    w = sparse_24((8, 16, 3, 3), axis=1)
    w[5, 8:12, 2, 1] = [1.0, 2.0, 3.0, 0.0]  # the 3rd group of channel 5, kernel position (2, 1)
    m = model([helper.make_node("Conv", ["x", "W"], ["y"], name="conv")], {"W": w}, [("x", [1, 16, 8, 8])], ["y"])
    report = verify_model(m)
    layer = _one(report)
    assert (layer.violations, layer.first_violation, layer.observed, layer.hw_2of4) == (1, (5, 8, 2, 1), "3:4", False)
    assert not report.ok and report.failures == (layer,)


@pytest.mark.parametrize(
    "attrs, shape, axis",
    [({"transB": 1}, (8, 16), 1), ({}, (16, 8), 0), ({"transB": 0}, (16, 8), 0)],
)
def test_gemm_b_axis_follows_transB(attrs, shape, axis):
    w = sparse_24(shape, axis=axis)
    m = model([helper.make_node("Gemm", ["x", "B"], ["y"], **attrs)], {"B": w}, [("x", [2, 16])], ["y"])
    layer = _one(verify_model(m))
    assert (layer.axis, layer.violations, layer.hw_2of4, layer.node) == (axis, 0, True, "Gemm_0")
    wrong = verify_model(
        model(
            [helper.make_node("Gemm", ["x", "B"], ["y"], **attrs)],
            {"B": sparse_24(shape, 1 - axis)},
            [("x", [2, 16])],
            ["y"],
        )
    )
    assert _one(wrong).violations > 0  # 2:4 along the other axis does not count


def test_gemm_constant_a_uses_transA():
    a = sparse_24((16, 8), axis=0)  # transA=1: A is [K, M], the reduction axis is 0
    m = model([helper.make_node("Gemm", ["A", "x"], ["y"], transA=1)], {"A": a}, [("x", [16, 4])], ["y"])
    assert (_one(verify_model(m)).axis, _one(verify_model(m)).violations) == (0, 0)


def test_matmul_constant_b_and_a():
    b = sparse_24((16, 8), axis=0)
    m = model([helper.make_node("MatMul", ["x", "B"], ["y"])], {"B": b}, [("x", [2, 16])], ["y"])
    assert (_one(verify_model(m)).axis, _one(verify_model(m)).violations) == (0, 0)
    batched = sparse_24((3, 16, 8), axis=1)
    m = model([helper.make_node("MatMul", ["x", "B"], ["y"])], {"B": batched}, [("x", [3, 2, 16])], ["y"])
    layer = _one(verify_model(m))
    assert (layer.axis, layer.violations) == (1, 0)
    assert (layer.likely_to_pay, layer.pay_reason) == ("no", "batched MatMul weights are not on TensorRT's sparse path")
    a = sparse_24((8, 16), axis=1)
    m = model([helper.make_node("MatMul", ["A", "x"], ["y"])], {"A": a}, [("x", [16, 2])], ["y"])
    assert (_one(verify_model(m)).axis, _one(verify_model(m)).violations) == (1, 0)


def test_transpose_moves_the_axis_back_to_the_stored_tensor():
    stored = sparse_24((8, 16), axis=1)  # [N, K], 2:4 along K; the graph feeds MatMul its transpose
    nodes = [helper.make_node("Transpose", ["W"], ["Wt"], perm=[1, 0]), helper.make_node("MatMul", ["x", "Wt"], ["y"])]
    layer = _one(verify_model(model(nodes, {"W": stored}, [("x", [2, 16])], ["y"])))
    assert (layer.weight, layer.axis, layer.violations, layer.shape) == ("W", 1, 0, (8, 16))


def test_float_weight_behind_quantize_dequantize_and_cast():
    w = sparse_24((8, 16, 1, 1), axis=1)
    nodes = [
        helper.make_node("Identity", ["W"], ["W1"]),
        helper.make_node("QuantizeLinear", ["W1", "s", "zp"], ["Wq"], axis=0),
        helper.make_node("DequantizeLinear", ["Wq", "s", "zp"], ["Wd"], axis=0),
        helper.make_node("Cast", ["Wd"], ["Wc"], to=TensorProto.FLOAT),
        helper.make_node("Conv", ["x", "Wc"], ["y"]),
    ]
    inits = {"W": w, "s": np.full(8, 0.1, np.float32), "zp": np.zeros(8, np.int8)}
    layer = _one(verify_model(model(nodes, inits, [("x", [1, 16, 4, 4])], ["y"])))
    assert (layer.weight, layer.dtype, layer.violations, layer.observed) == ("W", "float32", 0, "2:4")


@pytest.mark.parametrize("zero_point", [0, 3])
def test_int8_weight_zeros_are_the_zero_point(zero_point):
    q = (np.sign(sparse_24((8, 16, 3, 3), axis=1)) * 5).astype(np.int8) + np.int8(zero_point)
    q[q == 0] = zero_point  # zeros of the float weight sit at the zero point
    nodes = [
        helper.make_node("DequantizeLinear", ["Wq", "s", "zp"], ["W"], axis=0),
        helper.make_node("Conv", ["x", "W"], ["y"]),
    ]
    inits = {"Wq": q, "s": np.full(8, 0.1, np.float32), "zp": np.full(8, zero_point, np.int8)}
    layer = _one(verify_model(model(nodes, inits, [("x", [1, 16, 8, 8])], ["y"])))
    assert (layer.dtype, layer.violations, layer.observed, layer.sparsity) == ("int8", 0, "2:4", 0.5)


def test_constant_node_conv_transpose_and_activations():
    w = sparse_24((16, 8, 3, 3), axis=0)  # ConvTranspose W [C_in, C_out, k, k]: reduction over C_in
    nodes = [
        helper.make_node("Constant", [], ["W"], value=numpy_helper.from_array(w, "W")),
        helper.make_node("ConvTranspose", ["x", "W"], ["h"], name="up"),
        helper.make_node("MatMul", ["h", "h"], ["y"], name="act"),  # both inputs activations: ignored
    ]
    layer = _one(verify_model(model(nodes, {}, [("x", [1, 16, 4, 4])], ["y"])))
    assert (layer.node, layer.axis, layer.violations) == ("up", 0, 0)
    assert (layer.likely_to_pay, layer.pay_reason) == (
        "no",
        "grouped or transposed conv: TensorRT has no sparse kernels for it",
    )


def test_subgraphs_are_checked():
    w = sparse_24((8, 16, 1, 1), axis=1)
    branch = helper.make_graph(
        [helper.make_node("Conv", ["x", "W"], ["y1"], name="inner")],
        "then",
        [],
        [helper.make_tensor_value_info("y1", TensorProto.FLOAT, None)],
    )
    nodes = [helper.make_node("If", ["c"], ["y"], then_branch=branch, else_branch=branch, name="branch")]
    m = model(nodes, {"W": w, "c": np.array(True)}, [("x", [1, 16, 4, 4])], ["y"])
    m.graph.input.append(helper.make_tensor_value_info("c", TensorProto.BOOL, []))
    names = sorted(layer.node for layer in verify_model(m).layers)
    assert names == ["branch/else_branch/inner", "branch/then_branch/inner"]


def test_required_layers_default_all_and_regex():
    dense = np.ones((8, 16), np.float32)
    half = sparse_24((8, 16), axis=1)
    half[:4] = 1.0  # rows 0-3 dense, rows 4-7 2:4: a half-sparse layer is a bug
    nodes = [
        helper.make_node("Gemm", ["x", "D"], ["h"], transB=1, name="dense_fc"),
        helper.make_node("Gemm", ["h2", "H"], ["y"], transB=1, name="half_fc"),
    ]
    m = model(nodes, {"D": dense, "H": half}, [("x", [2, 16]), ("h2", [2, 16])], ["h", "y"])
    default = verify_model(m)
    assert [(r.node, r.required, r.ok) for r in default.layers] == [
        ("dense_fc", False, False),
        ("half_fc", True, False),
    ]
    assert [f.node for f in default.failures] == ["half_fc"]
    assert [f.node for f in verify_model(m, require="all").failures] == ["dense_fc", "half_fc"]
    assert verify_model(m, require="^dense").failures[0].node == "dense_fc"
    assert verify_model(m, require="nothing-matches").ok
    assert default.layers[0].observed == "dense" and default.layers[1].first_violation == (0, 0)


def test_other_patterns_and_hardware_flag():
    w = np.zeros((4, 16), np.float32)
    w[:, ::8] = 1.0  # 1:8, hence also 1:4 and 2:4
    m = model([helper.make_node("Gemm", ["x", "W"], ["y"], transB=1)], {"W": w}, [("x", [2, 16])], ["y"])
    layer = _one(verify_model(m, pattern="1:8"))
    assert (layer.observed, layer.violations, layer.hw_2of4, layer.groups) == ("1:8", 0, True, 8)
    three = np.ones((4, 12), np.float32)
    three[:, ::4] = 0.0  # 3:4: no 2:4
    m = model([helper.make_node("Gemm", ["x", "W"], ["y"], transB=1)], {"W": three}, [("x", [2, 12])], ["y"])
    layer = _one(verify_model(m, pattern="3:4"))
    assert (layer.observed, layer.violations, layer.hw_2of4) == ("3:4", 0, False)


def test_no_weighted_op_and_one_dimensional_constants():
    m = model([helper.make_node("Relu", ["x"], ["y"])], {}, [("x", [2, 16])], ["y"])
    assert verify_model(m).layers == () and verify_model(m).ok
    m = model([helper.make_node("MatMul", ["x", "v"], ["y"])], {"v": np.ones(16, np.float32)}, [("x", [2, 16])], ["y"])
    report = verify_model(m)
    assert report.layers == () and report.skipped[0].reason == "1-D constant, not a weight matrix"


@pytest.mark.parametrize("opset", [13, 17, 21])
def test_opsets_and_external_data_files(tmp_path, opset):
    w = sparse_24((8, 16), axis=1)
    m = model([helper.make_node("Gemm", ["x", "W"], ["y"], transB=1)], {"W": w}, [("x", [2, 16])], ["y"], opset=opset)
    path = tmp_path / "m.onnx"
    onnx.save(m, str(path), save_as_external_data=True, location="m.onnx.data", size_threshold=0)
    report = verify_onnx(path)
    assert report.ok and _one(report).violations == 0 and report.model == str(path)
    (tmp_path / "m.onnx.data").unlink()
    with pytest.raises(InputError, match=r"external data 'm.onnx.data' is missing; keep it beside the model"):
        verify_onnx(path)


def test_bad_files_and_patterns(tmp_path):
    not_onnx = tmp_path / "x.onnx"
    not_onnx.write_text("hello")
    with pytest.raises(InputError, match=r"is not a readable ONNX model \(DecodeError\); pass a complete .onnx file$"):
        verify_onnx(not_onnx)
    good = tmp_path / "g.onnx"
    onnx.save(
        model(
            [helper.make_node("Gemm", ["x", "W"], ["y"], transB=1)],
            {"W": sparse_24((64, 64), 1)},
            [("x", [2, 64])],
            ["y"],
        ),
        str(good),
    )
    truncated = tmp_path / "t.onnx"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(InputError, match="is not a readable ONNX model"):
        verify_onnx(truncated)
    with pytest.raises(InputError, match="no such file"):
        verify_onnx(tmp_path / "missing.onnx")
    with pytest.raises(PatternError, match='pattern "4:2" is invalid'):
        verify_onnx(good, pattern="4:2")
    with pytest.raises(PatternError, match=r"--require '\(' is not a regular expression"):
        verify_onnx(good, require="(")


def test_json_report_schema():
    w = sparse_24((8, 16), axis=1)
    m = model([helper.make_node("Gemm", ["x", "W"], ["y"], transB=1, name="fc")], {"W": w}, [("x", [2, 16])], ["y"])
    data = json.loads(verify_model(m, name="m.onnx").to_json())
    assert data["schema"] == "nmdeploy.verify/1" and data["ok"] is True and data["pattern"] == "2:4"
    assert data["require"] == "sparse-layers" and data["skipped"] == []
    assert data["layers"][0] == {
        "node": "fc",
        "op": "Gemm",
        "weight": "W",
        "shape": [8, 16],
        "dtype": "float32",
        "axis": 1,
        "groups": 32,
        "violations": 0,
        "first_violation": None,
        "observed": "2:4",
        "sparsity": 0.5,
        "hw_2of4": True,
        "required": True,
        "likely_to_pay": "no",
        "pay_reason": "8 channels is below 256: TensorRT usually keeps the dense kernel",
        "gemm": "M=batch N=8 K=16",
        "ok": True,
    }


def test_each_layer_is_a_gemm_with_its_output_positions():
    conv = helper.make_node("Conv", ["x", "W"], ["y"], name="conv", pads=[1, 1, 1, 1], strides=[2, 2])
    m = model([conv], {"W": sparse_24((256, 256, 3, 3), axis=1)}, [("x", ["batch", 256, 14, 14])], ["y"])
    (layer,) = verify_model(m).layers
    assert (layer.gemm, layer.likely_to_pay) == ("M=batch×49 N=256 K=2304", "yes")
    assert layer.pay_reason == "256 in, 256 out: at least 256 channels each way"
    matmul = helper.make_node("MatMul", ["x", "W"], ["y"], name="ffn")
    m = model([matmul], {"W": sparse_24((768, 3072), axis=0)}, [("x", ["batch", "sequence", 768])], ["y"])
    (layer,) = verify_model(m).layers
    assert (layer.gemm, layer.likely_to_pay) == ("M=batch×sequence N=3072 K=768", "maybe")
    assert "MatMul on tokens often runs inside a fused (Myelin) region" in layer.pay_reason


# ---- the counting maths against a brute-force reference ----------------------------------


@st.composite
def tensors(draw):
    ndim = draw(st.integers(2, 4))
    shape = tuple(draw(st.integers(1, 9)) for _ in range(ndim))
    axis = draw(st.integers(0, ndim - 1))
    m = draw(st.sampled_from([2, 4, 8, 16, 3]))
    n = draw(st.integers(1, m - 1))
    density = draw(st.sampled_from([0.0, 0.3, 0.5, 0.8, 1.0]))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    values = rng.standard_normal(shape).astype(np.float32) * (rng.random(shape) < density)
    return values, axis, n, m


def _brute(values, axis, n, m):
    moved = np.moveaxis(values, axis, -1)
    length = moved.shape[-1]
    violations, first, max_nz = 0, None, 0
    for line_index in np.ndindex(moved.shape[:-1]):
        line = moved[line_index]
        for start in range(0, length, m):
            nz = int(np.count_nonzero(line[start : start + m]))
            max_nz = max(max_nz, nz)
            if nz > n:
                violations += 1
                if first is None:
                    index = list(line_index)
                    index.insert(axis, start)
                    first = tuple(index)
    hw = length % 4 == 0 and all(
        np.count_nonzero(moved[i][s : s + 4]) <= 2 for i in np.ndindex(moved.shape[:-1]) for s in range(0, length, 4)
    )
    return violations, first, max_nz, hw


@given(tensors())
def test_check_tensor_matches_brute_force(case):
    values, axis, n, m = case
    got = check_tensor(values, axis, n, m)
    violations, first, max_nz, hw = _brute(values, axis, n, m)
    assert (got.violations, got.first_violation, got.max_nonzeros, got.hw_2of4) == (violations, first, max_nz, hw)
    assert got.groups == values.size // values.shape[axis] * -(-values.shape[axis] // m)
    assert got.sparsity == pytest.approx(1 - np.count_nonzero(values) / values.size)

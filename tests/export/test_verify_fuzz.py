"""Fuzzing the 2:4 verifier with generated ONNX graphs, against a slow independent reference.

Each example is a graph of 1-4 weighted ops (Conv 1-D/2-D, ConvTranspose, Gemm with either
operand constant and either transpose flag, MatMul with a constant A or B of rank 2-3). Each
constant reaches its op through a random chain of Transpose, Cast, Identity and
DequantizeLinear (int8 with a scalar or per-axis zero point) or QuantizeLinear -> DequantizeLinear.
Weights have random shapes and dtypes and random sparsity: exact N:M along the reduction
axis, N:M along the wrong axis, random density, all zero, dense. Some graphs are malformed
on purpose (zero points that do not fit, 1-D constants, Transpose cycles).

The reference does not share code with the verifier: it computes what the op actually
multiplies with (the chain applied forward with numpy, the ONNX way), takes the op's
reduction axis from the ONNX operator definitions, and counts non-zeros group by group in
plain Python loops. The property: the verifier never crashes, and on every well-formed
weight its violation count and its pass/fail equal the reference's, so it never reports
N:M for a weight that breaks it.

The default suite runs ``NMDEPLOY_FUZZ_EXAMPLES`` (default 150) examples; the nightly run
sets it to 1000 or more: ``NMDEPLOY_FUZZ_EXAMPLES=1000 pytest tests/export/test_verify_fuzz.py``.
"""

from __future__ import annotations

import itertools
import os

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from nmdeploy.export.verify import verify_model

EXAMPLES = int(os.environ.get("NMDEPLOY_FUZZ_EXAMPLES", "150"))
PATTERNS = [(2, 4), (1, 4), (1, 2), (2, 8), (1, 16), (3, 4)]

# The op's weight layout and the axis it reduces over, from the ONNX operator definitions:
# Conv W [M, C/g, k...] reduces over C; ConvTranspose W [C, M/g, k...] over C; Gemm A [M, K]
# (transA: [K, M]) and B [K, N] (transB: [N, K]) over K; MatMul A [..., M, K] and B [..., K, N] over K.
OPS = ("Conv", "ConvTranspose", "GemmA", "GemmB", "MatMulA", "MatMulB")


def reduction_axis(op: str, rank: int, trans: int) -> int:
    return {
        "Conv": 1,
        "ConvTranspose": 0,
        "GemmA": 0 if trans else 1,
        "GemmB": 1 if trans else 0,
        "MatMulA": rank - 1,
        "MatMulB": rank - 2,
    }[op]


def apply_chain(nodes, inits) -> dict[str, np.ndarray]:
    """Run the pass-through nodes forward with numpy, as ONNX defines them (no verifier code involved)."""
    values = {
        init.name: numpy_helper.to_array(init).astype(np.float64)
        if init.data_type != TensorProto.INT8
        else numpy_helper.to_array(init)
        for init in inits
    }
    for node in nodes:
        if node.input[0] not in values:
            continue  # the weighted op itself, or an input that is not constant
        x = values[node.input[0]]
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "Transpose":
            out = np.transpose(x, attrs.get("perm"))
        elif node.op_type in ("Cast", "Identity"):
            out = x.astype(np.float64)
        elif node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            scale = values[node.input[1]].astype(np.float64)
            zp = values[node.input[2]].astype(np.float64) if len(node.input) > 2 else np.zeros(())
            if scale.ndim == 1:  # per-axis: broadcast along the node's axis
                shape = [1] * x.ndim
                shape[attrs.get("axis", 1)] = scale.size
                scale, zp = scale.reshape(shape), zp.reshape(shape) if zp.ndim == 1 else zp
            out = (
                np.clip(np.round(x / scale) + zp, -128, 127)
                if node.op_type == "QuantizeLinear"
                else (x.astype(np.float64) - zp) * scale
            )
        else:
            continue
        values[node.output[0]] = out
    return values


def reference_violations(effective: np.ndarray, axis: int, n: int, m: int) -> int:
    """Groups of m consecutive weights along ``axis`` (a short last group included) with more than n non-zeros."""
    bad = 0
    others = [range(s) for i, s in enumerate(effective.shape) if i != axis]
    for index in itertools.product(*others):
        line = [effective[(*index[:axis], k, *index[axis:])] for k in range(effective.shape[axis])]
        for start in range(0, len(line), m):
            if sum(1 for v in line[start : start + m] if v != 0) > n:
                bad += 1
    return bad


@st.composite
def nonzero_mask(draw, shape: tuple[int, ...], axis: int, n: int, m: int) -> np.ndarray:
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = draw(st.sampled_from(["nm", "nm_other_axis", "random", "zero", "dense", "nm_one_bad"]))
    if kind in ("zero", "dense"):
        return np.full(shape, kind == "dense")
    if kind == "random":
        return rng.random(shape) < draw(st.floats(0.05, 0.95))
    along = axis if kind != "nm_other_axis" else draw(st.sampled_from(range(len(shape))))
    moved = list(shape)
    moved.append(moved.pop(along))
    mask = np.zeros(moved, dtype=bool)
    for index in itertools.product(*(range(s) for s in moved[:-1])):
        for start in range(0, moved[-1], m):
            width = min(m, moved[-1] - start)
            keep = rng.choice(width, size=min(n, width), replace=False)
            mask[index][start + keep] = True
    mask = np.moveaxis(mask, -1, along)
    if kind == "nm_one_bad" and mask.size:
        mask.flat[rng.integers(mask.size)] = True  # one extra non-zero: maybe a violation, maybe not
    return mask


@st.composite
def weighted_op(draw, index: int, n: int, m: int):
    """(nodes, initializers, (the op's weight input, its intended non-zeros), reduction axis, well-formed, stored shape)."""
    op = draw(st.sampled_from(OPS))
    trans = draw(st.integers(0, 1)) if op.startswith("Gemm") else 0
    rank = {
        "Conv": draw(st.integers(3, 4)),
        "ConvTranspose": 4,
        "MatMulA": draw(st.integers(2, 3)),
        "MatMulB": draw(st.integers(2, 3)),
    }.get(op, 2)
    shape = tuple(draw(st.integers(1, 12)) if i in (0, 1) else draw(st.integers(1, 3)) for i in range(rank))
    axis = reduction_axis(op, rank, trans)
    mask = draw(nonzero_mask(shape, axis, n, m))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    magnitude = rng.uniform(1.0, 50.0, size=shape) * rng.choice([-1.0, 1.0], size=shape)
    effective = np.where(mask, magnitude, 0.0)  # the weight in the op's layout

    # Build the stored constant and the chain from it to the op (forward order), so that applying
    # the chain to the constant gives a weight with exactly the zeros of ``effective``.
    name = f"w{index}"
    nodes, inits, current, well_formed = [], [], name, True
    stored = effective
    steps = draw(st.lists(st.sampled_from(["Transpose", "Cast", "Identity"]), max_size=3))
    quant = draw(st.sampled_from(["none", "dq", "q_dq"]))
    for step in reversed(steps):  # peel from the op back towards the constant
        if step == "Transpose":
            perm = draw(st.permutations(range(rank)))
            stored = np.transpose(stored, np.argsort(perm))  # Transpose(stored, perm) == previous
            nodes.insert(0, ("Transpose", {"perm": list(perm)}))
        else:
            nodes.insert(0, (step, {"to": TensorProto.FLOAT} if step == "Cast" else {}))
    dtype = draw(st.sampled_from([np.float32, np.float16, np.float64])) if quant != "dq" else np.int8
    if quant == "dq":
        scale = np.float32(0.5)
        zp_kind = draw(st.sampled_from(["none", "zero", "scalar", "per_axis", "mismatched"]))
        dq_axis = draw(st.integers(0, rank - 1))
        zp = np.int8(0)
        if zp_kind == "scalar":
            zp = np.int8(draw(st.integers(-20, 20)))
        zp_arr = np.full(stored.shape[dq_axis], zp, dtype=np.int8)
        if zp_kind == "per_axis":
            zp_arr = rng.integers(-20, 21, size=stored.shape[dq_axis]).astype(np.int8)
        shape_b = [1] * rank
        shape_b[dq_axis] = stored.shape[dq_axis]
        q = np.clip(np.round(stored / 0.5), -100, 100)  # |q| >= 2 where non-zero: stays non-zero
        ints = (q + (zp_arr.reshape(shape_b) if zp_kind == "per_axis" else zp)).astype(np.int8)
        inits.append(numpy_helper.from_array(ints, name))
        inputs = [name, f"{name}_s"]
        inits.append(numpy_helper.from_array(np.array(scale, dtype=np.float32), f"{name}_s"))
        attrs = {}
        if zp_kind != "none":
            if zp_kind == "per_axis":
                inits[-1] = numpy_helper.from_array(
                    np.full(stored.shape[dq_axis], scale, dtype=np.float32), f"{name}_s"
                )
                inits.append(numpy_helper.from_array(zp_arr, f"{name}_z"))
                attrs = {"axis": dq_axis}
            elif zp_kind == "mismatched":
                inits.append(numpy_helper.from_array(np.arange(stored.shape[dq_axis] + 1, dtype=np.int8), f"{name}_z"))
                attrs = {"axis": dq_axis}
                well_formed = False  # ONNX rejects it: only "no crash" is asked of the verifier
            else:
                inits.append(numpy_helper.from_array(np.array(zp, dtype=np.int8), f"{name}_z"))
            inputs.append(f"{name}_z")
        nodes.insert(0, ("DequantizeLinear", {"inputs": inputs, **attrs}))
    else:
        inits.append(numpy_helper.from_array(stored.astype(dtype), name))
        if quant == "q_dq":  # float constant -> Q -> DQ: the verifier reads the float constant
            inits.append(numpy_helper.from_array(np.array(0.25, dtype=np.float32), f"{name}_s"))
            nodes.insert(0, ("DequantizeLinear", {"inputs": ["$prev", f"{name}_s"]}))
            nodes.insert(0, ("QuantizeLinear", {"inputs": [name, f"{name}_s"]}))

    graph_nodes = []
    for k, (op_type, attrs) in enumerate(nodes):
        attrs = dict(attrs)
        inputs = [current if i == "$prev" else i for i in attrs.pop("inputs", [current])]
        out = f"{name}_{k}"
        graph_nodes.append(helper.make_node(op_type, inputs, [out], name=f"{name}_{op_type}_{k}", **attrs))
        current = out
    x, y = f"x{index}", f"y{index}"
    if op in ("Conv", "ConvTranspose"):
        main = helper.make_node(op, [x, current], [y], name=f"op{index}")
    elif op.startswith("Gemm"):
        operands = [current, x] if op == "GemmA" else [x, current]
        main = helper.make_node(
            "Gemm", operands, [y], name=f"op{index}", **{("transA" if op == "GemmA" else "transB"): trans}
        )
    else:
        main = helper.make_node("MatMul", [current, x] if op == "MatMulA" else [x, current], [y], name=f"op{index}")
    return graph_nodes + [main], inits, (current, mask), axis, well_formed, tuple(stored.shape)


@st.composite
def graphs(draw):
    n, m = draw(st.sampled_from(PATTERNS))
    ops = [draw(weighted_op(i, n, m)) for i in range(draw(st.integers(1, 4)))]
    nodes = [node for op in ops for node in op[0]]
    inits = [init for op in ops for init in op[1]]
    if draw(st.booleans()):  # malformed extras the verifier must survive: a 1-D weight and a Transpose cycle
        inits.append(numpy_helper.from_array(np.ones(4, dtype=np.float32), "bias_like"))
        nodes.append(helper.make_node("MatMul", ["x_extra", "bias_like"], ["y_extra"], name="one_d"))
        nodes.append(helper.make_node("Transpose", ["loop_b"], ["loop_a"], name="loop1"))
        nodes.append(helper.make_node("Transpose", ["loop_a"], ["loop_b"], name="loop2"))
        nodes.append(helper.make_node("Conv", ["x_extra", "loop_a"], ["y_loop"], name="cyclic"))
    graph = helper.make_graph(nodes, "fuzz", [], [], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)]), (n, m), ops


@settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(graphs())
def test_the_verifier_never_crashes_and_never_passes_a_violating_weight(case):
    model, (n, m), ops = case
    report = verify_model(model, f"{n}:{m}", require="all")  # must not raise, whatever the graph
    layers = {layer.node: layer for layer in report.layers}
    for index, (nodes, inits, (weight, mask), axis, well_formed, stored_shape) in enumerate(ops):
        layer = layers[f"op{index}"]
        assert layer.shape == stored_shape
        if not well_formed:
            continue
        effective = apply_chain(nodes, inits)[weight]  # what the op multiplies with
        assert np.array_equal(effective != 0, mask)  # the generator built the sparsity it meant to
        expected = reference_violations(effective, axis, n, m)
        assert layer.violations == expected, (layer, axis)
        assert layer.ok == (expected == 0)  # never "N:M" for a weight that breaks it, never a false alarm
    assert "cyclic" not in layers  # a Transpose cycle is not a constant weight

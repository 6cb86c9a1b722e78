"""The Q/DQ lint: would TensorRT's ONNX parser (10.x and 11.x) accept this INT8 graph?

Rules (docs/design/tensorrt.md §5), each violation naming the node and the rule:

``opset``          the default-domain opset is >= 13 (per-axis Q/DQ needs it)
``op``             no QLinear*, ConvInteger, MatMulInteger or DynamicQuantizeLinear
``domain``         Q/DQ nodes are standard ONNX ops, not ``com.microsoft`` contrib ops
``zero-point``     every Q/DQ has an int8 zero point, all zeros, one per scale (symmetric)
``int8``           quantized data is int8 (UINT8 is rejected as data and as zero-point type)
``scale``          scales are constant, finite and > 0
``per-axis``       per-axis scales only on constant weights, along the output-channel axis
                   (Conv 0, ConvTranspose 1, Gemm B 0 with transB=1 else 1, MatMul B last)
``weight-dq``      every int8 weight reaches its consumer through DequantizeLinear
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from nmdeploy import schemas
from nmdeploy._onnx import GraphIndex, attr

__all__ = ["LintReport", "Violation", "lint_qdq"]

_FORBIDDEN = {"ConvInteger", "MatMulInteger", "DynamicQuantizeLinear"}
_QDQ = ("QuantizeLinear", "DequantizeLinear")
_INT8 = onnx.TensorProto.INT8
_UINT8 = onnx.TensorProto.UINT8


@dataclass(frozen=True)
class Violation:
    node: str
    rule: str
    message: str

    def __str__(self) -> str:
        return f"{self.node}: [{self.rule}] {self.message}"


@dataclass(frozen=True)
class LintReport:
    model: str
    violations: tuple[Violation, ...]
    quantize_nodes: int
    dequantize_nodes: int

    @property
    def ok(self) -> bool:
        return not self.violations

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": schemas.LINT,
            "model": self.model,
            "ok": self.ok,
            "quantize_nodes": self.quantize_nodes,
            "dequantize_nodes": self.dequantize_nodes,
            "violations": [asdict(v) for v in self.violations],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


def _name(node: onnx.NodeProto, index: int) -> str:
    return node.name or f"{node.op_type}_{index}"


def _expected_axis(g: GraphIndex, dq_output: str, rank: int) -> tuple[int | None, str]:
    """The output-channel axis TensorRT wants for a weight consumed through ``dq_output``."""
    for consumer, slot in g.consumers.get(dq_output, []):
        op = consumer.op_type
        if op == "Conv" and slot == 1:
            return 0, "Conv weight"
        if op == "ConvTranspose" and slot == 1:
            return 1, "ConvTranspose weight"
        if op == "Gemm" and slot == 1:
            return (0, "Gemm B with transB=1") if attr(consumer, "transB", 0) else (1, "Gemm B")
        if op == "MatMul" and slot == 1:
            return rank - 1, "MatMul B"
    return None, "this consumer"


def _check_qdq(g: GraphIndex, node: onnx.NodeProto, name: str, out: list[Violation]) -> None:
    scale = g.const(node.input[1]) if len(node.input) > 1 else None
    if scale is None:
        out.append(
            Violation(name, "scale", f"scale {node.input[1] if len(node.input) > 1 else '(none)'!r} is not a constant")
        )
        return
    scales = numpy_helper.to_array(scale).astype(np.float64)
    if not np.isfinite(scales).all() or not (scales > 0).all():
        bad = scales[~(np.isfinite(scales) & (scales > 0))]
        out.append(Violation(name, "scale", f"scale must be finite and > 0, found {bad.flat[0]!r}"))
    zp_name = node.input[2] if len(node.input) > 2 else ""
    zp = g.const(zp_name) if zp_name else None
    if not zp_name:
        output_dtype = attr(node, "output_dtype", 0)
        if node.op_type == "QuantizeLinear" and output_dtype != _INT8:
            out.append(
                Violation(
                    name, "zero-point", "no zero point: the output defaults to UINT8; give an int8 zero point of 0"
                )
            )
    elif zp is None:
        out.append(Violation(name, "zero-point", f"zero point {zp_name!r} is not a constant"))
    else:
        if zp.data_type == _UINT8:
            out.append(Violation(name, "int8", "UINT8 zero point: TensorRT takes INT8 only; quantize with QInt8"))
        elif zp.data_type != _INT8:
            out.append(
                Violation(name, "int8", f"zero point is {onnx.TensorProto.DataType.Name(zp.data_type)}, not INT8")
            )
        values = numpy_helper.to_array(zp)
        if values.size and np.any(values != 0):
            out.append(
                Violation(
                    name,
                    "zero-point",
                    f"zero point {values.flat[np.flatnonzero(values)[0]]} != 0: asymmetric; use symmetric quantization",
                )
            )
        if values.size != scales.size:
            out.append(Violation(name, "zero-point", f"{values.size} zero point(s) for {scales.size} scale(s)"))
    if node.op_type == "DequantizeLinear":
        data = g.const(node.input[0])
        if data is not None and data.data_type == _UINT8:
            out.append(Violation(name, "int8", "UINT8 data: TensorRT takes INT8 only; quantize with QInt8"))
    if scales.size > 1:
        _check_axis(g, node, name, scales.size, out)


def _check_axis(g: GraphIndex, node: onnx.NodeProto, name: str, count: int, out: list[Violation]) -> None:
    data = g.const(node.input[0])
    if data is None and node.op_type == "DequantizeLinear":
        producer = g.producers.get(node.input[0])
        if producer is not None and producer.op_type == "QuantizeLinear":
            data = g.const(producer.input[0])
    if data is None:
        out.append(
            Violation(
                name,
                "per-axis",
                f"{count} per-axis scales on an activation; TensorRT takes per-tensor activation scales",
            )
        )
        return
    rank = len(data.dims)
    axis = attr(node, "axis", 1) % max(rank, 1)
    dq = node
    if node.op_type == "QuantizeLinear":  # the weight's DequantizeLinear decides the consumer
        dq = next((c for c, _ in g.consumers.get(node.output[0], []) if c.op_type == "DequantizeLinear"), node)
    want, what = _expected_axis(g, dq.output[0], rank)
    if want is not None and axis != want:
        out.append(
            Violation(
                name, "per-axis", f"per-axis scales along axis {axis}; {what} needs the output-channel axis {want}"
            )
        )


def lint_qdq(model: onnx.ModelProto, model_name: str = "") -> LintReport:
    """Check ``model`` against TensorRT's Q/DQ import rules (module docstring)."""
    out: list[Violation] = []
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < 13:
        out.append(
            Violation(
                "(model)", "opset", f"opset {opset} < 13: per-axis Q/DQ needs opset 13+; re-export with a newer opset"
            )
        )
    g = GraphIndex(model.graph)
    counts = {"QuantizeLinear": 0, "DequantizeLinear": 0}
    for index, node in enumerate(model.graph.node):
        name = _name(node, index)
        if node.op_type.startswith("QLinear") or node.op_type in _FORBIDDEN:
            out.append(Violation(name, "op", f"{node.op_type} is not imported by TensorRT; use Q/DQ (QuantFormat.QDQ)"))
        if node.op_type in _QDQ:
            if node.domain not in ("", "ai.onnx"):
                out.append(
                    Violation(name, "domain", f"{node.domain}.{node.op_type} is a contrib op; use the standard ONNX op")
                )
            counts[node.op_type] += 1
            _check_qdq(g, node, name, out)
        for slot, tensor in enumerate(node.input):
            const = g.constants.get(tensor)
            if (
                const is not None
                and const.data_type in (_INT8, _UINT8)
                and node.op_type != "DequantizeLinear"
                and not (node.op_type == "QuantizeLinear" and slot == 2)
            ):
                out.append(
                    Violation(
                        name,
                        "weight-dq",
                        f"int8 constant {tensor!r} feeds {node.op_type} directly; put a DequantizeLinear between",
                    )
                )
    return LintReport(model_name, tuple(out), counts["QuantizeLinear"], counts["DequantizeLinear"])

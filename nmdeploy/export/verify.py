"""The 2:4 layout verifier: is every constant weight N:M along the axis TensorRT reduces over?

For each Conv, ConvTranspose, Gemm and MatMul input that is a constant (an initializer or a
Constant node, reached back through Cast, Identity, QuantizeLinear, DequantizeLinear and
Transpose, whose permutation moves the axis), the verifier reports the N:M facts of that
weight along the reduction axis (docs/design/tensorrt.md §3):

Conv W ``[K, C/g, *k]`` axis 1 · ConvTranspose W ``[C, K/g, *k]`` axis 0 · Gemm A axis 1
(0 with transA) · Gemm B axis 0 (1 with transB: how torch exports nn.Linear) · MatMul
constant B ``[..., K, N]`` axis -2 · MatMul constant A axis -1.

Unlike ``polygraphy inspect sparsity`` it checks int8 weights too (behind DequantizeLinear,
zero = the zero point), reports every violating group count and the first bad index,
returns a structured report and fails (exit code 1) when a required layer is not N:M.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from nmdeploy import schemas
from nmdeploy._onnx import attr
from nmdeploy.errors import InputError, PatternError
from nmdeploy.export.nmcheck import check_tensor
from nmdeploy.export.payoff import judge_payoff
from nmdeploy.sparsity.pattern import Pattern, parse_pattern

__all__ = ["LayerCheck", "SkippedInput", "VerifyReport", "verify_onnx", "verify_model"]

# op -> {input index: (reduction axis, attribute that flips it to the other axis)}
_WEIGHT_INPUTS: dict[str, dict[int, tuple[int, str | None]]] = {
    "Conv": {1: (1, None)},
    "ConvTranspose": {1: (0, None)},
    "Gemm": {0: (1, "transA"), 1: (0, "transB")},
    "MatMul": {0: (-1, None), 1: (-2, None)},
}
_PASS_THROUGH = ("Cast", "Identity", "QuantizeLinear", "DequantizeLinear", "Transpose")
_MAX_HOPS = 64  # pass-through ops followed before giving up (a malformed graph may loop)


@dataclass(frozen=True)
class LayerCheck:
    """One constant weight of a weighted op. ``axis`` is in the stored tensor's dims."""

    node: str
    op: str
    weight: str
    shape: tuple[int, ...]
    dtype: str
    axis: int
    groups: int
    violations: int
    first_violation: tuple[int, ...] | None
    observed: str
    sparsity: float
    hw_2of4: bool
    required: bool
    likely_to_pay: str = ""  # yes / maybe / no: will TensorRT's sparse kernel beat the dense one (export.payoff)
    pay_reason: str = ""
    gemm: str = ""  # the layer as a GEMM: "M=batch×196 N=64 K=576"

    @property
    def ok(self) -> bool:
        return self.violations == 0


@dataclass(frozen=True)
class SkippedInput:
    node: str
    op: str
    input: str
    reason: str


@dataclass(frozen=True)
class VerifyReport:
    model: str
    pattern: str
    require: str
    layers: tuple[LayerCheck, ...]
    skipped: tuple[SkippedInput, ...] = field(default=())

    @property
    def failures(self) -> tuple[LayerCheck, ...]:
        """Required layers with at least one violating group."""
        return tuple(layer for layer in self.layers if layer.required and not layer.ok)

    @property
    def ok(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": schemas.VERIFY,
            "model": self.model,
            "pattern": self.pattern,
            "require": self.require,
            "ok": self.ok,
            "layers": [asdict(layer) | {"ok": layer.ok} for layer in self.layers],
            "skipped": [asdict(s) for s in self.skipped],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


class _Scope:
    """Constants and producers visible in one graph (outer graphs' too, for subgraphs), and the dims
    shape inference found for its values (what the GEMM shapes of the payoff rule need)."""

    def __init__(
        self,
        graph: onnx.GraphProto,
        outer: _Scope | None = None,
        base_dir: str = "",
        dims: dict[str, tuple[int | str, ...]] | None = None,
    ) -> None:
        self.base_dir = outer.base_dir if outer else base_dir  # where external data lives: read a tensor at a time
        self.dims: dict[str, tuple[int | str, ...]] = outer.dims if outer else dict(dims or {})
        self.constants: dict[str, onnx.TensorProto] = dict(outer.constants) if outer else {}
        self.producers: dict[str, onnx.NodeProto] = dict(outer.producers) if outer else {}
        for init in graph.initializer:
            self.constants[init.name] = init
        for node in graph.node:
            if node.op_type == "Constant":
                value = next((a.t for a in node.attribute if a.name == "value"), None)
                if value is not None and node.output:
                    self.constants[node.output[0]] = value
            for out in node.output:
                self.producers[out] = node


def _trace(name: str, scope: _Scope) -> tuple[str, np.ndarray, list[onnx.NodeProto], np.ndarray | int] | None:
    """Follow ``name`` back through pass-through ops to a constant.

    Returns (constant name, values, the pass-through nodes from the op back to the constant,
    what counts as zero in the constant), or None when the input is not a constant weight.
    """
    chain: list[onnx.NodeProto] = []
    zero: np.ndarray | int = 0
    while name not in scope.constants:
        node = scope.producers.get(name)
        if node is None or node.op_type not in _PASS_THROUGH or len(chain) > _MAX_HOPS:
            return None
        chain.append(node)
        name = node.input[0]
    values = numpy_helper.to_array(scope.constants[name], scope.base_dir)
    if chain and chain[-1].op_type == "DequantizeLinear" and len(chain[-1].input) > 2 and chain[-1].input[2]:
        zp = scope.constants.get(chain[-1].input[2])
        if zp is not None:  # per-axis zero points broadcast along the DequantizeLinear axis
            zp_values = numpy_helper.to_array(zp, scope.base_dir)
            axis = attr(chain[-1], "axis", 1) % max(values.ndim, 1)
            if zp_values.size and np.all(zp_values == zp_values.flat[0]):
                zero = zp_values.flat[0]  # one value (the usual all-zero case), whatever the axis says
            elif zp_values.ndim == 1 and values.ndim > 1 and values.shape[axis] == zp_values.size:
                shape = [1] * values.ndim
                shape[axis] = zp_values.size
                zero = zp_values.reshape(shape)
            # otherwise the zero points do not fit the weight (the Q/DQ lint reports it); count against 0
    return name, values, chain, zero


def _source_axis(op_axis: int, rank: int, chain: list[onnx.NodeProto]) -> int:
    """The op's reduction axis, mapped back through Transposes to the constant's dims."""
    axis = op_axis % rank
    for node in chain:
        if node.op_type == "Transpose":
            perm = attr(node, "perm", list(range(rank))[::-1])
            axis = perm[axis]
    return axis


def _inferred_dims(model: onnx.ModelProto) -> dict[str, tuple[int | str, ...]]:
    """name -> dims (int, or the symbol) of every value ONNX shape inference can say; {} when it fails.

    The weights' data is never needed (a model past 2 GB is inferred without its external data)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # an op shape inference does not know: the payoff rule goes without M
        return {}
    dims = {}
    for value in (*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output):
        kind = value.type.tensor_type
        if kind.HasField("shape"):
            dims[value.name] = tuple(
                d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in kind.shape.dim
            )
    return dims


def _positions(node: onnx.NodeProto, weight_index: int, scope: _Scope) -> tuple[int | str | None, bool]:
    """(output positions per sample, whether the activation is [batch, tokens, features])."""
    if node.op_type in ("Conv", "ConvTranspose"):
        spatial = scope.dims.get(node.output[0], ())[2:]
        if spatial and all(isinstance(d, int) and d > 0 for d in spatial):
            return math.prod(spatial), False
        return None, False
    if node.op_type == "Gemm":
        return 1, False
    other = node.input[1 - weight_index] if len(node.input) > 1 else ""
    dims = scope.dims.get(other)
    if dims is None:
        return None, False
    if len(dims) >= 3:
        return dims[-2] if weight_index == 1 else dims[-1], True
    return 1, False


def _walk(
    graph: onnx.GraphProto,
    scope: _Scope,
    prefix: str,
    nm: Pattern,
    require: str | None,
    layers: list[LayerCheck],
    skipped: list[SkippedInput],
) -> None:
    for index, node in enumerate(graph.node):
        name = prefix + (node.name or f"{node.op_type}_{index}")
        for attribute in node.attribute:  # If / Loop / Scan bodies are checked too
            for sub in [attribute.g] if attribute.type == onnx.AttributeProto.GRAPH else list(attribute.graphs):
                _walk(sub, _Scope(sub, scope), f"{name}/{attribute.name}/", nm, require, layers, skipped)
        for input_index, (op_axis, flip) in _WEIGHT_INPUTS.get(node.op_type, {}).items():
            if input_index >= len(node.input) or not node.input[input_index]:
                continue
            found = _trace(node.input[input_index], scope)
            if found is None:
                continue  # an activation, not a constant weight
            weight, values, chain, zero = found
            if values.ndim < 2:
                skipped.append(
                    SkippedInput(name, node.op_type, weight, f"{values.ndim}-D constant, not a weight matrix")
                )
                continue
            axis = op_axis
            if flip and attr(node, flip, 0):
                axis = 1 - op_axis
            axis = _source_axis(axis, values.ndim, chain)
            result = check_tensor(values, axis, nm.n, nm.m, zero)
            observed = (
                "dense" if result.sparsity == 0 or result.max_nonzeros >= nm.m else f"{result.max_nonzeros}:{nm.m}"
            )
            if require is None:
                required = result.zero_groups > 0  # a layer with any N:M-sparse group must be N:M
            elif require == "all":
                required = True
            else:
                required = bool(re.search(require, name) or re.search(require, weight))
            positions, tokens = _positions(node, input_index, scope)
            pay = judge_payoff(
                node.op_type, values.shape, axis, result.hw_2of4, attr(node, "group", 1), positions, tokens
            )
            layers.append(
                LayerCheck(
                    name,
                    node.op_type,
                    weight,
                    tuple(int(d) for d in values.shape),
                    str(values.dtype),
                    axis,
                    result.groups,
                    result.violations,
                    result.first_violation,
                    observed,
                    round(result.sparsity, 6),
                    result.hw_2of4,
                    required,
                    pay.likely,
                    pay.reason,
                    f"M={pay.m} N={pay.n} K={pay.k}",
                )
            )


def verify_model(
    model: onnx.ModelProto,
    pattern: str | Pattern = "2:4",
    require: str | None = None,
    name: str = "",
    base_dir: str | Path = "",
) -> VerifyReport:
    """Verify an in-memory ONNX model; tensors in external data are read from ``base_dir`` one at a time."""
    nm = parse_pattern(pattern)
    if require not in (None, "all"):
        try:
            re.compile(require)  # type: ignore[arg-type]
        except re.error as exc:
            raise PatternError(
                f"--require {require!r} is not a regular expression ({exc}); use 'all' or a name regex"
            ) from None
    layers: list[LayerCheck] = []
    skipped: list[SkippedInput] = []
    scope = _Scope(model.graph, base_dir=str(base_dir), dims=_inferred_dims(model))
    _walk(model.graph, scope, "", nm, require, layers, skipped)
    return VerifyReport(name, str(nm), require or "sparse-layers", tuple(layers), tuple(skipped))


def load_onnx(path: str | Path, external_data: bool = True) -> onnx.ModelProto:
    """Load an ONNX file with its external data (or, without ``external_data``, only checked to be there),
    turning every failure into one-line InputError."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file; pass the path of an .onnx model")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises DecodeError, RuntimeWarning-like errors vary by version
        raise InputError(
            f"{path} is not a readable ONNX model ({type(exc).__name__}); pass a complete .onnx file"
        ) from None
    if not model.graph.node and not model.graph.initializer and not model.opset_import:
        raise InputError(f"{path} is not an ONNX model (no graph); pass a complete .onnx file")
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    for tensor in model.graph.initializer:
        if uses_external_data(tensor):
            location = ExternalDataInfo(tensor).location
            if not (path.parent / location).is_file():
                raise InputError(f"{path}: external data {location!r} is missing; keep it beside the model")
    if not external_data:
        return model
    try:
        onnx.load_external_data_for_model(model, str(path.parent))
    except (FileNotFoundError, OSError) as exc:
        missing = getattr(exc, "filename", None) or str(exc)
        raise InputError(
            f"{path}: external data {Path(str(missing)).name!r} is missing; keep it beside the model"
        ) from None
    except Exception as exc:
        raise InputError(f"{path}: external data cannot be read ({exc}); keep it beside the model") from None
    return model


def verify_onnx(path: str | Path, pattern: str | Pattern = "2:4", require: str | None = None) -> VerifyReport:
    """Check every constant weight of ``path`` for the N:M ``pattern`` along TensorRT's axis.

    ``require``: None (default) = every layer with any N:M group must be fully N:M (a
    half-sparse layer is a bug); ``"all"`` = every layer; otherwise a regex on node or
    weight names.
    """
    path = Path(path)
    # external data stays on disk: each weight is read when its layer is checked (a model past 2 GB never
    # sits in memory whole)
    return verify_model(load_onnx(path, external_data=False), pattern, require, str(path), path.parent)

"""Small read-only views of an ONNX graph shared by the verifier, the Q/DQ lint and the placement."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnx

__all__ = ["GraphIndex", "SINGLE_FILE_LIMIT", "attr", "graph_has_qdq", "has_qdq"]

SINGLE_FILE_LIMIT = 1_800_000_000  # protobuf caps a file at 2 GB; above this, weights go to external data

_PASS = ("Cast", "Identity", "Transpose")


def graph_has_qdq(model: onnx.ModelProto) -> bool:
    """Whether the graph carries Q/DQ nodes (an explicitly quantized model)."""
    return any(node.op_type in ("QuantizeLinear", "DequantizeLinear") for node in model.graph.node)


def has_qdq(path: str | Path) -> bool:
    """:func:`graph_has_qdq` of an ONNX file (its weights are not read)."""
    return graph_has_qdq(onnx.load(str(path), load_external_data=False))


def attr(node: onnx.NodeProto, name: str, default: Any) -> Any:
    """The value of attribute ``name`` of ``node``, or ``default`` when it is not set."""
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


class GraphIndex:
    """Constants (initializers and Constant nodes), producers and consumers of one graph's tensors."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.constants: dict[str, onnx.TensorProto] = {t.name: t for t in graph.initializer}
        self.producers: dict[str, onnx.NodeProto] = {}
        self.consumers: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
        for node in graph.node:
            if node.op_type == "Constant":
                value = next((a.t for a in node.attribute if a.name == "value"), None)
                if value is not None:
                    self.constants[node.output[0]] = value
            for out in node.output:
                self.producers[out] = node
            for slot, name in enumerate(node.input):
                self.consumers.setdefault(name, []).append((node, slot))

    def const(self, name: str) -> onnx.TensorProto | None:
        """The constant behind ``name`` through Cast/Identity/Transpose, or None for an activation."""
        while name not in self.constants:
            node = self.producers.get(name)
            if node is None or node.op_type not in _PASS:
                return None
            name = node.input[0]
        return self.constants[name]

    def through_qdq(self, tensor: str) -> str:
        """The float tensor behind a Q -> DQ pair (``tensor`` itself when there is none)."""
        dq = self.producers.get(tensor)
        if dq is not None and dq.op_type == "DequantizeLinear":
            q = self.producers.get(dq.input[0])
            if q is not None and q.op_type == "QuantizeLinear":
                return q.input[0]
        return tensor

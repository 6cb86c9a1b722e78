"""Where Q/DQ pairs go: TensorRT's recommended placement, applied to what onnxruntime wrote.

onnxruntime places Q/DQ by op type only. TensorRT wants (docs/design/tensorrt.md §5):

* Q/DQ on every input of weighted ops (Conv, Gemm, MatMul) and, by default, not on their
  outputs: onnxruntime does this when those types are excluded from output quantization;
* the *residual* input of an Add that follows a Conv quantized, the Conv-side input not, so
  Conv + Add (+ ReLU) fuses into one INT8 kernel: onnxruntime quantizes both Add inputs
  (we let it, to get calibrated scales) and :func:`drop_fused_add_qdq` removes the Conv side;
* optionally Q/DQ on the outputs of 2:4 layers (INT8-in/INT8-out sparse kernels): onnxruntime
  quantizes every weighted op's output and :func:`drop_output_qdq` removes the dense ones.

The surgery only ever *removes* a Q/DQ pair from one consumer's input (the consumer reads
the float tensor again), so it can never create an illegal graph.
"""

from __future__ import annotations

import onnx

from nmdeploy._onnx import GraphIndex

__all__ = ["WEIGHTED", "residual_adds", "drop_fused_add_qdq", "drop_output_qdq", "prune_unused"]

WEIGHTED = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def residual_adds(graph: onnx.GraphProto) -> dict[str, int]:
    """Add nodes that TensorRT fuses into a Conv: node name -> index of the Conv-side input.

    Both inputs must be computed (no constant, e.g. a bias). The fused input is the one a
    Conv produces; when both are Conv outputs (a projection shortcut), input 0 (``out +
    shortcut(x)``, how ResNets are written) is taken as the fused one.
    """
    index = GraphIndex(graph)
    found: dict[str, int] = {}
    for node in graph.node:
        if node.op_type != "Add" or len(node.input) != 2 or any(i in index.constants for i in node.input):
            continue
        convs = [
            slot
            for slot, tensor in enumerate(node.input)
            if (p := index.producers.get(index.through_qdq(tensor))) is not None and p.op_type == "Conv"
        ]
        if convs:
            found[node.name] = convs[0]
    return found


def _unhook(index: GraphIndex, consumer: onnx.NodeProto, slot: int) -> bool:
    """Make ``consumer`` read the float tensor behind its Q/DQ'd input ``slot``.

    Only consumer inputs change, so ``index``'s producers (all ``through_qdq`` reads) stay valid.
    """
    tensor = consumer.input[slot]
    source = index.through_qdq(tensor)
    if source == tensor:
        return False
    consumer.input[slot] = source
    return True


def drop_fused_add_qdq(graph: onnx.GraphProto, adds: dict[str, int], keep: set[str] = frozenset()) -> int:
    """Remove the Q/DQ on the Conv-side input of each residual Add (unless its tensor is in ``keep``)."""
    dropped = 0
    by_name = {n.name: n for n in graph.node}
    index = GraphIndex(graph)
    for add_name, slot in adds.items():
        node = by_name.get(add_name)
        if node is None or index.through_qdq(node.input[slot]) in keep:
            continue
        dropped += _unhook(index, node, slot)
    return dropped


def drop_output_qdq(graph: onnx.GraphProto, keep_nodes: set[str], protected: set[tuple[str, int]]) -> int:
    """Remove output Q/DQ of weighted ops not in ``keep_nodes``.

    A consumer input in ``protected`` ((node name, slot): inputs TensorRT wants quantized,
    i.e. those of weighted ops and residual Add inputs) keeps its Q/DQ.
    """
    index = GraphIndex(graph)
    outputs = {o.name for o in graph.output}
    dropped = 0
    for node in list(graph.node):
        if node.op_type not in WEIGHTED or node.name in keep_nodes:
            continue
        for q, _ in index.consumers.get(node.output[0], []):
            if q.op_type != "QuantizeLinear":
                continue
            for dq, _ in index.consumers.get(q.output[0], []):
                if dq.op_type != "DequantizeLinear":
                    continue
                if dq.output[0] in outputs:  # a model output: give the float tensor its name back
                    dropped += _rename_output(graph, node.output[0], dq.output[0])
                    index = GraphIndex(graph)  # tensors were renamed: later look-ups need fresh producers
                    continue
                for consumer, slot in index.consumers.get(dq.output[0], []):
                    if (consumer.name, slot) not in protected and consumer.op_type not in WEIGHTED:
                        dropped += _unhook(index, consumer, slot)
    return dropped


def _rename_output(graph: onnx.GraphProto, float_name: str, output_name: str) -> int:
    """Let the float tensor ``float_name`` be the model output ``output_name`` again (no Q/DQ)."""
    for node in graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and output_name in node.output:
            node.output[list(node.output).index(output_name)] = f"{output_name}__unused_dq"
    for node in graph.node:
        for i, name in enumerate(node.output):
            if name == float_name:
                node.output[i] = output_name
        for i, name in enumerate(node.input):
            if name == float_name:
                node.input[i] = output_name
    return 1


def prune_unused(graph: onnx.GraphProto) -> None:
    """Delete Q/DQ nodes nobody reads any more, then initializers nobody reads."""
    outputs = {o.name for o in graph.output}
    while True:
        used = {name for node in graph.node for name in node.input} | outputs
        dead = [
            n
            for n in graph.node
            if n.op_type in ("QuantizeLinear", "DequantizeLinear") and not any(o in used for o in n.output)
        ]
        if not dead:
            break
        for node in dead:
            graph.node.remove(node)
    used = {name for node in graph.node for name in node.input} | outputs
    for init in [t for t in graph.initializer if t.name not in used]:
        graph.initializer.remove(init)

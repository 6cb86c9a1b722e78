"""Which layer produces each sparse layer's input channels: a dataflow trace of one real forward.

Channel permutation (:mod:`nmdeploy.sparsity.permute`) may reorder a layer's input channels
only if the same reorder can be applied to the output channels of the layer that makes them,
with nothing in between that mixes channels or reads them elsewhere. That needs the model's
dataflow, including the functional ops (``x + identity``, ``F.relu``, ``torch.cat``) that
module hooks cannot see.

``torch.fx`` would give a graph, but it cannot trace the control flow many models have
(transformers' shape checks, for instance). Instead one forward on example inputs runs under a
``TorchFunctionMode`` that records every top-level op with the tensors it read and wrote. A
tensor is known by its identity and its version counter, so in-place ops (``ReLU(inplace=True)``)
read as a chain too. Weights are recognised by identity, so a layer is the op that reads its
weight, whatever the module's ``forward`` looks like.

Standard library and torch only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils import _pytree as pytree

__all__ = ["Link", "Op", "Trace", "find_producer", "trace_forward"]

Key = tuple[int, int]  # (id of the tensor, its version counter)

_LAYER_OPS = {"linear", "conv1d", "conv2d", "conv3d"}
# Ops that act on each channel alone, so a permutation of their input is one of their output.
_PER_CHANNEL = {  # names without their underscores (_base_name): relu covers relu_ too
    "relu", "relu6", "gelu", "silu", "sigmoid", "tanh", "hardswish", "hardsigmoid", "hardtanh", "leaky_relu", "elu",
    "selu", "celu", "mish", "softplus", "dropout", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout",
    "clone", "contiguous", "detach", "max_pool1d", "max_pool2d", "max_pool3d", "avg_pool1d", "avg_pool2d",
    "avg_pool3d", "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d", "adaptive_max_pool1d",
    "adaptive_max_pool2d", "adaptive_max_pool3d", "max_pool2d_with_indices", "float", "to", "type_as",
}  # fmt: skip
_SCALAR_BINARY = {
    "add", "add_", "__add__", "__radd__", "__iadd__", "sub", "sub_", "__sub__", "__rsub__", "__isub__",
    "mul", "mul_", "__mul__", "__rmul__", "__imul__", "div", "div_", "__truediv__", "__itruediv__",
}  # fmt: skip
_FLATTENS = {"flatten", "view", "reshape", "squeeze"}
_BLOCKERS = {
    "add": "a residual add",
    "sub": "a subtraction of another tensor",
    "mul": "a product with another tensor (a gate)",
    "div": "a division by another tensor",
    "cat": "a concatenation",
    "layer_norm": "a LayerNorm (it mixes channels)",
    "group_norm": "a GroupNorm (it mixes channels)",
    "embedding": "an embedding lookup",
    "conv_transpose1d": "a transposed convolution",
    "conv_transpose2d": "a transposed convolution",
    "conv_transpose3d": "a transposed convolution",
}


@dataclass
class Op:
    """One recorded call: its name, arguments, and the keys of the tensors it read and wrote."""

    name: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    reads: tuple[Key, ...]
    writes: tuple[Key, ...]
    shape: tuple[int, ...]  # of the first tensor written


@dataclass
class Trace:
    """Every op of one forward, who wrote each tensor, who read it, and which ops read each weight."""

    ops: list[Op] = field(default_factory=list)
    writer: dict[Key, int] = field(default_factory=dict)
    readers: dict[Key, list[int]] = field(default_factory=dict)
    by_param: dict[int, list[int]] = field(default_factory=dict)  # id(Parameter) -> ops that read it
    outputs: set[Key] = field(default_factory=set)  # what the model returned
    returned: list[torch.Tensor] = field(default_factory=list)  # those tensors, in order
    keep: list[torch.Tensor] = field(default_factory=list)  # every tensor seen, alive so ids stay unique


def _key(t: torch.Tensor) -> Key:
    return (id(t), t._version)


def _base_name(func: Any) -> str:
    return getattr(func, "__name__", str(func)).lstrip("_").rstrip("_") if func is not None else "?"


class _Recorder(TorchFunctionMode):
    def __init__(self, trace: Trace) -> None:
        super().__init__()
        self.trace = trace

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        inputs = [t for t in pytree.tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        reads = tuple(_key(t) for t in inputs)
        out = func(*args, **kwargs)
        outputs = [t for t in pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]
        writes = tuple(_key(t) for t in outputs)
        if not outputs or set(writes) <= set(reads):
            return out  # .size() and .shape read metadata; eval-mode dropout and .to(same) hand back their input
        trace = self.trace
        index = len(trace.ops)
        name = getattr(func, "__name__", str(func))
        trace.ops.append(Op(name, tuple(args), dict(kwargs), reads, writes, tuple(outputs[0].shape)))
        trace.keep.extend(inputs + outputs)
        for key in reads:
            trace.readers.setdefault(key, []).append(index)
        for t in inputs:
            if isinstance(t, nn.Parameter):
                trace.by_param.setdefault(id(t), []).append(index)
        for t in outputs:
            trace.writer[_key(t)] = index
        return out


def trace_forward(model: nn.Module, inputs: Sequence[torch.Tensor]) -> Trace:
    """Run ``model(*inputs)`` once (eval mode, no gradients) and record its dataflow."""
    trace = Trace()
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), _Recorder(trace):
            out = model(*inputs)
    finally:
        model.train(was_training)
    trace.returned = [t for t in pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]
    trace.outputs = {_key(t) for t in trace.returned}
    return trace


@dataclass(frozen=True)
class Link:
    """What carries a layer's input channels back to the layer that makes them.

    ``producer`` is that layer's weight, ``bias`` its bias, ``norms`` the BatchNorm tensors on
    the way (running mean and variance, scale, shift), ``siblings`` the weights of the other
    layers that read the same channels (branches of an Inception-style block), whose input
    channels must take the same order. ``reason`` says why there is none.
    """

    producer: nn.Parameter | None = None
    bias: torch.Tensor | None = None
    norms: tuple[torch.Tensor, ...] = ()
    reason: str | None = None
    siblings: tuple[nn.Parameter, ...] = ()  # other layers that read the same channels: they take the same order
    consumer: nn.Parameter | None = None  # the weight the link was found from
    # a concatenation on the way: (offset, size, link) per part, each part's channels made by its own
    # producer; the order is then one per part (``producer`` is None)
    parts: tuple[tuple[int, int, Link], ...] = ()


def _arg(op: Op, index: int, name: str) -> Any:
    return op.args[index] if len(op.args) > index else op.kwargs.get(name)


def _groups(op: Op) -> int:
    return int(_arg(op, 6, "groups") or 1) if op.name.startswith("conv") else 1


def _depthwise(op: Op) -> bool:
    """A convolution with one filter per channel, ``[C, 1, k...]`` with ``groups = C``: it acts per
    channel, so a reorder of its channels is one of its weight's rows (and bias)."""
    weight = _arg(op, 1, "weight")
    return (
        op.name.startswith("conv")
        and isinstance(weight, torch.Tensor)
        and weight.shape[1] == 1
        and _groups(op) == weight.shape[0] > 1
    )


def _pads_space(op: Op, source: torch.Tensor, consumer: Op) -> bool:
    """A pad of the spatial dims only, on the way to a convolution (channels at dim 1): it does the
    same to every channel, whatever its mode."""
    if _base_name(op.name) not in ("pad", "constant_pad_nd") or not consumer.name.startswith("conv"):
        return False
    pad = _arg(op, 1, "pad")
    return isinstance(pad, (list, tuple)) and len(pad) <= 2 * (source.ndim - 2)


def _keeps_channels(op: Op, source: torch.Tensor) -> bool:
    """A flatten of ``[batch, C, 1, ...]`` to ``[batch, C]`` keeps the channel order (a pooled head)."""
    return source.ndim >= 2 and math.prod(source.shape[2:]) == 1 and op.shape == tuple(source.shape[:2])


def find_producer(trace: Trace, weight: nn.Parameter) -> Link:
    """The layer whose output channels are the input channels of the layer with ``weight``.

    Walks back from the op that reads ``weight`` through ops that act per channel (depthwise
    convolutions too) and BatchNorms, splits at a concatenation along the channels (each part
    walked back on its own), and stops with a reason at anything else: a residual add, a model input, a second reader of an intermediate (the producer's output shared) unless that
    reader is itself a layer of the same kind, reached through per-channel ops (a sibling branch).
    """
    uses = trace.by_param.get(id(weight), [])
    if not uses:
        return Link(reason="not run by the example inputs")
    if len(uses) > 1:
        return Link(reason="its weight is used by more than one op (shared weights)")
    consumer = trace.ops[uses[0]]
    if consumer.name not in _LAYER_OPS:
        return Link(reason=f"computed by {consumer.name}, not a plain linear or convolution")
    if _groups(consumer) != 1:
        return Link(reason="a grouped convolution (its channels are permuted within groups only)")
    return _walk(trace, consumer.reads[0], uses[0], consumer, weight, True)


_CATS = {"cat", "concat", "concatenate"}


def _walk(trace: Trace, key: Key, current: int, consumer: Op, weight: nn.Parameter, branches: bool) -> Link:
    """find_producer's walk back from tensor ``key``, read by op ``current``; ``branches``: whether
    sibling readers may share the channels (not inside a part of a concatenation)."""
    norms: list[torch.Tensor] = []
    siblings: list[nn.Parameter] = []
    flattened = False  # a flatten passed: a Linear's channels are dim 1 of the tensors before it
    for _ in range(len(trace.ops)):
        if key in trace.outputs:
            return Link(reason="an intermediate tensor on the way is also a model output")
        readers = trace.readers.get(key, [])
        if readers != [current]:
            shared = Link(reason="its input is also read by another op (the producer's output is shared)")
            if not branches or readers.count(current) != 1:
                return shared
            others = [_sibling(trace, r, key, consumer, weight) for r in readers if r != current]
            if not all(isinstance(o, tuple) for o in others):
                return shared
            for sibling, branch_norms in others:  # type: ignore[misc]
                siblings.append(sibling)
                norms.extend(branch_norms)
        if key not in trace.writer:
            return Link(reason="its input is a model input (no layer makes those channels)")
        current = trace.writer[key]
        op = trace.ops[current]
        if op.name in _LAYER_OPS and not _depthwise(op):
            producer = _arg(op, 1, "weight")
            if not isinstance(producer, nn.Parameter) or len(trace.by_param.get(id(producer), [])) != 1:
                return Link(reason="made by a layer whose weight is not a parameter used once")
            if _groups(op) != 1:
                return Link(reason="made by a grouped convolution")
            bias = _arg(op, 2, "bias")
            return Link(
                producer, bias if isinstance(bias, torch.Tensor) else None, tuple(norms), None, tuple(siblings), weight
            )
        if op.name in _CATS:
            return _concatenation(trace, op, current, consumer, weight, flattened, tuple(norms), tuple(siblings))
        carried, reason = _per_channel(trace, op, consumer)
        if reason is not None:
            return Link(reason=reason)
        norms.extend(carried)
        flattened = flattened or op.name in _FLATTENS
        key = op.reads[0]
    return Link(reason="no producer found")


def _per_channel(trace: Trace, op: Op, consumer: Op) -> tuple[list[torch.Tensor], str | None]:
    """Whether ``op`` (on the way to ``consumer``) acts on each channel of its first input alone, so that
    a reorder of the channels passes through it: the tensors to reorder with them (a BatchNorm's, a
    depthwise conv's weight and bias), or the reason it does not."""
    name = _base_name(op.name)
    tensors = [t for t in pytree.tree_leaves((op.args, op.kwargs)) if isinstance(t, torch.Tensor)]
    if op.name in _LAYER_OPS:  # a depthwise conv (MobileNet's): one filter per channel
        found = _arg(op, 1, "weight")
        if not isinstance(found, nn.Parameter) or len(trace.by_param.get(id(found), [])) != 1:
            return [], "made by a layer whose weight is not a parameter used once"
        return [t for t in (found, _arg(op, 2, "bias")) if isinstance(t, torch.Tensor)], None
    if op.name == "batch_norm":
        return [t for t in (_arg(op, i, n) for i, n in enumerate(_BN_ARGS, 1)) if isinstance(t, torch.Tensor)], None
    if name in _PER_CHANNEL:
        return [], None
    if op.name in _SCALAR_BINARY:
        if not tensors or any(t.numel() != 1 for t in tensors[1:]):
            label = name.removeprefix("r").removeprefix("i")
            return [], f"{_BLOCKERS.get(label, 'an op with another tensor')} on the way"
        return [], None
    if _pads_space(op, tensors[0], consumer):  # TensorFlow-style "same" padding (Hugging Face's MobileNet)
        return [], None
    if op.name in _FLATTENS:
        return [], None if _keeps_channels(op, tensors[0]) else f"a {op.name} that moves channels on the way"
    return [], f"{_BLOCKERS.get(name, f'a {op.name} op')} on the way"


def _concatenation(
    trace: Trace,
    op: Op,
    index: int,
    consumer: Op,
    weight: nn.Parameter,
    flattened: bool,
    norms: tuple[torch.Tensor, ...],
    siblings: tuple[nn.Parameter, ...],
) -> Link:
    """A concatenation along the channels: each part walked back to its own producer (DenseNet's and
    Inception's blocks); the link carries the parts, or the reason one of them cannot be carried."""
    pieces = op.args[0] if op.args else op.kwargs.get("tensors")
    if not isinstance(pieces, (list, tuple)) or not all(isinstance(t, torch.Tensor) for t in pieces):
        return Link(reason="a concatenation on the way")
    ndim = len(op.shape)
    dim = int(_arg(op, 1, "dim") or 0) % max(1, ndim)
    channels = 1 if consumer.name.startswith("conv") or flattened or ndim == 2 else ndim - 1
    if dim != channels:
        return Link(reason="a concatenation on the way (not along the channels)")
    parts, offset = [], 0
    for i, (piece, key) in enumerate(zip(pieces, op.reads)):
        part = _walk(trace, key, index, consumer, weight, False)
        if part.reason is not None:
            return Link(reason=f"a concatenation on the way, whose part {i + 1}: {part.reason}")
        parts.append((offset, int(piece.shape[dim]), part))
        offset += int(piece.shape[dim])
    return Link(None, None, norms, None, siblings, weight, tuple(parts))


_BN_ARGS = ("running_mean", "running_var", "weight", "bias")


def _sibling(
    trace: Trace, index: int, key: Key, consumer: Op, weight: nn.Parameter
) -> tuple[nn.Parameter, list[torch.Tensor]] | None:
    """The weight of the layer that op ``index`` leads to from tensor ``key``, and the BatchNorm tensors
    on that branch, when the branch only acts per channel and ends in a layer of ``consumer``'s kind
    with as many input channels; else None."""
    norms: list[torch.Tensor] = []
    for _ in range(len(trace.ops)):
        op = trace.ops[index]
        if not op.reads or op.reads[0] != key:
            return None  # the channels arrive as another argument (a weight, a second operand)
        if op.name in _LAYER_OPS and not _depthwise(op):
            found = _arg(op, 1, "weight")
            if (
                op.name != consumer.name
                or not isinstance(found, nn.Parameter)
                or found is weight
                or len(trace.by_param.get(id(found), [])) != 1
                or _groups(op) != 1
                or found.shape[1] != weight.shape[1]
            ):
                return None
            return found, norms
        carried, reason = _per_channel(trace, op, consumer)
        if reason is not None:
            return None
        norms.extend(carried)
        key = op.writes[0]
        readers = trace.readers.get(key, [])
        if key in trace.outputs or len(readers) != 1:
            return None
        index = readers[0]
    return None

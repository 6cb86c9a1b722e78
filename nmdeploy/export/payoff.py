"""Will a 2:4 layer's sparse kernel pay on the GPU? A rule from its GEMM shape, to be checked on the target.

TensorRT times the sparse and the dense kernel of every eligible layer and keeps the faster, so
a verified 2:4 layer often still runs dense. Each weighted layer is a GEMM with
M = batch × output positions, N = output channels, K = input channels × kernel size, and the
documented experience (docs/design/tensorrt.md §4) gives the rule, in this order:

1. not 2:4 -> no;
2. grouped or transposed conv, batched MatMul weights -> no (no TensorRT sparse path);
3. C_out % 8 or C_in % 16 -> no (the alignment apex ASP and ModelOpt require before they prune);
4. C_in and C_out >= 256 -> yes (the maintainers' threshold), except a MatMul on token
   activations (a transformer's Linear), which often runs in a fused Myelin region -> maybe;
5. a k×k kernel (k > 1) with C_in, C_out >= 128 -> maybe (K = 9·C_in for 3×3: 3×3 convs favour sparse);
6. otherwise -> no (too few channels: memory-bound, the dense kernel usually wins).

It is a rule of thumb, not a measurement: the target's layer report prints it beside what
TensorRT really picked, so it can be checked and corrected.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["SMALL_CHANNELS", "Payoff", "judge_payoff"]

SMALL_CHANNELS = 256  # below this TensorRT usually keeps dense kernels (docs/design/tensorrt.md §4)


@dataclass(frozen=True)
class Payoff:
    likely: str  # "yes", "maybe" or "no"
    reason: str
    m: str  # M per batch, e.g. "batch×196" ("batch" alone for a Linear on [batch, features])
    n: int
    k: int


def _m(positions: int | str | None) -> str:
    if positions in (None, 1):
        return "batch"
    return f"batch×{positions}"


def judge_payoff(
    op: str,
    shape: Sequence[int],
    axis: int,
    hw_2of4: bool,
    group: int = 1,
    positions: int | str | None = None,
    tokens: bool = False,
) -> Payoff:
    """The rule for one weight of ``op`` (``shape``, reduction ``axis``); ``positions``: output positions
    per sample (H×W of a conv, the tokens of a MatMul; None when shape inference could not say);
    ``tokens``: the activation is [batch, tokens, features] (a transformer's Linear)."""
    shape = tuple(int(d) for d in shape)
    if op in ("Conv", "ConvTranspose"):
        c_in, c_out = shape[1], shape[0]
        kernel = math.prod(shape[2:]) if len(shape) > 2 else 1
        if op == "ConvTranspose":
            c_in, c_out = shape[0], shape[1] * group
    else:
        c_in = shape[axis]
        c_out = shape[1 - axis] if len(shape) == 2 else shape[-1]
        kernel = 1
    k = c_in * kernel
    found = Payoff("no", "", _m(positions), c_out, k)

    def say(likely: str, reason: str) -> Payoff:
        return Payoff(likely, reason, found.m, found.n, found.k)

    if not hw_2of4:
        return say("no", "not 2:4")
    if op == "ConvTranspose" or group > 1:
        return say("no", "grouped or transposed conv: TensorRT has no sparse kernels for it")
    if op == "MatMul" and len(shape) > 2:
        return say("no", "batched MatMul weights are not on TensorRT's sparse path")
    if c_out % 8 or c_in % 16:
        return say("no", f"{c_in} in, {c_out} out: sparse tensor cores want C_out % 8 == 0 and C_in % 16 == 0")
    small = min(c_in, c_out)
    if small >= SMALL_CHANNELS:
        if op == "MatMul" and tokens:
            return say(
                "maybe",
                f"{c_in} in, {c_out} out, but a MatMul on tokens often runs inside a fused (Myelin) region "
                "that keeps dense kernels",
            )
        return say("yes", f"{c_in} in, {c_out} out: at least {SMALL_CHANNELS} channels each way")
    if kernel > 1 and small >= SMALL_CHANNELS // 2:
        size = "x".join(map(str, shape[2:]))
        return say("maybe", f"{size} kernel makes K = {k}, but {small} channels is below {SMALL_CHANNELS}")
    return say("no", f"{small} channels is below {SMALL_CHANNELS}: TensorRT usually keeps the dense kernel")

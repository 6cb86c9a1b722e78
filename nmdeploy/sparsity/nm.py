"""N:M mask maths: the hard magnitude mask and MaxQ's soft multi-axis-query mask.

Layout (docs/design/methods.md §1.2): a weight is ``[out, in/groups, *kernel]`` (Linear: ``[out, in]``).
Groups of ``m`` run along dim 1 at a fixed output channel and kernel position. Instead of
permuting to ``[out, *kernel, in]`` like the reference code, the tensor is viewed as
``[out, in/m, m, kernel_positions]`` so every mask comes out in the weight's own layout
without a copy.

Ties are deterministic everywhere (docs/design/methods.md §1.1, nmdeploy's choice): among equal magnitudes the
lower index ranks higher, so masks are identical across runs and devices.

Speed matters because MaxQ rebuilds its mask on every training forward
(benchmarks/overhead.py). What that costs on CPU, measured, and how it shapes this file:
- sorting is avoided: a group's n-th largest comes from a min/max network (m = 4) or
  ``kthvalue``, and each axis query needs a single ``kthvalue``; the exact tie-breaking
  path runs only when a count shows a tie at the threshold;
- indicators are float 0/1 tensors written by ``torch.gt(..., out=float)``: comparisons
  that produce bool tensors, ``torch.where`` and float-by-bool products cost 4-20x more.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from nmdeploy.errors import ConfigError, PatternError
from nmdeploy.sparsity.pattern import check_nm

__all__ = [
    "DEFAULT_TAU",
    "check_groupable",
    "check_maxq_options",
    "is_nm_sparse",
    "maxq_mask",
    "maxq_masks_same_shape",
    "maxq_parts",
    "nm_indicator",
    "nm_indicators",
    "nm_mask",
    "soft_nm_mask",
]

DEFAULT_TAU = 1e-2  # MaxQ's sigmoid temperature; absolute, as in the reference code
_BIG = 1e30  # pushes dropped entries above every kept one when taking a row minimum
_HINT_MIN_NUMEL = 16384  # below this, one kthvalue is as cheap as the hinted search
_MAX_HINT_DISTANCE = 64  # a hint this far off (in ranks) is not worth the topk


def check_groupable(shape: torch.Size | tuple[int, ...], m: int, what: str = "weight") -> None:
    """Raise :class:`PatternError` unless a tensor of ``shape`` splits into groups of ``m`` on dim 1."""
    if len(shape) < 2:
        raise PatternError(f"{what} of shape {list(shape)} cannot be N:M grouped: need at least 2 dims [out, in, ...]")
    if shape[1] % m != 0:
        raise PatternError(
            f"{what} of shape {list(shape)} cannot be grouped by m={m}: dim 1 (input channels, "
            f"length {shape[1]}) is not a multiple of {m}"
        )


def check_maxq_options(dense_fraction: object, tau: object) -> None:
    """Raise :class:`ConfigError` unless 0 <= dense_fraction <= 1 and tau > 0."""
    if isinstance(dense_fraction, bool) or not isinstance(dense_fraction, (int, float)) or not 0 <= dense_fraction <= 1:
        raise ConfigError(f"dense_fraction={dense_fraction!r} is out of range: need a number 0 <= dense_fraction <= 1")
    if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not 0 < tau < math.inf:
        raise ConfigError(f"tau={tau!r} is invalid: need a number tau > 0 (MaxQ uses 1e-2)")


def _check_args(weight: object, n: int, m: int) -> None:
    check_nm(n, m)
    if not isinstance(weight, torch.Tensor) or not weight.is_floating_point():
        raise ConfigError(f"weight must be a floating-point torch.Tensor, got {type(weight).__name__}")
    check_groupable(weight.shape, m)


def _grouped(t: torch.Tensor, m: int) -> torch.Tensor:
    """View ``[out, in, *kernel]`` as ``[out, in/m, m, kernel_positions]`` (no copy when contiguous)."""
    return t.reshape(t.shape[0], t.shape[1] // m, m, -1)


def _magnitudes(weight: torch.Tensor) -> torch.Tensor:
    """|w| detached; half types become float32 (exact) so ties and the sigmoid behave the same."""
    a = weight.detach().abs()
    return a.float() if a.dtype in (torch.float16, torch.bfloat16) else a


_EXACT_FLOAT_SUM = 2**24  # float32 adds 0/1 values exactly while the total stays below this


def _count(indicator: torch.Tensor) -> int:
    """Number of ones in a float 0/1 tensor.

    A float32 sum is exact below 2**24 and far cheaper than ``sum(dtype=float64)``, which
    converts the whole tensor first; larger tensors use ``count_nonzero``.
    """
    if indicator.numel() < _EXACT_FLOAT_SUM and indicator.dtype in (torch.float32, torch.float64):
        return int(indicator.sum())
    return int(indicator.count_nonzero())


def _order_keys(a: torch.Tensor, dim: int) -> torch.Tensor:
    """Distinct int64 keys that order ``a`` (float32, >= 0) by value, ties to the lower index.

    A non-negative float32's bit pattern read as an integer sorts like the float; appending
    the reversed index along ``dim`` makes every key unique, so ``topk`` becomes deterministic.
    """
    length = a.shape[dim]
    shape = [1] * a.dim()
    shape[dim] = length
    rev_index = torch.arange(length - 1, -1, -1, device=a.device, dtype=torch.int64).view(shape)
    return a.contiguous().view(torch.int32).to(torch.int64) * length + rev_index


def _nth_largest_of_4(cols: tuple[torch.Tensor, ...], n: int) -> torch.Tensor:
    """The n-th largest of four tensors, elementwise, with a min/max sorting network."""
    a, b, c, d = cols
    if n == 1:
        return torch.maximum(torch.maximum(a, b), torch.maximum(c, d))
    hi1, lo1 = torch.maximum(a, b), torch.minimum(a, b)
    hi2, lo2 = torch.maximum(c, d), torch.minimum(c, d)
    if n == 2:
        return torch.maximum(torch.minimum(hi1, hi2), torch.maximum(lo1, lo2))
    return torch.minimum(torch.maximum(lo1, lo2), torch.minimum(hi1, hi2))  # n == 3


def _top_n_exact(a4: torch.Tensor, n: int) -> torch.Tensor:
    """Top-n of every group (dim 2), ties to the lower index; the path taken when a tie is seen."""
    if a4.dtype == torch.float32:
        index = _order_keys(a4, dim=2).topk(n, dim=2, sorted=False).indices
    else:  # float64: keys would overflow; a stable descending sort keeps ties to the lower index
        index = a4.sort(dim=2, descending=True, stable=True).indices[:, :, :n]
    return torch.zeros_like(a4).scatter_(2, index, 1.0)


def _top_n_in_groups(a4: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Float 0/1 indicator of the ``n`` largest entries of every group along dim 2 of ``a4``.

    Fast path: each group's n-th largest value (sorting network for m = 4, else
    ``kthvalue``), keep what is >= it. That keeps more than n only where the n-th value is
    tied; one count detects it and the exact tie-breaking path takes over.
    """
    if m == 4:
        nth = _nth_largest_of_4(a4.unbind(2), n).unsqueeze(2)
    elif m == 2:
        nth = torch.maximum(a4[:, :, :1], a4[:, :, 1:])
    else:
        nth = a4.kthvalue(m - n + 1, dim=2, keepdim=True).values
    kept = torch.ge(a4, nth, out=torch.empty_like(a4))
    if _count(kept) != n * (a4.numel() // m):
        return _top_n_exact(a4, n)
    return kept


def _lowest_blocks(block_sums: torch.Tensor, count: int) -> torch.Tensor:
    """Float 0/1 indicator of the ``count`` smallest block sums, ties to the lower flat index."""
    flat = block_sums.reshape(-1)
    if count >= flat.numel():
        return torch.ones_like(block_sums)
    value = flat.kthvalue(count).values
    chosen = flat < value
    missing = count - int(chosen.sum())
    if missing > 0:
        tied = flat == value
        chosen |= tied & (tied.cumsum(0) <= missing)
    return chosen.view(block_sums.shape).to(block_sums.dtype)


def _boundary_from_hint(
    a: torch.Tensor, dim: int, drop: int, hint: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """Exact (keep, a_(i), a_(i+1)) per line along ``dim``, found near ``hint`` (last step's thresholds).

    Between two optimizer steps only a few weights cross a line's threshold. Count how many
    entries lie above the old threshold: the difference d to the wanted count says the new
    boundary is the d-th entry above it (d > 0) or the -d-th below it (d < 0), which a
    ``topk`` with a small k finds far faster than a full selection. The result depends only
    on ``a``: the hint changes the speed, never the answer. Returns None (use the full
    selection) when the hint is far off or the boundary value is tied.
    """
    wanted = a.shape[dim] - drop
    above = torch.gt(a, hint, out=torch.empty_like(a))
    diff = above.sum(dim=dim, keepdim=True).sub_(wanted)  # exact: a line is shorter than 2**24
    k_up, k_down = int(diff.max().clamp(min=0)) + 1, int((-diff).max().clamp(min=0)) + 1
    if max(k_up, k_down) > _MAX_HINT_DISTANCE:
        return None
    # entries above the hint, smallest first; entries at or below it, largest first
    # (a plain min / max when only the nearest one is needed)
    shifted = torch.add(a, 1.0 - above, alpha=_BIG)
    up = shifted.amin(dim=dim, keepdim=True) if k_up == 1 else shifted.topk(k_up, dim=dim, largest=False).values
    shifted = torch.add(a, above, alpha=-_BIG)
    down = shifted.amax(dim=dim, keepdim=True) if k_down == 1 else shifted.topk(k_down, dim=dim).values
    d = diff.long()
    low = torch.where(d > 0, up.gather(dim, (d - 1).clamp(min=0)), down.gather(dim, (-d).clamp(min=0)))
    high = torch.where(d >= 0, up.gather(dim, d.clamp(min=0)), down.gather(dim, (-d - 1).clamp(min=0)))
    if bool((low == high).any()):
        return None
    return torch.gt(a, low, out=above), low, high


def _axis_query(
    a: torch.Tensor, dim: int, n: int, m: int, tau: float, hints: dict | None = None, key: str = ""
) -> tuple[torch.Tensor, torch.Tensor]:
    """MaxQ's importance term Q along ``dim`` of the 2-D magnitude tensor ``a``, as two factors.

    For a line (population P) of length L, with i = floor((m-n)/m * L): the i smallest
    entries get Q = 0; the others get sigmoid((|w| - t) / tau), where t is the midpoint
    between the i-th and (i+1)-th smallest value (docs/design/methods.md §3.4). Returns the float
    indicator ``rank > i`` and the sigmoid, so the caller folds Q into one ``addcmul``.
    ``hints`` (a dict the caller keeps between steps) only speeds up finding the boundary.
    """
    length = a.shape[dim]
    drop = (m - n) * length // m  # exact floor of rho * L
    assert 0 < drop < length, "unreachable for 0 < n < m and L >= m"
    found = None
    hint = hints.get(key) if hints is not None and a.numel() >= _HINT_MIN_NUMEL else None
    if (
        hint is not None
        and hint.shape == _line_stat_shape(a, dim)
        and hint.device == a.device
        and hint.dtype == a.dtype
    ):
        found = _boundary_from_hint(a, dim, drop, hint)
    if found is not None:
        keep, low, high = found
    else:
        low = a.kthvalue(drop, dim=dim, keepdim=True).values  # a_(i), the largest dropped value
        keep = torch.gt(a, low, out=torch.empty_like(a))
        if _count(keep) == (length - drop) * (a.numel() // length):
            dropped = torch.le(a, low, out=torch.empty_like(a))
        else:  # a_(i) == a_(i+1) on some line: keep the lowest-index copies of the tied value
            missing = (length - drop) - keep.sum(dim=dim, keepdim=True)
            tied = a == low
            keep += (tied & (tied.cumsum(dim) <= missing)).to(a.dtype)
            dropped = 1.0 - keep
        high = torch.add(a, dropped, alpha=_BIG).amin(dim=dim, keepdim=True)  # a_(i+1)
    threshold = (low + high) * 0.5
    if hints is not None:
        hints[key] = threshold
    # sigmoid((a - t) / tau) as one fused add and an in-place sigmoid
    return keep, torch.add(threshold * (-1.0 / tau), a, alpha=1.0 / tau).sigmoid_()


def _line_stat_shape(a: torch.Tensor, dim: int) -> torch.Size:
    """Shape of a per-line statistic of ``a`` along ``dim`` (kept dimension of size 1)."""
    shape = list(a.shape)
    shape[dim] = 1
    return torch.Size(shape)


def nm_indicator(weight: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Float 0/1 N:M mask in ``weight``'s dtype, without argument checks (training path)."""
    kept = _top_n_in_groups(_grouped(_magnitudes(weight), m), n, m)
    return kept.view(weight.shape).to(weight.dtype)


def nm_indicators(weights: Sequence[torch.Tensor], n: int, m: int) -> list[torch.Tensor]:
    """:func:`nm_indicator` of several weights at once: the same results from a handful of ops.

    Weights that share device, dtype and kernel-position count are stacked into one batch of
    groups, so a model's masks cost about as many tensor ops as one layer's.
    """
    out: list[torch.Tensor] = [torch.empty(0)] * len(weights)
    batches: dict[tuple, list[int]] = {}
    for i, w in enumerate(weights):
        positions = w.numel() // (w.shape[0] * w.shape[1])
        batches.setdefault((w.device, w.dtype, positions), []).append(i)
    for (_, _, positions), members in batches.items():
        parts = [weights[i].detach().reshape(-1, m, positions) for i in members]
        a = torch.cat(parts).abs_() if len(parts) > 1 else parts[0].abs()
        if a.dtype in (torch.float16, torch.bfloat16):
            a = a.float()
        kept = _top_n_in_groups(a.unsqueeze(0), n, m).view(-1)
        for i, chunk in zip(members, kept.split([weights[i].numel() for i in members])):
            out[i] = chunk.view(weights[i].shape).to(weights[i].dtype)
    return out


def nm_mask(weight: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep the ``n`` largest |w| of every group of ``m`` along dim 1.

    Returns a bool tensor of ``weight``'s shape, True where a weight is kept.
    """
    _check_args(weight, n, m)
    return nm_indicator(weight, n, m) > 0


def is_nm_sparse(weight: torch.Tensor, n: int, m: int) -> bool:
    """True when every group of ``m`` along dim 1 holds at most ``n`` non-zeros."""
    _check_args(weight, n, m)
    nonzero = _grouped(weight.detach() != 0, m)
    return bool((nonzero.sum(dim=2) <= n).all())


def _maxq_multipliers(a: torch.Tensor, n: int, m: int, tau: float, hints: dict | None) -> torch.Tensor:
    """``1 + Q_filter + Q_kernel`` for a stack of same-shaped magnitudes ``[layers, out, in, *kernel]``.

    Every layer keeps its own populations: filter rows stack naturally; each (layer, kernel
    position) becomes one column of an ``[out * in, layers * positions]`` view.
    """
    count, out = a.shape[0], a.shape[1]
    positions = a[0, 0, 0].numel()
    keep, sig = _axis_query(a.reshape(count * out, -1), 1, n, m, tau, hints, "filter")
    multiplier = sig.mul_(keep).add_(1.0).view(count, -1, positions)
    if positions > 1:  # kernel axis: one population per (layer, kernel position)
        by_column = a.reshape(count, -1, positions).permute(1, 0, 2).reshape(-1, count * positions)
        keep, sig = _axis_query(by_column, 0, n, m, tau, hints, "kernel")
        per_layer = (-1, count, positions)
        multiplier.addcmul_(keep.view(per_layer).permute(1, 0, 2), sig.view(per_layer).permute(1, 0, 2))
    return multiplier.view(a.shape)


def maxq_parts(
    weight: torch.Tensor,
    n: int,
    m: int,
    dense_fraction: float,
    tau: float,
    hints: dict | None = None,
    nm: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Float (kept 0/1, multiplier) of MaxQ's mask, without argument checks (training path).

    ``hints``: a dict kept by the caller between calls on the same layer; it makes the
    per-step recomputation faster and never changes the result. ``nm``: the layer's
    :func:`nm_indicator`, when already computed (e.g. batched with other layers).
    """
    a = _magnitudes(weight)
    a4 = _grouped(a, m)
    kept = _top_n_in_groups(a4, n, m) if nm is None else _grouped(nm.to(a.dtype), m)
    n_dense = math.floor(dense_fraction * (a.numel() // m))
    if n_dense > 0:  # incremental schedule: the lowest-L1 blocks stay fully dense
        kept = torch.maximum(kept, _lowest_blocks(a4.sum(dim=2), n_dense).unsqueeze(2))
    multiplier = _maxq_multipliers(a.unsqueeze(0), n, m, tau, hints)[0]
    return kept.view(weight.shape), multiplier.view(weight.shape)


def maxq_masks_same_shape(
    weights: Sequence[torch.Tensor], n: int, m: int, tau: float, nms: Sequence[torch.Tensor], hints: dict | None = None
) -> list[torch.Tensor]:
    """MaxQ soft masks of several same-shaped weights (no dense blocks) sharing every tensor op.

    ``nms`` are the layers' N:M indicators. The zeros equal those of one :func:`maxq_parts` per layer
    exactly; the multipliers to rounding (an elementwise kernel may round the last bit
    differently in its vector body and its scalar tail, which fall elsewhere for other sizes).
    """
    count, shape = len(weights), weights[0].shape
    a = _magnitudes(torch.stack([w.detach() for w in weights]))  # [layers, out, in, *kernel]
    multiplier = _maxq_multipliers(a, n, m, tau, hints)
    kept = torch.stack([nm.to(a.dtype) for nm in nms]).view(multiplier.shape)
    masks = (kept * multiplier).view(count, *shape)
    return [mask.to(w.dtype) for mask, w in zip(masks, weights)]


def soft_nm_mask(
    weight: torch.Tensor, n: int, m: int, dense_fraction: float = 0.0, tau: float = DEFAULT_TAU
) -> tuple[torch.Tensor, torch.Tensor]:
    """MaxQ's mask in two parts: (kept: bool, multiplier: float), both of ``weight``'s shape.

    ``kept`` is the N:M mask with the ``floor(dense_fraction * blocks)`` lowest-L1 blocks made
    fully dense; ``multiplier`` is ``1 + Q_filter + Q_kernel`` (float32 for half weights).
    The soft mask is their product.
    """
    _check_args(weight, n, m)
    check_maxq_options(dense_fraction, tau)
    kept, multiplier = maxq_parts(weight, n, m, dense_fraction, tau)
    return kept > 0, multiplier


def maxq_mask(
    weight: torch.Tensor, n: int, m: int, dense_fraction: float = 0.0, tau: float = DEFAULT_TAU
) -> torch.Tensor:
    """MaxQ's soft N:M mask (docs/design/methods.md §3.2–3.4), a float tensor of ``weight``'s shape and dtype.

    Zero exactly where the N:M mask drops a weight, except in the
    ``floor(dense_fraction * blocks)`` blocks with the lowest L1 norm, which stay dense. Kept
    weights get ``1 + Q_filter + Q_kernel``: in [1, 3) for kernels with more than one position,
    [1, 2) for Linear and 1-position kernels (in float32 the sigmoid saturates, so a
    multiplier can round up to exactly 3 or 2). Applying the kernel axis to every
    multi-position kernel (not only 3x3) is nmdeploy's extension (docs/design/methods.md §3.4, nmdeploy's choice).
    """
    _check_args(weight, n, m)
    check_maxq_options(dense_fraction, tau)
    kept, multiplier = maxq_parts(weight, n, m, dense_fraction, tau)
    return (kept * multiplier).to(weight.dtype)

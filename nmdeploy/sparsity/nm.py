"""N:M mask maths: the hard magnitude mask and MaxQ's soft multi-axis-query mask.

Layout (METHODS.md §1.2): a weight is ``[out, in/groups, *kernel]`` (Linear: ``[out, in]``).
Groups of ``m`` run along dim 1 at a fixed output channel and kernel position. Instead of
permuting to ``[out, *kernel, in]`` like the reference code, the tensor is viewed as
``[out, in/m, m, kernel_positions]`` so every mask comes out in the weight's own layout
without a copy.

Ties are deterministic everywhere (METHODS.md §1.1 PROPOSAL): among equal magnitudes the
lower index ranks higher, so masks are identical across runs and devices.

Speed matters: the MaxQ mask is rebuilt on every training forward. Sorting is the slow
part on CPU, so each axis query does a single ``kthvalue`` (linear time) and only falls
back to a cumulative count when the threshold value is tied.
"""

from __future__ import annotations

import math

import torch

from nmdeploy.errors import ConfigError, PatternError
from nmdeploy.sparsity.pattern import check_nm

__all__ = [
    "DEFAULT_TAU",
    "check_groupable",
    "check_maxq_options",
    "maxq_mask",
    "maxq_parts",
    "nm_keep",
    "nm_mask",
    "soft_nm_mask",
]

DEFAULT_TAU = 1e-2  # MaxQ's sigmoid temperature; absolute, as in the reference code
_PAIRWISE_MAX_M = 4  # up to this m, ranks come from slice comparisons; above it, from topk


def check_groupable(shape: torch.Size | tuple[int, ...], m: int, what: str = "weight") -> None:
    """Raise :class:`PatternError` unless a tensor of ``shape`` splits into groups of ``m`` on dim 1."""
    if len(shape) < 2:
        raise PatternError(
            f"{what} of shape {list(shape)} cannot be N:M grouped: need at least 2 dims [out, in, ...]"
        )
    if shape[1] % m != 0:
        raise PatternError(
            f"{what} of shape {list(shape)} cannot be grouped by m={m}: dim 1 (input channels, "
            f"length {shape[1]}) is not a multiple of {m}"
        )


def _grouped(t: torch.Tensor, m: int) -> torch.Tensor:
    """View ``[out, in, *kernel]`` as ``[out, in/m, m, kernel_positions]`` (no copy when contiguous)."""
    return t.reshape(t.shape[0], t.shape[1] // m, m, -1)


def _magnitudes(weight: torch.Tensor) -> torch.Tensor:
    """|w| detached, in float32 for half types so comparisons and the sigmoid are exact enough."""
    a = weight.detach().abs()
    return a.float() if a.dtype in (torch.float16, torch.bfloat16) else a


def _order_keys(a: torch.Tensor, dim: int) -> torch.Tensor:
    """Distinct int64 keys that order ``a`` (float32, >= 0) by value, ties to the lower index.

    A non-negative float32's bit pattern read as an integer sorts like the float; appending
    the reversed index along ``dim`` makes every key unique, so any selection routine
    (topk, kthvalue) becomes deterministic.
    """
    length = a.shape[dim]
    shape = [1] * a.dim()
    shape[dim] = length
    rev_index = torch.arange(length - 1, -1, -1, device=a.device, dtype=torch.int64).view(shape)
    return a.contiguous().view(torch.int32).to(torch.int64) * length + rev_index


def _top_n_in_groups(a4: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Boolean mask of the ``n`` largest entries of every group along dim 2 of ``a4``."""
    if m <= _PAIRWISE_MAX_M:
        # rank_k = number of group members that beat member k; a tie goes to the lower index.
        cols = a4.unbind(2)
        ranks = [torch.zeros_like(cols[0], dtype=torch.uint8) for _ in range(m)]
        for j in range(m):
            for k in range(j + 1, m):
                j_wins = cols[j] >= cols[k]
                ranks[k] += j_wins
                ranks[j] += ~j_wins
        return torch.stack([r < n for r in ranks], dim=2)
    if a4.dtype == torch.float32:
        keys = _order_keys(a4, dim=2)
        index = keys.topk(n, dim=2, sorted=False).indices
    else:  # float64: keys would overflow; a stable descending sort keeps ties to the lower index
        index = a4.sort(dim=2, descending=True, stable=True).indices[:, :, :n]
    return torch.zeros(a4.shape, dtype=torch.bool, device=a4.device).scatter_(2, index, True)


def _lowest_blocks(block_sums: torch.Tensor, count: int) -> torch.Tensor:
    """Boolean mask over ``block_sums`` (any shape) of the ``count`` smallest, ties to the lower flat index."""
    flat = block_sums.reshape(-1)
    if count >= flat.numel():
        return torch.ones_like(block_sums, dtype=torch.bool)
    value = flat.kthvalue(count).values
    chosen = flat < value
    missing = count - int(chosen.sum())
    if missing > 0:
        tied = flat == value
        chosen |= tied & (tied.cumsum(0) <= missing)
    return chosen.view(block_sums.shape)


def _axis_query(a: torch.Tensor, dim: int, n: int, m: int, tau: float) -> torch.Tensor:
    """MaxQ's importance term Q along ``dim`` of the 2-D magnitude tensor ``a``.

    For each population P (a line along ``dim``) of length L, with i = floor((m-n)/m * L):
    the i smallest entries get 0; the others get sigmoid((|w| - t) / tau), where t is the
    midpoint between the i-th and (i+1)-th smallest value (METHODS.md §3.4).
    """
    length = a.shape[dim]
    drop = (m - n) * length // m  # exact floor of rho * L
    assert 0 < drop < length, "unreachable for 0 < n < m and L >= m"
    low = a.kthvalue(drop, dim=dim, keepdim=True).values  # a_(i), the largest dropped value
    keep = a > low
    n_keep_missing = (length - drop) - keep.sum(dim=dim, keepdim=True)
    inf = torch.tensor(float("inf"), dtype=a.dtype, device=a.device)
    high = torch.where(keep, a, inf).amin(dim=dim, keepdim=True)  # a_(i+1) unless tied
    if bool((n_keep_missing > 0).any()):
        # a_(i) == a_(i+1): keep the lowest-index copies of the tied value
        tied = a == low
        keep |= tied & (tied.cumsum(dim) <= n_keep_missing)
        high = torch.where(n_keep_missing > 0, low, high)
    threshold = (low + high) * 0.5
    return keep * torch.sigmoid((a - threshold) / tau)


def _check_args(weight: torch.Tensor, n: int, m: int) -> None:
    check_nm(n, m)
    if not isinstance(weight, torch.Tensor) or not weight.is_floating_point():
        raise ConfigError(f"weight must be a floating-point torch.Tensor, got {type(weight).__name__}")
    check_groupable(weight.shape, m)


def nm_keep(weight: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """:func:`nm_mask` without argument checks, for the per-step training path."""
    return _top_n_in_groups(_grouped(_magnitudes(weight), m), n, m).reshape(weight.shape)


def nm_mask(weight: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep the ``n`` largest |w| of every group of ``m`` along dim 1.

    Returns a bool tensor of ``weight``'s shape, True where a weight is kept.
    """
    _check_args(weight, n, m)
    return nm_keep(weight, n, m)


def maxq_parts(
    weight: torch.Tensor, n: int, m: int, dense_fraction: float, tau: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`soft_nm_mask` without argument checks, for the per-step training path."""
    a = _magnitudes(weight)
    a4 = _grouped(a, m)
    kept = _top_n_in_groups(a4, n, m)
    n_dense = math.floor(dense_fraction * (a.numel() // m))
    if n_dense > 0:
        kept |= _lowest_blocks(a4.sum(dim=2), n_dense).unsqueeze(2)
    out_channels, positions = a4.shape[0], a4.shape[3]
    multiplier = 1.0 + _axis_query(a.reshape(out_channels, -1), 1, n, m, tau)  # filter axis
    if positions > 1:  # kernel axis: one population per kernel position
        multiplier += _axis_query(a.reshape(-1, positions), 0, n, m, tau).view(multiplier.shape)
    return kept.reshape(weight.shape), multiplier.view(weight.shape)


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
    return maxq_parts(weight, n, m, dense_fraction, tau)


def check_maxq_options(dense_fraction: float, tau: float) -> None:
    """Raise :class:`ConfigError` unless 0 <= dense_fraction <= 1 and tau > 0."""
    if not (isinstance(dense_fraction, (int, float)) and 0.0 <= dense_fraction <= 1.0):
        raise ConfigError(
            f"dense_fraction={dense_fraction!r} is out of range: need a number 0 <= dense_fraction <= 1"
        )
    if not (isinstance(tau, (int, float)) and tau > 0):
        raise ConfigError(f"tau={tau!r} is invalid: need a number tau > 0 (MaxQ uses 1e-2)")


def maxq_mask(
    weight: torch.Tensor, n: int, m: int, dense_fraction: float = 0.0, tau: float = DEFAULT_TAU
) -> torch.Tensor:
    """MaxQ's soft N:M mask (METHODS.md §3.2–3.4), a float tensor of ``weight``'s shape and dtype.

    Zero exactly where the N:M mask drops a weight, except in the
    ``floor(dense_fraction * blocks)`` blocks with the lowest L1 norm, which stay dense. Kept
    weights get ``1 + Q_filter + Q_kernel``: in [1, 3) for kernels with more than one position,
    [1, 2) for Linear and 1-position kernels (in float32 the sigmoid saturates, so a
    multiplier can round up to exactly 3 or 2). Applying the kernel axis to every
    multi-position kernel (not only 3x3) is nmdeploy's extension (METHODS.md §3.4 PROPOSAL).
    """
    kept, multiplier = soft_nm_mask(weight, n, m, dense_fraction, tau)
    return (kept * multiplier).to(weight.dtype)

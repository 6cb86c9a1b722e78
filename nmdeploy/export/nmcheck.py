"""The numbers behind the verifier: N:M group counts of one weight tensor along one axis.

Vectorised numpy, one pass over the tensor: a non-zero mask (1 byte per weight), moved so
the reduction axis is last, cut into groups of m. For m = 4 and m = 8 the per-group count
reads each group as one 32/64-bit word and adds its bytes with a multiply, which is several
times faster than a generic reduction; other m use ``sum``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["TensorCheck", "check_tensor", "group_nonzeros"]


@dataclass(frozen=True)
class TensorCheck:
    """N:M facts of one weight along its reduction axis (the axis TensorRT groups by 4)."""

    groups: int  # groups of m checked (a partial last group is padded with zeros)
    violations: int  # groups with more than n non-zeros
    first_violation: tuple[int, ...] | None  # index (in the stored tensor) of that group's first weight
    max_nonzeros: int  # most non-zeros found in one group
    zero_groups: int  # groups holding at least m - n real zeros (padding does not count)
    sparsity: float  # share of exact zeros
    hw_2of4: bool  # every aligned 4-group has <= 2 non-zeros and the axis length is a multiple of 4


_WORD = {4: (np.uint32, np.uint32(0x01010101), 24), 8: (np.uint64, np.uint64(0x0101010101010101), 56)}


def group_nonzeros(nonzero_last: np.ndarray, m: int) -> np.ndarray:
    """Non-zero count of every group of ``m`` along the last axis of a bool array (padded to m)."""
    length = nonzero_last.shape[-1]
    if length % m:
        pad = [(0, 0)] * (nonzero_last.ndim - 1) + [(0, m - length % m)]
        nonzero_last = np.pad(nonzero_last, pad)
    groups = np.ascontiguousarray(nonzero_last).reshape(-1, m)
    if m in _WORD:
        dtype, ones, shift = _WORD[m]
        words = groups.view(np.uint8).view(dtype).reshape(-1)
        return ((words * ones) >> dtype(shift)).astype(np.uint8)
    return groups.sum(axis=1, dtype=np.uint8)


def check_tensor(values: np.ndarray, axis: int, n: int, m: int, zero: np.ndarray | int = 0) -> TensorCheck:
    """Check ``values`` for N:M along ``axis``. ``zero`` is what counts as zero (an int8 zero point)."""
    nonzero = np.asarray(values != zero)
    moved = np.moveaxis(nonzero, axis, -1)
    length = moved.shape[-1]
    counts = group_nonzeros(moved, m)
    bad = counts > n
    violations = int(np.count_nonzero(bad))
    first = None
    if violations:
        group = int(np.argmax(bad))
        per_line = -(-length // m)
        line, position = divmod(group, per_line)
        moved_index = (*np.unravel_index(line, moved.shape[:-1]), position * m)
        first = tuple(int(i) for i in _unmove(moved_index, axis, nonzero.ndim))
    counts4 = counts if m == 4 else group_nonzeros(moved, 4)
    hw = length % 4 == 0 and bool(np.all(counts4 <= 2))
    per_line = -(-length // m)
    real = np.full(per_line, m, dtype=np.int64)
    real[-1] = length - (per_line - 1) * m  # a partial last group holds fewer real weights
    zeros = real - counts.reshape(-1, per_line)
    return TensorCheck(
        groups=int(counts.size),
        violations=violations,
        first_violation=first,
        max_nonzeros=int(counts.max()) if counts.size else 0,
        zero_groups=int(np.count_nonzero(zeros >= m - n)),
        sparsity=1.0 - float(np.count_nonzero(nonzero)) / max(nonzero.size, 1),
        hw_2of4=hw,
    )


def _unmove(moved_index: tuple[int, ...], axis: int, ndim: int) -> tuple[int, ...]:
    """Map an index of ``np.moveaxis(x, axis, -1)`` back to an index of ``x``."""
    index = list(moved_index[:-1])
    index.insert(axis % ndim, moved_index[-1])
    return tuple(index)

"""Brute-force references for the mask maths, written for clarity with explicit sorts.

They follow the pseudo-code of docs/design/methods.md §3.9 line by line, in float64 numpy, with the tie rule
nmdeploy promises: among equal magnitudes the lower index ranks higher.
"""

from __future__ import annotations

import math

import numpy as np


def groups_view(a: np.ndarray, m: int) -> np.ndarray:
    """[out, in, *k] -> [out, in/m, m, positions]."""
    return a.reshape(a.shape[0], a.shape[1] // m, m, -1)


def rank_desc(values: np.ndarray) -> np.ndarray:
    """0 for the largest; ties: the lower index ranks higher."""
    order = sorted(range(len(values)), key=lambda j: (-values[j], j))
    ranks = np.empty(len(values), dtype=int)
    ranks[order] = np.arange(len(values))
    return ranks


def nm_mask_ref(w: np.ndarray, n: int, m: int) -> np.ndarray:
    a = np.abs(w.astype(np.float64))
    g = groups_view(a, m)
    keep = np.zeros(g.shape, dtype=bool)
    for o in range(g.shape[0]):
        for b in range(g.shape[1]):
            for p in range(g.shape[3]):
                keep[o, b, :, p] = rank_desc(g[o, b, :, p]) < n
    return keep.reshape(w.shape)


def axis_query_ref(row: np.ndarray, n: int, m: int, tau: float) -> np.ndarray:
    """Q for one population: 0 for the i smallest, sigmoid((a - t)/tau) for the rest."""
    length = len(row)
    i = (m - n) * length // m
    asc = np.argsort(rank_desc(row))[::-1]  # ascending by value, ties: higher index first
    s = row[asc]
    t = (s[i - 1] + s[i]) / 2
    q = np.zeros(length)
    kept = asc[i:]
    q[kept] = 1 / (1 + np.exp(-(row[kept] - t) / tau))
    return q


def maxq_ref(w: np.ndarray, n: int, m: int, dense_fraction: float = 0.0, tau: float = 1e-2):
    """(kept bool, multiplier float64) of MaxQ's soft mask."""
    a = np.abs(w.astype(np.float64))
    kept = groups_view(nm_mask_ref(w, n, m), m).copy()
    g = groups_view(a, m)
    sums = g.sum(axis=2).reshape(-1)  # blocks in (out, group, position) order
    n_dense = math.floor(dense_fraction * sums.size)
    dense_blocks = sorted(range(sums.size), key=lambda b: (sums[b], b))[:n_dense]
    flat = kept.transpose(0, 1, 3, 2).reshape(-1, m)
    flat[dense_blocks] = True
    kept = flat.reshape(kept.shape[0], kept.shape[1], kept.shape[3], m).transpose(0, 1, 3, 2)
    rows = a.reshape(a.shape[0], -1)
    mult = 1 + np.stack([axis_query_ref(r, n, m, tau) for r in rows]).reshape(w.shape)
    positions = g.shape[3]
    if positions > 1:
        cols = a.reshape(-1, positions)
        qk = np.stack([axis_query_ref(cols[:, p], n, m, tau) for p in range(positions)], axis=1)
        mult = mult + qk.reshape(w.shape)
    return kept.reshape(w.shape), mult

"""nm_mask and maxq_mask against brute-force references, plus their stated properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from nmdeploy.errors import ConfigError, PatternError
from nmdeploy.sparsity import maxq_mask, nm_mask, soft_nm_mask
from tests.sparsity.reference import maxq_ref, nm_mask_ref

PATTERNS = [(1, 2), (1, 4), (2, 4), (3, 4), (1, 8), (2, 8), (3, 8), (4, 8), (1, 16), (2, 16)]
# Magnitudes from a small grid produce many exact ties; block sums stay exact in any order.
GRID = st.sampled_from([0.0, 0.125, -0.125, 0.25, -0.5, 0.5, 1.0, -1.0, 1.5])


@st.composite
def weights(draw, patterns=PATTERNS, ties: bool | None = None, max_kernel: int = 3):
    """A (pattern, weight) pair: Linear, Conv1d/2d/3d or grouped-conv shaped, dim 1 % m == 0."""
    n, m = draw(st.sampled_from(patterns))
    out = draw(st.integers(1, 5))
    cin = m * draw(st.integers(1, 3))
    kernel = draw(st.sampled_from([(), (1,), (draw(st.integers(2, max_kernel)),), (1, 1), (3, 3), (2, 1, 2)]))
    shape = (out, cin, *kernel)
    size = math.prod(shape)
    use_grid = draw(st.booleans()) if ties is None else ties
    if use_grid:
        values = draw(st.lists(GRID, min_size=size, max_size=size))
    else:
        values = draw(st.lists(st.floats(-2, 2, allow_nan=False, width=32), min_size=size, max_size=size, unique=True))
    return n, m, torch.tensor(values, dtype=torch.float32).reshape(shape)


@given(weights())
def test_nm_mask_matches_brute_force(case):
    n, m, w = case
    got = nm_mask(w, n, m)
    assert got.dtype == torch.bool and got.shape == w.shape
    np.testing.assert_array_equal(got.numpy(), nm_mask_ref(w.numpy(), n, m))


@given(weights(), st.sampled_from([torch.float64, torch.float16, torch.bfloat16]))
def test_nm_mask_other_dtypes_match_brute_force(case, dtype):
    n, m, w = case
    w = w.to(dtype)
    np.testing.assert_array_equal(nm_mask(w, n, m).numpy(), nm_mask_ref(w.double().numpy(), n, m))


@given(weights())
def test_nm_mask_keeps_exactly_n_per_group(case):
    n, m, w = case
    kept = nm_mask(w, n, m).reshape(w.shape[0], w.shape[1] // m, m, -1)
    assert torch.all(kept.sum(dim=2) == n)


def test_nm_mask_ties_go_to_the_lower_index():
    w = torch.tensor([[1.0, 1.0, 1.0, 1.0, 0.0, -2.0, 2.0, 0.0]])
    assert nm_mask(w, 2, 4).tolist() == [[True, True, False, False, False, True, True, False]]
    assert nm_mask(torch.zeros(1, 8), 1, 8).tolist() == [[True] + [False] * 7]


def test_nm_mask_groups_run_along_input_channels_of_a_conv():
    w = torch.zeros(1, 4, 1, 2)
    w[0, :, 0, 0] = torch.tensor([4.0, 3.0, 2.0, 1.0])  # position (0, 0): first two kept
    w[0, :, 0, 1] = torch.tensor([1.0, 2.0, 3.0, 4.0])  # position (0, 1): last two kept
    kept = nm_mask(w, 2, 4)
    assert kept[0, :, 0, 0].tolist() == [True, True, False, False]
    assert kept[0, :, 0, 1].tolist() == [False, False, True, True]


def test_nm_mask_is_identical_on_every_device(device):
    torch.manual_seed(0)
    w = torch.randn(32, 64, 3, 3).round(decimals=1)  # rounding makes ties common
    expected = torch.from_numpy(nm_mask_ref(w.numpy(), 2, 4))
    assert torch.equal(nm_mask(w.to(device), 2, 4).cpu(), expected)


@pytest.mark.parametrize(
    "shape, message",
    [
        ((8, 6), "dim 1 (input channels, length 6) is not a multiple of 4"),
        ((8,), "need at least 2 dims"),
    ],
)
def test_nm_mask_rejects_ungroupable_shapes(shape, message):
    with pytest.raises(PatternError, match=message.replace("(", r"\(").replace(")", r"\)")):
        nm_mask(torch.ones(shape), 2, 4)


def test_nm_mask_rejects_bad_patterns_and_integer_weights():
    with pytest.raises(PatternError, match=r'pattern "4:4" is invalid: need 0 < n < m <= 32'):
        nm_mask(torch.ones(4, 4), 4, 4)
    with pytest.raises(ConfigError, match="weight must be a floating-point torch.Tensor, got Tensor"):
        nm_mask(torch.ones(4, 4, dtype=torch.int64), 2, 4)


# ---- maxq_mask -------------------------------------------------------------------------


@given(weights(), st.sampled_from([0.0, 0.3, 0.5, 1.0]))
def test_maxq_matches_brute_force(case, dense_fraction):
    """With and without ties (the strategy draws both), with and without dense blocks."""
    n, m, w = case
    kept, mult = soft_nm_mask(w, n, m, dense_fraction=dense_fraction)
    ref_kept, ref_mult = maxq_ref(w.numpy(), n, m, dense_fraction)
    np.testing.assert_array_equal(kept.numpy(), ref_kept)
    np.testing.assert_allclose(mult.numpy(), ref_mult, rtol=0, atol=1e-5)


@given(weights())
def test_maxq_zeros_are_the_nm_zeros_without_dense_blocks(case):
    n, m, w = case
    soft = maxq_mask(w, n, m)
    assert torch.equal(soft != 0, nm_mask(w, n, m))


@given(weights(ties=False))
def test_maxq_multipliers_stay_in_range(case):
    """Strict upper bounds in float64 with |w| <= 2 (sigmoid arguments stay below 400/2)."""
    n, m, w = case
    w = w.double() / 10  # |w| <= 0.2: sigmoid((a - t) / 0.01) < 1 exactly in float64
    soft = maxq_mask(w, n, m)
    kept = soft[soft != 0]
    upper = 3.0 if w[0, 0].numel() > 1 else 2.0
    assert torch.all(kept >= 1) and torch.all(kept < upper)


def test_maxq_multiplier_bounds_by_layer_type():
    torch.manual_seed(0)
    conv = torch.randn(64, 64, 3, 3) * 0.05
    linear = torch.randn(64, 64) * 0.05
    for w, upper in ((conv, 3.0), (linear, 2.0), (conv[:, :, :1, :1].contiguous(), 2.0)):
        kept = maxq_mask(w, 2, 4)
        kept = kept[kept != 0]
        assert kept.min() >= 1 and kept.max() <= upper
        assert kept.max() > upper - 1  # both axes really contribute
    assert maxq_mask(conv, 2, 4).max() > 2  # the kernel axis adds on top of the filter axis


@given(weights())
def test_maxq_fully_dense_has_no_zeros(case):
    n, m, w = case
    w = w + 3  # no exact zero weights, so a zero could only come from the mask
    assert torch.all(maxq_mask(w, n, m, dense_fraction=1.0) != 0)


def test_maxq_keeps_the_lowest_l1_blocks_dense():
    # 1 output, 8 inputs = 2 blocks of 4; the second block has the smaller L1 norm
    w = torch.tensor([[4.0, 3.0, 2.0, 1.0, 0.4, 0.3, 0.2, 0.1]])
    soft = maxq_mask(w, 2, 4, dense_fraction=0.5)
    assert (soft[0, :4] != 0).tolist() == [True, True, False, False]  # high-L1 block is N:M
    assert (soft[0, 4:] != 0).tolist() == [True, True, True, True]  # low-L1 block stays dense


def test_maxq_mask_exact_value_for_a_tiny_linear():
    # one row of 4 weights, 2:4: i = 2, t = (0.2 + 0.3) / 2 = 0.25
    w = torch.tensor([[0.1, -0.3, 0.2, 0.4]], dtype=torch.float64)
    sig = torch.sigmoid(torch.tensor([0.05, 0.15], dtype=torch.float64) / 0.01)
    expected = torch.tensor([[0.0, 1 + sig[0], 0.0, 1 + sig[1]]], dtype=torch.float64)
    torch.testing.assert_close(maxq_mask(w, 2, 4), expected, rtol=0, atol=1e-12)


def test_maxq_mask_keeps_dtype_and_rejects_bad_options():
    w = torch.randn(4, 8, dtype=torch.float16)
    assert maxq_mask(w, 2, 4).dtype == torch.float16
    with pytest.raises(
        ConfigError, match=r"dense_fraction=1.5 is out of range: need a number 0 <= dense_fraction <= 1"
    ):
        maxq_mask(w, 2, 4, dense_fraction=1.5)
    with pytest.raises(ConfigError, match=r"tau=0 is invalid: need a number tau > 0"):
        maxq_mask(w, 2, 4, tau=0)


@given(weights(), st.sampled_from([1e-4, 1e-2, 1.0]), st.integers(0, 2**16))
def test_maxq_hints_change_speed_never_the_result(case, step, seed):
    """The warm-start path (last step's thresholds) must give bit-identical masks."""
    import nmdeploy.sparsity.nm as nm_module

    n, m, w = case
    gen = torch.Generator().manual_seed(seed)
    moved = w + step * torch.randn(w.shape, generator=gen)
    if seed % 3 == 0:
        moved = moved.round(decimals=1)  # ties at the boundary: the hinted path must bail out
    old = nm_module._HINT_MIN_NUMEL
    nm_module._HINT_MIN_NUMEL = 0  # exercise the hinted path on small tensors too
    try:
        hints: dict = {}
        nm_module.maxq_parts(w, n, m, 0.0, 1e-2, hints)
        assert set(hints) == ({"filter", "kernel"} if w[0, 0].numel() > 1 else {"filter"})
        got = nm_module.maxq_parts(moved, n, m, 0.0, 1e-2, hints)
    finally:
        nm_module._HINT_MIN_NUMEL = old
    expected = nm_module.maxq_parts(moved, n, m, 0.0, 1e-2)
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])


@given(st.lists(weights(patterns=[(2, 4)]), min_size=1, max_size=4), st.sampled_from([torch.float32, torch.float64]))
def test_batched_indicators_equal_one_at_a_time(cases, dtype):
    from nmdeploy.sparsity.nm import nm_indicator, nm_indicators

    ws = [w.to(dtype) for _, _, w in cases]
    for got, w in zip(nm_indicators(ws, 2, 4), ws):
        assert got.dtype == w.dtype and torch.equal(got, nm_indicator(w, 2, 4))


@given(weights(patterns=[(2, 4), (1, 4), (2, 8)], ties=None), st.integers(2, 3), st.integers(0, 2**16))
def test_same_shape_maxq_batch_equals_one_layer_at_a_time(case, count, seed):
    from nmdeploy.sparsity.nm import maxq_masks_same_shape, maxq_parts, nm_indicator

    n, m, w = case
    gen = torch.Generator().manual_seed(seed)
    ws = [w] + [torch.randn(w.shape, generator=gen) for _ in range(count - 1)]
    nms = [nm_indicator(x, n, m) for x in ws]
    hints: dict = {}
    for _ in range(2):  # the second round runs with warm-start hints
        got = maxq_masks_same_shape(ws, n, m, 1e-2, nms, hints)
        for x, mask in zip(ws, got):
            kept, mult = maxq_parts(x, n, m, 0.0, 1e-2)
            assert torch.equal(mask != 0, kept != 0)  # the zero pattern is exact
            # multipliers agree to rounding: SIMD bodies and scalar tails of elementwise
            # kernels (sigmoid, fused adds) may differ in the last bit for other tensor sizes
            torch.testing.assert_close(mask, kept * mult, rtol=1e-6, atol=0)
        ws = [x + 1e-3 * torch.randn(x.shape, generator=gen) for x in ws]
        nms = [nm_indicator(x, n, m) for x in ws]

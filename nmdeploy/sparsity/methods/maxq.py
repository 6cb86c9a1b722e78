"""MaxQ (Xiang et al., CVPR 2024; docs/design/methods.md §3), the V2Pro "Soft" variant the paper's
ImageNet runs use.

Each training forward rebuilds the soft mask ``M_NM * (1 + Q_filter + Q_kernel)`` from the
current weight and the current dense fraction p (set per epoch by the schedule), stores it
in the ``mask`` buffer and multiplies the weight by it with a straight-through gradient
plus the SR decay on pruned weights. Evaluation uses the stored mask; on the switch from
training to evaluation it is refreshed once from the current weight, which is what the
reference's end-of-epoch ``show_zero_num_and_update_mask`` achieves before validation.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

import torch

from nmdeploy.errors import ConfigError, SparsityStateError
from nmdeploy.sparsity.methods.base import SR_DECAY, NMParametrization, check_decay, masked_weight_ste
from nmdeploy.sparsity.methods.registry import register
from nmdeploy.sparsity.nm import DEFAULT_TAU, check_maxq_options, maxq_masks_same_shape, maxq_parts, nm_indicator

__all__ = ["MaxQConfig", "MaxQMask"]


@dataclass(frozen=True)
class MaxQConfig:
    """``decay``: SR term on pruned weights (2e-4); ``tau``: sigmoid temperature (1e-2, absolute).

    ``rescale`` (nmdeploy's addition, off by default): before training, divide each output row
    of the weight by the factor MaxQ's multipliers grow its norm by, so the effective weight
    ``W * (1 + Q)`` starts with the pretrained row norms. MaxQ was built for convolutions
    followed by BatchNorm, which absorbs the multipliers' scale; a pretrained network without
    it (a transformer's Linears) otherwise starts from a perturbed function (MiniLM: cosine to
    the dense embeddings 0.004 instead of 0.93 before any training). A row's uniform scale
    changes neither its N:M mask nor its multiplier ranks.
    """

    decay: float = SR_DECAY
    tau: float = DEFAULT_TAU
    rescale: bool = False

    def __post_init__(self) -> None:
        check_decay("maxq", self.decay)
        check_maxq_options(0.0, self.tau)
        if not isinstance(self.rescale, bool):
            raise ConfigError(f"rescale={self.rescale!r} is invalid: true or false")


class MaxQMask(NMParametrization):
    """Soft N:M mask rebuilt every training forward; buffers ``mask`` and ``dense_fraction``."""

    method = "maxq"

    def __init__(self, n: int, m: int, weight: torch.Tensor, decay: float, tau: float) -> None:
        super().__init__(n, m)
        self.decay = float(decay)
        self.tau = float(tau)
        self._hints: dict = {}  # speeds up the next recomputation; never changes its result
        # Persistent, so one checkpoint resumes with the identical mask and schedule position.
        self.register_buffer("dense_fraction", torch.zeros((), dtype=torch.float64))
        self.register_buffer("mask", self._soft_mask(weight.detach()))
        self._stale = False

    def _soft_mask(self, weight: torch.Tensor, nm: torch.Tensor | None = None) -> torch.Tensor:
        with torch.no_grad():
            p = float(self.dense_fraction)
            kept, multiplier = maxq_parts(weight, self.n, self.m, p, self.tau, self._hints, nm)
            return (kept * multiplier).to(weight.dtype)

    def recomputes(self) -> bool:
        return self.training or self._stale

    def prepare(self, weight: torch.Tensor, nm: torch.Tensor) -> None:
        self.adopt(weight, self._soft_mask(weight, nm))

    def adopt(self, weight: torch.Tensor, mask: torch.Tensor) -> None:
        """Use ``mask``, computed for exactly this ``weight`` (batched with other layers)."""
        self.mask = mask
        self._stale = False
        self._remember(weight, mask)

    def train(self, mode: bool = True) -> MaxQMask:
        if self.training and not mode:
            self._stale = True  # refresh from the final weights at the first eval forward
        return super().train(mode)

    def set_dense_fraction(self, value: float) -> None:
        self.dense_fraction.fill_(value)
        self._stale = True

    def batch_key(self, weight: torch.Tensor) -> Hashable | None:
        """Same-shape layers past the schedule share one batched mask computation."""
        if float(self.dense_fraction) != 0:
            return None
        return (tuple(weight.shape), weight.device, weight.dtype, self.tau)

    @classmethod
    def prepare_batch(cls, group: list[tuple[NMParametrization, torch.Tensor, torch.Tensor]], hints: dict) -> None:
        if len(group) == 1:
            super().prepare_batch(group, hints)
            return
        first = group[0][0]
        masks = maxq_masks_same_shape([g[1] for g in group], first.n, first.m, first.tau, [g[2] for g in group], hints)
        for (p, weight, _), mask in zip(group, masks):
            p.adopt(weight, mask)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if (self.training or self._stale) and self._prepared_for(weight) is None:
            # Assigned, not copied in place: an earlier graph may still hold the old mask.
            self.mask = self._soft_mask(weight)
            self._stale = False
        return masked_weight_ste(weight, self.mask, self.decay, self)

    def hard_mask(self, weight: torch.Tensor) -> torch.Tensor:
        return nm_indicator(weight, self.n, self.m) > 0  # SAD is measured on M_NM (docs/design/methods.md §5)

    def fold(self, weight: torch.Tensor) -> torch.Tensor:
        p = float(self.dense_fraction)
        if p > 0:
            raise SparsityStateError(
                f"cannot fold a MaxQ layer while {p:.0%} of its blocks are still dense; "
                "finish the schedule first (call sp.set_epoch(e) with e >= end_epoch)"
            )
        self.mask = self._soft_mask(weight)  # fold what the final weights give
        self._stale = False
        return weight * self.mask

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, decay={self.decay:g}, tau={self.tau:g}"


@register("maxq", MaxQConfig, uses_schedule=True, rebuilds_masks=True)
def make_maxq(n: int, m: int, weight: torch.Tensor, config: MaxQConfig) -> MaxQMask:
    if config.rescale:
        with torch.no_grad():
            _, multiplier = maxq_parts(weight, n, m, 1.0, config.tau)  # all blocks dense: the multipliers alone
            rows = weight.flatten(1)
            grown = (rows * multiplier.flatten(1).to(rows.dtype)).norm(dim=1) / rows.norm(dim=1).clamp(min=1e-12)
            weight.div_(grown.clamp(min=1e-12).view(-1, *([1] * (weight.ndim - 1))))
    return MaxQMask(n, m, weight, config.decay, config.tau)

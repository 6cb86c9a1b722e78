"""SR-STE and plain STE (Zhou et al., ICLR 2021; docs/design/methods.md §2).

The hard magnitude mask is recomputed on every forward, training and evaluation alike, and
no mask is stored: the dense weight fully determines it. The gradient is straight-through
plus ``decay * (1 - E) * W`` on pruned weights; ``ste`` is the same with ``decay = 0``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from nmdeploy.sparsity.methods.base import SR_DECAY, NMParametrization, check_decay, masked_weight_ste
from nmdeploy.sparsity.methods.registry import register
from nmdeploy.sparsity.nm import nm_indicator

__all__ = ["SRSTEConfig", "STEConfig", "SRSTEMask"]


@dataclass(frozen=True)
class SRSTEConfig:
    """``decay``: lambda_W, the L2 pull on currently pruned weights (2e-4 in the paper's code)."""

    decay: float = SR_DECAY

    def __post_init__(self) -> None:
        check_decay("srste", self.decay)


@dataclass(frozen=True)
class STEConfig:
    """Plain STE has no options: it is SR-STE with ``decay = 0``."""


class SRSTEMask(NMParametrization):
    """Hard N:M mask of the current weight in every forward; STE + SR gradient."""

    method = "srste"

    def __init__(self, n: int, m: int, decay: float) -> None:
        super().__init__(n, m)
        self.decay = float(decay)

    def recomputes(self) -> bool:
        return True

    def prepare(self, weight: torch.Tensor, nm: torch.Tensor) -> None:
        self._remember(weight, nm)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        mask = self._prepared_for(weight)
        if mask is None:
            mask = nm_indicator(weight, self.n, self.m)
        return masked_weight_ste(weight, mask, self.decay, self)

    def hard_mask(self, weight: torch.Tensor) -> torch.Tensor:
        return nm_indicator(weight, self.n, self.m) > 0

    def fold(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * nm_indicator(weight, self.n, self.m)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, decay={self.decay:g}"


class STEMask(SRSTEMask):
    method = "ste"


@register("srste", SRSTEConfig, rebuilds_masks=True)
def make_srste(n: int, m: int, weight: torch.Tensor, config: SRSTEConfig) -> SRSTEMask:
    return SRSTEMask(n, m, config.decay)


@register("ste", STEConfig, rebuilds_masks=True)
def make_ste(n: int, m: int, weight: torch.Tensor, config: STEConfig) -> SRSTEMask:
    return STEMask(n, m, 0.0)

"""ASP-style one-shot magnitude pruning with a fixed mask (apex ASP; docs/design/methods.md §4).

The N:M magnitude mask is computed once from the weights at ``sparsify()`` time, the pruned
weights are set to exactly zero, and the forward multiplies by the fixed mask, so pruned
weights get no gradient and stay zero with any optimizer (no optimizer patching).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from nmdeploy.sparsity.methods.base import NMParametrization
from nmdeploy.sparsity.methods.registry import register
from nmdeploy.sparsity.nm import nm_indicator

__all__ = ["ASPConfig", "ASPMask"]


@dataclass(frozen=True)
class ASPConfig:
    """ASP has no options: the mask is the N:M magnitude mask of the starting weights."""


class ASPMask(NMParametrization):
    """Fixed 0/1 ``mask`` buffer in the weight's dtype (float products are cheap), applied in every forward."""

    method = "asp"

    def __init__(self, n: int, m: int, weight: torch.Tensor) -> None:
        super().__init__(n, m)
        self.register_buffer("mask", nm_indicator(weight.detach(), n, m))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.mask

    def hard_mask(self, weight: torch.Tensor) -> torch.Tensor:
        return self.mask > 0

    def fold(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.mask


@register("asp", ASPConfig)
def make_asp(n: int, m: int, weight: torch.Tensor, config: ASPConfig) -> ASPMask:
    parametrization = ASPMask(n, m, weight)
    with torch.no_grad():
        weight.mul_(parametrization.mask)  # pruned weights are exact zeros from now on
    return parametrization

"""``dense``: the no-op baseline. Layers are selected and reported like the other methods
but left untouched, so a dense run costs exactly what the plain model costs."""

from __future__ import annotations

from dataclasses import dataclass

from nmdeploy.sparsity.methods.registry import register

__all__ = ["DenseConfig"]


@dataclass(frozen=True)
class DenseConfig:
    """The dense baseline has no options."""


@register("dense", DenseConfig, makes_mask=False)
def make_dense(n: int, m: int, weight: object, config: DenseConfig) -> None:
    return None

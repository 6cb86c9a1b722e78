"""What every sparsification method shares: the parametrization base class and the
straight-through masked-weight function with the sparse-refined (SR) decay term."""

from __future__ import annotations

import math
from collections.abc import Hashable
from typing import Any, ClassVar

import torch
from torch import nn

from nmdeploy.errors import ConfigError

__all__ = ["SR_DECAY", "NMParametrization", "check_decay", "masked_weight_ste"]

SR_DECAY = 2e-4  # lambda_W of the SR-STE reference code and of MaxQ (--decay 0.0002)


def check_decay(method: str, decay: object) -> None:
    """Raise :class:`ConfigError` unless the SR decay is a number >= 0."""
    if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0 <= decay < math.inf:
        raise ConfigError(f"{method} option decay={decay!r} is invalid: need a number >= 0, e.g. 2e-4")


class _MaskedWeightSTE(torch.autograd.Function):
    """``w_eff = w * mask`` with a straight-through gradient plus SR-STE's decay.

    Backward returns ``dL/dw_eff + decay * (mask == 0) * w`` (docs/design/methods.md §2, §3.6): the task
    gradient reaches every weight unchanged and only the pruned weights are pulled to zero.
    The term is added here, inside backward, so it works with any optimizer and loop. Where
    the gradient of one backward is not the gradient of the step (a ``GradScaler`` multiplies
    the task gradient by its scale; gradient accumulation sums several backwards) the term
    must be added once, after unscaling: :meth:`NMParametrization.apply_decay`, which
    ``Sparsifier.defer_decay()`` switches to (nmdeploy's trainer does).
    """

    @staticmethod
    def forward(ctx: Any, weight: torch.Tensor, mask: torch.Tensor, decay: float) -> torch.Tensor:
        ctx.decay = decay
        if decay:
            ctx.save_for_backward(weight, mask)
        return weight * mask

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, None, None]:
        if not ctx.decay:
            return grad, None, None
        weight, mask = ctx.saved_tensors
        pruned = torch.eq(mask, 0, out=torch.empty_like(mask))  # float 0/1: much faster than bool
        return grad.addcmul(weight, pruned, value=ctx.decay), None, None


def masked_weight_ste(
    weight: torch.Tensor, mask: torch.Tensor, decay: float, owner: NMParametrization | None = None
) -> torch.Tensor:
    """Apply the float ``mask`` (0/1 or MaxQ's soft mask) to ``weight`` with the STE + SR rule.

    When ``owner`` defers its decay, the mask is left with it for :meth:`NMParametrization.apply_decay`
    and backward passes the task gradient alone.
    """
    if owner is not None and owner.defer and decay:
        owner.pending_mask = mask
        decay = 0.0
    return _MaskedWeightSTE.apply(weight, mask, decay)


class NMParametrization(nn.Module):
    """Base for the per-layer parametrizations that make a weight N:M sparse while training.

    Registered with ``torch.nn.utils.parametrize`` on the layer's weight, so the dense weight
    stays the optimised parameter (same object: existing optimizers keep working) and mask
    buffers live in the model's ``state_dict``.
    """

    method: ClassVar[str] = ""
    decay: float = 0.0  # the SR decay of the methods that have one

    def __init__(self, n: int, m: int) -> None:
        super().__init__()
        self.n = n
        self.m = m
        self.defer = False  # add the SR decay in apply_decay(), not inside backward
        self.pending_mask: torch.Tensor | None = None  # the mask of the last forward, while deferred
        # (weight version, weight storage, value) left by the model's pre-forward hook
        self._prepared: tuple[int, int, torch.Tensor] | None = None

    def apply_decay(self, weight: torch.Tensor) -> None:
        """Add ``decay * (mask == 0) * w`` to ``weight.grad`` for the last forward's mask (deferred mode).

        The same arithmetic backward would have done (docs/design/methods.md §2), once per
        optimizer step, on a gradient that is no longer scaled.
        """
        mask, self.pending_mask = self.pending_mask, None
        if mask is None or not self.decay or weight.grad is None:
            return
        with torch.no_grad():
            pruned = torch.eq(mask, 0, out=torch.empty_like(mask))
            weight.grad.addcmul_(weight, pruned, value=self.decay)

    def recomputes(self) -> bool:
        """Whether the next forward rebuilds the mask from the weight (then it can be batched)."""
        return False

    def set_dense_fraction(self, value: float) -> None:
        """Follow the incremental schedule: ``value`` of the N:M blocks stay dense (only methods that use it)."""

    def prepare(self, weight: torch.Tensor, nm: torch.Tensor) -> None:
        """Take this forward's mask work, given the layer's N:M indicator computed in a batch."""

    def batch_key(self, weight: torch.Tensor) -> Hashable | None:
        """Layers of one model whose keys are equal build this forward's masks together
        (:meth:`prepare_batch`); None, the default, prepares this layer on its own."""
        return None

    @classmethod
    def prepare_batch(cls, group: list[tuple[NMParametrization, torch.Tensor, torch.Tensor]], hints: dict) -> None:
        """Prepare the (parametrization, weight, N:M indicator) triples of one :meth:`batch_key`.

        ``hints`` persists between forwards for this group (e.g. warm starts); the result
        must not depend on it.
        """
        for p, weight, nm in group:
            p.prepare(weight, nm)

    def _prepared_for(self, weight: torch.Tensor) -> torch.Tensor | None:
        """The prepared value if it was made from exactly this weight (same storage and version)."""
        prepared = self._prepared
        if prepared is not None and prepared[0] == weight._version and prepared[1] == weight.data_ptr():
            return prepared[2]
        return None

    def _remember(self, weight: torch.Tensor, value: torch.Tensor) -> None:
        self._prepared = (weight._version, weight.data_ptr(), value)

    def hard_mask(self, weight: torch.Tensor) -> torch.Tensor:
        """The N:M topology now (bool), used for sparse-architecture-divergence counts."""
        raise NotImplementedError

    def fold(self, weight: torch.Tensor) -> torch.Tensor:
        """The plain deploy weight, with exact zeros where the mask drops weights."""
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"method={self.method}, pattern={self.n}:{self.m}"

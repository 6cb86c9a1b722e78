"""Build all of a model's masks in one batched pass at the start of its forward.

Methods that rebuild their mask in every forward (maxq in training, srste, ste) would
otherwise each run a dozen small tensor ops per layer, in the middle of the forward when
the caches are full of activations. A forward pre-hook on the sparsified model instead
computes every layer's N:M indicator at once (stacked, a handful of ops) right after the
optimizer step, and hands each layer its share. Each result is tied to the weight's storage
and version; a layer whose weight changed since, or one called outside this model's
forward, computes its own mask: the numbers are the same either way.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from nmdeploy.sparsity.methods.base import NMParametrization
from nmdeploy.sparsity.nm import nm_indicators

__all__ = ["attach_batching", "detach_batching"]

# Registries keyed by model: the hook handles attached (for finalize() to remove), and each
# model's parametrization lists, so the per-forward hooks need not walk the module tree.
_HOOKS: weakref.WeakKeyDictionary[nn.Module, list[Any]] = weakref.WeakKeyDictionary()
_LAYERS: weakref.WeakKeyDictionary[nn.Module, list[nn.Module]] = weakref.WeakKeyDictionary()
# model -> {tuple of layer ids: hints} for the layers a method batches together (see batch_key)
_GROUP_HINTS: weakref.WeakKeyDictionary[nn.Module, dict[tuple[int, ...], dict]] = weakref.WeakKeyDictionary()


def attach_batching(model: nn.Module) -> None:
    """Register the pre-forward (prepare) and forward (release) hooks on ``model``."""
    _HOOKS[model] = [model.register_forward_pre_hook(_prepare_masks), model.register_forward_hook(_release_masks)]


def detach_batching(model: nn.Module) -> None:
    """Remove what :func:`attach_batching` added (a deep copy's hooks stay, as no-ops)."""
    for handle in _HOOKS.pop(model, []):
        handle.remove()
    _LAYERS.pop(model, None)
    _GROUP_HINTS.pop(model, None)


def _parametrization_lists(model: nn.Module) -> list[nn.Module]:
    """The model's ParametrizationLists that hold an nmdeploy parametrization (cached per model;
    a deep copy of a sparsified model gets its own entry on first use)."""
    found = _LAYERS.get(model)
    if found is None:
        found = [
            plist
            for module in model.modules()
            if parametrize.is_parametrized(module)
            for plist in module.parametrizations.values()
            if isinstance(plist[0], NMParametrization)
        ]
        _LAYERS[model] = found
    return found


def _recomputing(model: nn.Module) -> list[tuple[NMParametrization, torch.Tensor]]:
    """(parametrization, original weight) of every layer whose next forward rebuilds its mask."""
    return [(plist[0], plist.original) for plist in _parametrization_lists(model) if plist[0].recomputes()]


def _prepare_masks(model: nn.Module, args: Any) -> None:
    """Forward pre-hook: build every mask this forward needs, in one batched pass.

    The N:M indicators of all layers of one pattern come out of one stacked computation;
    each method then takes its share, and layers whose method gives them equal
    :meth:`~NMParametrization.batch_key` finish their masks together.
    """
    by_pattern: dict[tuple[int, int], list[tuple[NMParametrization, torch.Tensor]]] = {}
    for p, weight in _recomputing(model):
        by_pattern.setdefault((p.n, p.m), []).append((p, weight))
    with torch.no_grad():
        for (n, m), items in by_pattern.items():
            nms = nm_indicators([w for _, w in items], n, m)
            groups: dict[tuple, list[tuple[NMParametrization, torch.Tensor, torch.Tensor]]] = {}
            for (p, weight), nm in zip(items, nms):
                key = p.batch_key(weight)
                if key is None:
                    p.prepare(weight, nm)
                else:
                    groups.setdefault((type(p), key), []).append((p, weight, nm))
            for (method, _), group in groups.items():
                hints = _GROUP_HINTS.setdefault(model, {}).setdefault(tuple(id(g[0]) for g in group), {})
                method.prepare_batch(group, hints)


def _release_masks(model: nn.Module, args: Any, output: Any) -> None:
    """Forward hook: drop the prepared masks so nothing outlives this forward."""
    for plist in _parametrization_lists(model):
        plist[0]._prepared = None

"""``sparsify()`` / ``finalize()``: make any PyTorch model N:M sparse inside its own training loop.

sp = nmdeploy.sparsify(model, pattern="2:4", method="maxq", end_epoch=30)
for epoch in range(epochs):
    sp.set_epoch(epoch)
    train_one_epoch(model, optimizer)      # unchanged user code
nmdeploy.finalize(model)                   # plain weights with exact N:M zeros
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from nmdeploy.config import from_arguments
from nmdeploy.errors import ConfigError, NotAcceleratedWarning, SparsityStateError
from nmdeploy.sparsity.batching import attach_batching, detach_batching
from nmdeploy.sparsity.config import SparsityConfig
from nmdeploy.sparsity.methods.base import NMParametrization
from nmdeploy.sparsity.methods.registry import get_method
from nmdeploy.sparsity.pattern import Pattern, parse_pattern
from nmdeploy.sparsity.permute import PermutationReport
from nmdeploy.sparsity.report import LayerReport, SparsityReport
from nmdeploy.sparsity.schedule import preserve_rate
from nmdeploy.sparsity.targets import LayerTarget, check_selection, normalise_patterns, select_layers

__all__ = ["Sparsifier", "sparsify", "finalize", "nm_parametrization"]

_STATE_FORMAT = 1


def nm_parametrization(module: nn.Module, param_name: str) -> NMParametrization | None:
    """The nmdeploy parametrization on ``module.<param_name>``, if there is one."""
    if not parametrize.is_parametrized(module, param_name):
        return None
    found = [p for p in module.parametrizations[param_name] if isinstance(p, NMParametrization)]
    return found[0] if found else None


class Sparsifier:
    """Handle returned by :func:`sparsify`: schedule position, report and resumable state.

    The masks themselves live in the model (parametrization buffers), so ``model.state_dict()``
    carries them; ``Sparsifier.state_dict()`` adds the settings and the epoch.
    """

    def __init__(self, model: nn.Module, config: SparsityConfig, targets: list[LayerTarget]) -> None:
        self.model = model
        self.config = config
        self.pattern: Pattern = parse_pattern(config.pattern)
        self.method = config.method
        self.schedule = config.schedule
        self.start_epoch = config.start_epoch
        self.end_epoch = config.end_epoch
        self.targets = tuple(targets)
        self.options = asdict(config.method_options())
        self.epoch = 0
        self.permutation: PermutationReport | None = None  # what permute=True did, layer by layer
        self._sad_reference: dict[str, torch.Tensor] = {}

    # -- layers -----------------------------------------------------------------------------
    @property
    def sparse_layers(self) -> tuple[str, ...]:
        """Qualified names of the layers being sparsified."""
        return tuple(t.name for t in self.targets if t.eligible)

    def _parametrized(self) -> list[tuple[LayerTarget, NMParametrization, torch.Tensor]]:
        out = []
        for t in self.targets:
            p = nm_parametrization(t.module, t.param_name) if t.eligible else None
            if p is not None:
                out.append((t, p, t.module.parametrizations[t.param_name].original))
        return out

    # -- schedule ---------------------------------------------------------------------------
    @property
    def dense_fraction(self) -> float:
        """Share of N:M blocks kept fully dense now (MaxQ's preserve rate; 0 for other methods)."""
        if not get_method(self.method).uses_schedule:
            return 0.0
        return preserve_rate(self.schedule, self.epoch, self.start_epoch, self.end_epoch)

    def set_epoch(self, epoch: int) -> None:
        """Move MaxQ's incremental schedule to ``epoch`` (call it at the start of every epoch).

        A no-op for the mask of other methods; for all methods it starts a new window for
        the sparse-architecture-divergence (SAD) counts in :meth:`report`.
        """
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ConfigError(f"epoch={epoch!r} is invalid: need an integer >= 0")
        self.epoch = epoch
        fraction = self.dense_fraction
        for _, p, _weight in self._parametrized():
            p.set_dense_fraction(fraction)
        self._snapshot_masks()

    def defer_decay(self, on: bool = True) -> None:
        """Add the SR decay (``srste``, ``maxq``) in :meth:`apply_decay` instead of inside backward.

        Needed where one backward is not one optimizer step's gradient: under
        ``torch.amp.GradScaler`` (call ``scaler.unscale_(optimizer)``, then ``apply_decay()``,
        then ``scaler.step``) and with gradient accumulation (``apply_decay()`` once, before
        ``optimizer.step()``). The update is then the same as without either.
        """
        for _, p, _weight in self._parametrized():
            p.defer = on
            p.pending_mask = None

    def apply_decay(self) -> None:
        """Add the deferred SR decay of the last forward to the gradients (see :meth:`defer_decay`)."""
        for _, p, weight in self._parametrized():
            p.apply_decay(weight)

    def _snapshot_masks(self) -> None:
        with torch.no_grad():
            self._sad_reference = {t.name: p.hard_mask(w).clone() for t, p, w in self._parametrized()}

    # -- report -----------------------------------------------------------------------------
    def report(self) -> SparsityReport:
        """Per-layer rows: name, type, shape, eligible, skip reason, zero share and SAD."""
        rows = []
        parametrized = {t.name: (p, w) for t, p, w in self._parametrized()}
        with torch.no_grad():
            for t in self.targets:
                weight = getattr(t.module, t.param_name)  # what the layer computes with now
                sparsity = float((weight == 0).sum()) / weight.numel()
                sad = sad_fraction = None
                if t.name in parametrized:
                    p, original = parametrized[t.name]
                    reference = self._sad_reference.get(t.name)
                    if reference is not None:
                        sad = int((p.hard_mask(original) != reference).sum())
                        sad_fraction = sad / original.numel()
                rows.append(
                    LayerReport(
                        t.name, t.type_name, t.shape, t.eligible, t.reason, t.detail, sparsity, sad, sad_fraction
                    )
                )
        return SparsityReport(str(self.pattern), self.method, self.epoch, self.dense_fraction, tuple(rows))

    # -- state ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Settings and schedule position; the masks are in ``model.state_dict()``."""
        return {
            "format": _STATE_FORMAT,
            "pattern": str(self.pattern),
            "method": self.method,
            "schedule": self.schedule,
            "start_epoch": self.start_epoch,
            "end_epoch": self.end_epoch,
            "permute": self.config.permute,
            "epoch": self.epoch,
            "layers": list(self.sparse_layers),
            "options": dict(self.options),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the schedule position saved by :meth:`state_dict` after checking it fits."""
        if not isinstance(state, Mapping) or state.get("format") != _STATE_FORMAT:
            raise SparsityStateError(
                "sparsifier state is not from Sparsifier.state_dict() (format 1); save sp.state_dict() beside the model"
            )
        mine = self.state_dict()
        theirs = dict(state)
        if state.get("method") == self.method and isinstance(state.get("options"), Mapping):
            # saved as given or as the method's full options: compare what they mean
            theirs["options"] = asdict(get_method(self.method).make_config(state["options"]))
        theirs.setdefault("permute", False)  # saved before permutation existed
        for key in ("pattern", "method", "schedule", "start_epoch", "end_epoch", "permute", "layers", "options"):
            if theirs.get(key) != mine[key]:
                shown = "differ" if key == "layers" else f"{theirs.get(key)!r} vs {mine[key]!r}"
                raise SparsityStateError(
                    f"sparsifier state does not match this model: {key} {shown}; "
                    "call sparsify() with the settings the checkpoint was made with"
                )
        self.set_epoch(state["epoch"])

    def __repr__(self) -> str:
        return (
            f"Sparsifier(method={self.method!r}, pattern='{self.pattern}', epoch={self.epoch}, "
            f"layers={len(self.sparse_layers)})"
        )


def sparsify(
    model: nn.Module,
    pattern: str | tuple[int, int] = SparsityConfig.pattern,
    method: str = SparsityConfig.method,
    schedule: str = SparsityConfig.schedule,
    start_epoch: int = SparsityConfig.start_epoch,
    end_epoch: int = SparsityConfig.end_epoch,
    include: object = SparsityConfig.include,
    exclude: object = SparsityConfig.exclude,
    *,
    options: Mapping[str, Any] | None = None,
    config: SparsityConfig | None = None,
    permute: bool = SparsityConfig.permute,
    example_inputs: Any = None,
) -> Sparsifier:
    """Make ``model``'s eligible layers N:M sparse with ``method``, in place.

    Args:
        model: any ``nn.Module``; its Linear, Conv1d/2d/3d (grouped too) and packed
            MultiheadAttention projections are candidates, grouped along the input dimension.
        pattern: ``"N:M"`` (or ``(n, m)``), ``0 < n < m <= 32``. Patterns that do not imply
            2:4 (e.g. 4:8) work for research but are not hardware-accelerated (warning).
        method: ``maxq``, ``srste``, ``ste``, ``asp`` or ``dense`` (docs/design/methods.md).
        schedule, start_epoch, end_epoch: MaxQ's incremental schedule: the share of dense
            blocks falls from 1 at ``start_epoch`` to 0 at ``end_epoch`` (``linear``,
            ``cubic``, ``cos``, ``exp``); ``0, 0`` means fully N:M from the first step.
        include: glob pattern(s) on module names to restrict the candidates.
        exclude: glob pattern(s) to keep dense; ``"auto"`` keeps the first and the last
            weighted layer dense; ``()`` sparsifies them too.
        options: method options, e.g. ``{"decay": 1e-4}`` for srste/maxq or ``{"tau": 2e-2}``.
        config: all of the above as one :class:`SparsityConfig` (a recipe's ``sparsity``
            section); when given, the other arguments are not used.
        permute: before the first mask, reorder each sparse layer's input channels, and the
            producing layer's outputs, so that the mask keeps more magnitude
            (:mod:`nmdeploy.sparsity.permute`); the report is ``Sparsifier.permutation``.
        example_inputs: a batch (a tensor or a tuple of the model's inputs), needed by
            ``permute`` to trace the model and to check its outputs are unchanged.

    Returns:
        A :class:`Sparsifier`; call ``set_epoch(epoch)`` at the start of every epoch.
    """
    if config is None:
        nm = parse_pattern(pattern)
        chosen = get_method(method).make_config(options)  # only the options this method takes
        config = from_arguments(
            SparsityConfig,
            pattern=str(nm),
            method=method,
            schedule=schedule,
            start_epoch=start_epoch,
            end_epoch=end_epoch,
            include=normalise_patterns(include, "include") if include is not None else None,
            exclude=exclude if exclude == "auto" else normalise_patterns(exclude, "exclude"),
            permute=permute,
            **asdict(chosen),
        )
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if config.end_epoch is None:
        raise ConfigError(
            "sparsity end_epoch is null, which only a recipe resolves (a quarter of finetune.epochs); give the "
            "epoch, or config.with_end_for(epochs)"
        )
    nm = parse_pattern(config.pattern)
    spec = get_method(config.method)
    already = [n for n, mod in model.named_modules() if _has_nm_parametrization(mod)]
    if already:
        raise SparsityStateError(
            f"model is already sparsified (layer {already[0]!r}); call nmdeploy.finalize(model) "
            "first, or load the checkpoint into a fresh model"
        )
    targets = select_layers(model, nm.m, config.include, config.exclude)
    check_selection(targets, str(nm))
    if not nm.hardware_2_4:
        warnings.warn(
            f"pattern {nm} does not imply 2:4, so sparse tensor cores cannot accelerate it; "
            "use 2:4, 1:4, 2:8, 1:16 or 2:16 for deployment",
            NotAcceleratedWarning,
            stacklevel=2,
        )
    permutation = _permute(model, targets, nm, config, example_inputs) if config.permute else None
    options = config.method_options()
    for target in targets:
        if not target.eligible:
            continue
        weight = getattr(target.module, target.param_name)
        parametrization = spec.factory(nm.n, nm.m, weight, options)
        if parametrization is not None:
            parametrization.train(model.training)
            parametrize.register_parametrization(target.module, target.param_name, parametrization, unsafe=True)
    if spec.rebuilds_masks:
        attach_batching(model)
    sp = Sparsifier(model, config, targets)
    sp.permutation = permutation
    sp.set_epoch(0)
    return sp


def _permute(
    model: nn.Module, targets: list[LayerTarget], nm: Pattern, config: SparsityConfig, example_inputs: Any
) -> PermutationReport:
    """Channel permutation of the eligible layers, on the model as it is (before any mask)."""
    from nmdeploy.sparsity.permute import permute_channels

    if example_inputs is None:
        raise ConfigError(
            "sparsity.permute needs example inputs to trace the model: pass example_inputs=(a batch of its inputs) "
            "to sparsify(), or permute=False"
        )
    inputs = (example_inputs,) if isinstance(example_inputs, torch.Tensor) else tuple(example_inputs)
    device = next(model.parameters()).device
    inputs = tuple(t.to(device) if isinstance(t, torch.Tensor) else t for t in inputs)
    layers = [(t.name, getattr(t.module, t.param_name)) for t in targets if t.eligible]
    return permute_channels(model, layers, nm.n, nm.m, inputs)


def _has_nm_parametrization(module: nn.Module) -> bool:
    return parametrize.is_parametrized(module) and any(
        nm_parametrization(module, name) is not None for name in module.parametrizations
    )


def _unparametrize(module: nn.Module, param_name: str, weight: torch.Tensor) -> None:
    """Put the original Parameter back, holding ``weight``, without touching any class object.

    ``parametrize.remove_parametrizations`` deletes the property from the module's class, and
    a deep copy of a parametrized module shares that class: finalizing a copy (as export does)
    would break the original. Here the module gets a class of its own instead.
    """
    original = module.parametrizations[param_name].original
    original.copy_(weight)
    del module.parametrizations[param_name]
    parametrized_cls = module.__class__
    if len(module.parametrizations) == 0:
        delattr(module, "parametrizations")
        module.__class__ = parametrized_cls.__bases__[0]
    else:  # other tensors stay parametrized: same class minus this tensor's property
        namespace = {k: v for k, v in parametrized_cls.__dict__.items() if k != param_name}
        module.__class__ = type(parametrized_cls.__name__, parametrized_cls.__bases__, namespace)
    module.register_parameter(param_name, original)


def finalize(model: nn.Module) -> nn.Module:
    """Fold every nmdeploy mask into a plain weight with exact zeros; returns ``model``.

    MaxQ multipliers are folded in (docs/design/methods.md §3.8); the layers become ordinary modules with
    their original parameter objects. Nothing is changed unless every layer can be folded:
    a MaxQ layer mid-schedule (dense blocks left) raises :class:`SparsityStateError`.
    """
    work = []
    for name, module in model.named_modules():
        if not parametrize.is_parametrized(module):
            continue
        for param_name in list(module.parametrizations):
            p = nm_parametrization(module, param_name)
            if p is None:
                continue
            if len(module.parametrizations[param_name]) != 1:
                raise SparsityStateError(
                    f"layer {name!r} stacks other parametrizations on {param_name}; remove them before finalize()"
                )
            work.append((name, module, param_name, p))
    folded = []
    with torch.no_grad():
        for name, module, param_name, p in work:  # compute everything first: all or nothing
            original = module.parametrizations[param_name].original
            try:
                folded.append(p.fold(original))
            except SparsityStateError as exc:
                raise SparsityStateError(f"layer {name!r}: {exc}") from None
        for (_name, module, param_name, _p), weight in zip(work, folded):
            _unparametrize(module, param_name, weight)
    detach_batching(model)
    return model

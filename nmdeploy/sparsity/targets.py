"""Which layers get sparsified, and why the others do not.

A type table maps layer types (``isinstance``, so subclasses count) to the parameter that is
masked; groups always run along that parameter's dim 1. Every weighted layer that is left
dense carries one reason code (docs/design/methods.md §1.3):

``unsupported_type``  not Linear, Conv1d/2d/3d or MultiheadAttention's packed in_proj_weight
``excluded``          auto-excluded first/last weighted layer, an exclude pattern, or not included
``depthwise``         grouped conv with one input channel per group
``not_divisible``     group-axis length (in_features or in_channels/groups) is not a multiple of m
``shared``            the parameter is also used by an earlier layer (tied weights)
"""

from __future__ import annotations

import fnmatch
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from torch import nn

from nmdeploy.errors import ConfigError, LayerSelectionError

__all__ = ["LayerTarget", "REASONS", "check_selection", "normalise_patterns", "select_layers", "unmatched_patterns"]

REASONS = ("unsupported_type", "excluded", "depthwise", "not_divisible", "shared")

# (layer type, name of the masked parameter). Order matters only for readability.
_TYPE_TABLE: tuple[tuple[type[nn.Module], str], ...] = (
    (nn.Linear, "weight"),
    (nn.Conv1d, "weight"),
    (nn.Conv2d, "weight"),
    (nn.Conv3d, "weight"),
    (nn.MultiheadAttention, "in_proj_weight"),
)


@dataclass(frozen=True)
class LayerTarget:
    """One weighted layer: where its weight is, and whether (or why not) it is sparsified."""

    name: str
    type_name: str
    param_name: str
    shape: tuple[int, ...]
    reason: str | None = None
    detail: str = ""
    module: nn.Module = field(default=None, compare=False, repr=False)  # type: ignore[assignment]

    @property
    def eligible(self) -> bool:
        return self.reason is None

    @property
    def qualified_param(self) -> str:
        return f"{self.name}.{self.param_name}" if self.name else self.param_name


def normalise_patterns(value: object, what: str) -> tuple[str, ...]:
    """Accept None, one glob pattern or a sequence of them; return a tuple of strings."""
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, Iterable) and all(isinstance(v, str) for v in value):
        return tuple(value)  # type: ignore[arg-type]
    raise ConfigError(f"{what}={value!r} is invalid: pass a name pattern such as 'layer1.*' or a list of them")


def _weighted_param(module: nn.Module) -> tuple[str, nn.Parameter] | None:
    """The parameter a layer would be masked on, or its first >= 2-D parameter if unsupported."""
    for layer_type, param_name in _TYPE_TABLE:
        if isinstance(module, layer_type):
            param = getattr(module, param_name, None)
            if isinstance(param, nn.Parameter) and param.dim() >= 2:
                return param_name, param
    for param_name, param in module.named_parameters(recurse=False):
        if param.dim() >= 2:
            return param_name, param
    return None


def _is_supported(module: nn.Module, param_name: str) -> bool:
    return any(isinstance(module, t) and p == param_name for t, p in _TYPE_TABLE)


def _dense_reason(module: nn.Module, shape: Sequence[int], m: int) -> tuple[str, str] | None:
    groups = getattr(module, "groups", 1)
    if groups > 1 and shape[1] == 1:
        return "depthwise", f"groups={groups}: one input channel per group, nothing to group"
    if shape[1] % m != 0:
        axis = "in_features" if isinstance(module, nn.Linear) else "input channels per group"
        return "not_divisible", f"{axis} = {shape[1]} is not a multiple of m={m}"
    return None


def _match(name: str, patterns: Sequence[str]) -> str | None:
    return next((p for p in patterns if fnmatch.fnmatchcase(name, p)), None)


def unmatched_patterns(names: Sequence[str], include: object, exclude: object) -> list[tuple[str, str]]:
    """(``"include"`` or ``"exclude"``, pattern) for every glob that matches none of ``names`` (``auto`` aside)."""
    found = []
    for what, value in (("include", include), ("exclude", exclude)):
        for pattern in normalise_patterns(value, what):
            if pattern != "auto" and not any(fnmatch.fnmatchcase(n, pattern) for n in names):
                found.append((what, pattern))
    return found


def check_selection(targets: Sequence[LayerTarget], pattern: str) -> None:
    """Raise :class:`LayerSelectionError`, listing every layer and why it stays dense, when none is eligible."""
    if any(t.eligible for t in targets):
        return
    if not targets:
        raise LayerSelectionError(
            f"no layer of the model can be made {pattern} sparse: the model has no weighted layer (Linear, "
            "Conv1d/2d/3d, MultiheadAttention); give a model that has one"
        )
    listing = "; ".join(f"{t.name or '(model)'} {t.type_name}{list(t.shape)}: {t.reason} ({t.detail})" for t in targets)
    raise LayerSelectionError(
        f"no layer of the model can be made {pattern} sparse: {listing}; "
        "fix: pass exclude=() to include the first/last layer or change include/exclude or the pattern"
    )


def select_layers(model: nn.Module, m: int, include: object = None, exclude: object = "auto") -> list[LayerTarget]:
    """List every weighted layer of ``model`` (registration order) with its skip reason, if any.

    ``include``: glob patterns on qualified module names; None means every layer.
    ``exclude``: glob patterns; ``"auto"`` (alone or in the list) excludes the first and the
    last weighted layer, the stem and the classifier, as the papers keep them dense.
    """
    include_patterns = normalise_patterns(include, "include")
    exclude_patterns = normalise_patterns(exclude, "exclude")
    auto = "auto" in exclude_patterns
    exclude_patterns = tuple(p for p in exclude_patterns if p != "auto")

    weighted = [(name, mod, *found) for name, mod in model.named_modules() if (found := _weighted_param(mod))]
    first_last = {weighted[0][0], weighted[-1][0]} if auto and weighted else set()
    for what, pattern in unmatched_patterns([w[0] for w in weighted], include_patterns, exclude_patterns):
        warnings.warn(f"{what} pattern {pattern!r} matches no weighted layer of the model", stacklevel=3)

    targets: list[LayerTarget] = []
    seen: set[int] = set()
    for name, module, param_name, param in weighted:
        shape = tuple(param.shape)
        reason: tuple[str, str] | None = None
        if not _is_supported(module, param_name):
            reason = "unsupported_type", f"{type(module).__name__}.{param_name} is not a supported layer weight"
        elif id(param) in seen:
            reason = "shared", "weight is tied to an earlier layer's"
        elif name in first_last:
            which = "first" if name == weighted[0][0] else "last"
            reason = "excluded", f"auto: {which} weighted layer stays dense"
        elif (pattern := _match(name, exclude_patterns)) is not None:
            reason = "excluded", f"matches exclude pattern {pattern!r}"
        elif include_patterns and _match(name, include_patterns) is None:
            reason = "excluded", "matches no include pattern"
        else:
            reason = _dense_reason(module, shape, m)
        seen.add(id(param))
        code, detail = reason if reason else (None, "")
        targets.append(LayerTarget(name, type(module).__name__, param_name, shape, code, detail, module))
    return targets

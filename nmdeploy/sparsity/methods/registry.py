"""The method registry: name -> what the method is (options dataclass, layer factory, needs).

Standard library only, so method names are known without importing torch (the CLI lists
them in ``--help``). The built-in methods are registered by importing their module the
first time one of them is asked for; a plug-in registers its own with :func:`register`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from nmdeploy.config import build_config
from nmdeploy.errors import ConfigError

__all__ = ["BUILTIN_METHODS", "MethodSpec", "register", "get_method", "method_names"]

# factory(n, m, weight, config) -> NMParametrization, or None for a layer left untouched
Factory = Callable[..., Any]

# Built-in method -> the module that registers it. Order is the order users see in help and errors.
BUILTIN_METHODS: Mapping[str, str] = {
    "maxq": "nmdeploy.sparsity.methods.maxq",
    "srste": "nmdeploy.sparsity.methods.srste",
    "ste": "nmdeploy.sparsity.methods.srste",
    "asp": "nmdeploy.sparsity.methods.asp",
    "dense": "nmdeploy.sparsity.methods.dense",
}


@dataclass(frozen=True)
class MethodSpec:
    """Everything the sparsifier needs to know about a method, declared once where the method is.

    ``config_class``: its options (a frozen dataclass); ``factory``: builds one layer's
    parametrization; ``uses_schedule``: it follows MaxQ's incremental schedule (the dense
    share per epoch), so a build must end the schedule before the last epoch;
    ``rebuilds_masks``: masks are recomputed from the weights in every forward, so they are
    built in one batched pass at the start of the model's forward; ``makes_mask``: the method
    masks its layers at all (channel permutation has nothing to improve otherwise).
    """

    name: str
    config_class: type
    factory: Factory
    uses_schedule: bool = False
    rebuilds_masks: bool = False
    makes_mask: bool = True  # False: layers are left as they are (``dense``), so nothing to permute for

    @property
    def option_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in fields(self.config_class))

    def make_config(self, options: Mapping[str, Any] | None) -> Any:
        return build_config(self.config_class, options, f"options of method {self.name!r}")


_REGISTRY: dict[str, MethodSpec] = {}


def register(
    name: str,
    config_class: type,
    uses_schedule: bool = False,
    rebuilds_masks: bool = False,
    makes_mask: bool = True,
) -> Callable[[Factory], Factory]:
    """Decorator: make ``factory`` the way to build method ``name``'s parametrizations."""

    def decorate(factory: Factory) -> Factory:
        _REGISTRY[name] = MethodSpec(name, config_class, factory, uses_schedule, rebuilds_masks, makes_mask)
        return factory

    return decorate


def method_names() -> tuple[str, ...]:
    """Every method's name: the built-in ones first, then those plug-ins registered."""
    return (*BUILTIN_METHODS, *(name for name in _REGISTRY if name not in BUILTIN_METHODS))


def get_method(name: object) -> MethodSpec:
    if isinstance(name, str) and name not in _REGISTRY and name in BUILTIN_METHODS:
        importlib.import_module(BUILTIN_METHODS[name])
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ConfigError(f"unknown sparsity method {name!r}; choose one of: {', '.join(method_names())}")
    return _REGISTRY[name]

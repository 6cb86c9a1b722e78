"""The method registry: name -> (options dataclass, factory of the per-layer parametrization)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from nmdeploy.config import build_config
from nmdeploy.errors import ConfigError

__all__ = ["MethodSpec", "register", "get_method", "method_names"]

# factory(n, m, weight, config) -> NMParametrization, or None for a layer left untouched
Factory = Callable[..., Any]


@dataclass(frozen=True)
class MethodSpec:
    name: str
    config_class: type
    factory: Factory
    uses_schedule: bool = False
    rebuilds_masks: bool = False  # masks recomputed from the weights in every forward

    def make_config(self, options: Mapping[str, Any] | None) -> Any:
        return build_config(self.config_class, options, f"options of method {self.name!r}")


_REGISTRY: dict[str, MethodSpec] = {}


def register(
    name: str, config_class: type, uses_schedule: bool = False, rebuilds_masks: bool = False
) -> Callable[[Factory], Factory]:
    """Decorator: make ``factory`` the way to build method ``name``'s parametrizations."""

    def decorate(factory: Factory) -> Factory:
        _REGISTRY[name] = MethodSpec(name, config_class, factory, uses_schedule, rebuilds_masks)
        return factory

    return decorate


def method_names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def get_method(name: object) -> MethodSpec:
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ConfigError(f"unknown sparsity method {name!r}; choose one of: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]

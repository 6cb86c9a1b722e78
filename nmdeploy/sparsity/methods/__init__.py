"""Sparsification methods, each registered by name (see ``registry.py``): ``maxq``, ``srste``,
``ste``, ``asp`` and ``dense``. Names resolve lazily: listing the methods imports no torch."""

from __future__ import annotations

from nmdeploy._lazy import lazy_getattr

_LAZY = {
    "BUILTIN_METHODS": "nmdeploy.sparsity.methods.registry",
    "MethodSpec": "nmdeploy.sparsity.methods.registry",
    "get_method": "nmdeploy.sparsity.methods.registry",
    "method_names": "nmdeploy.sparsity.methods.registry",
    "register": "nmdeploy.sparsity.methods.registry",
    "NMParametrization": "nmdeploy.sparsity.methods.base",
}

__all__ = list(_LAZY)
__getattr__ = lazy_getattr("nmdeploy.sparsity.methods", _LAZY, globals())

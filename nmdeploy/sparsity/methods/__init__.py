"""Sparsification methods, each registered by name (see ``registry.py``).

Importing this package registers ``maxq``, ``srste``, ``ste``, ``asp`` and ``dense``.
"""

# Import order is the order users see in help and error messages.
from nmdeploy.sparsity.methods import maxq, srste, asp, dense  # noqa: F401,I001  (registration)
from nmdeploy.sparsity.methods.base import NMParametrization
from nmdeploy.sparsity.methods.registry import MethodSpec, get_method, method_names

__all__ = ["MethodSpec", "NMParametrization", "get_method", "method_names"]

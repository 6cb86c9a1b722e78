"""N:M sparsity: masks, layer selection, methods (maxq, srste, ste, asp, dense), schedules.

Names resolve lazily: ``nmdeploy.sparsity.config`` (and so the command line's ``--help``)
imports no torch.
"""

from __future__ import annotations

from nmdeploy._lazy import lazy_getattr

_LAZY = {
    "REASONS": "nmdeploy.sparsity.targets",
    "SCHEDULES": "nmdeploy.sparsity.schedule",
    "LayerReport": "nmdeploy.sparsity.report",
    "LayerTarget": "nmdeploy.sparsity.targets",
    "NotAcceleratedWarning": "nmdeploy.errors",
    "Pattern": "nmdeploy.sparsity.pattern",
    "PermutationReport": "nmdeploy.sparsity.permute",
    "find_permutation": "nmdeploy.sparsity.permute",
    "kept_magnitude": "nmdeploy.sparsity.permute",
    "permute_channels": "nmdeploy.sparsity.permute",
    "Sparsifier": "nmdeploy.sparsity.api",
    "SparsityConfig": "nmdeploy.sparsity.config",
    "SparsityReport": "nmdeploy.sparsity.report",
    "finalize": "nmdeploy.sparsity.api",
    "implies_2_4": "nmdeploy.sparsity.pattern",
    "is_nm_sparse": "nmdeploy.sparsity.nm",
    "maxq_mask": "nmdeploy.sparsity.nm",
    "method_names": "nmdeploy.sparsity.methods.registry",
    "nm_mask": "nmdeploy.sparsity.nm",
    "parse_pattern": "nmdeploy.sparsity.pattern",
    "preserve_rate": "nmdeploy.sparsity.schedule",
    "select_layers": "nmdeploy.sparsity.targets",
    "soft_nm_mask": "nmdeploy.sparsity.nm",
    "sparsify": "nmdeploy.sparsity.api",
}

__all__ = sorted(_LAZY)
__getattr__ = lazy_getattr("nmdeploy.sparsity", _LAZY, globals())


def __dir__() -> list[str]:
    return __all__

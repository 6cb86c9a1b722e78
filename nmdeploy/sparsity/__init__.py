"""N:M sparsity: masks, layer selection, methods (maxq, srste, ste, asp, dense), schedules."""

from nmdeploy.errors import NotAcceleratedWarning
from nmdeploy.sparsity.api import Sparsifier, finalize, sparsify
from nmdeploy.sparsity.methods import method_names
from nmdeploy.sparsity.nm import is_nm_sparse, maxq_mask, nm_mask, soft_nm_mask
from nmdeploy.sparsity.pattern import Pattern, implies_2_4, parse_pattern
from nmdeploy.sparsity.report import LayerReport, SparsityReport
from nmdeploy.sparsity.schedule import SCHEDULES, preserve_rate
from nmdeploy.sparsity.targets import REASONS, LayerTarget, select_layers

__all__ = [
    "REASONS",
    "SCHEDULES",
    "LayerReport",
    "LayerTarget",
    "NotAcceleratedWarning",
    "Pattern",
    "Sparsifier",
    "SparsityReport",
    "finalize",
    "implies_2_4",
    "is_nm_sparse",
    "maxq_mask",
    "method_names",
    "nm_mask",
    "parse_pattern",
    "preserve_rate",
    "select_layers",
    "soft_nm_mask",
    "sparsify",
]

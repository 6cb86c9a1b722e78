"""Data sources as plain numpy arrays: built-in example sets, ``.npz`` files, plug-ins.

Names resolve lazily: reading a recipe (``DataConfig``) imports no numpy.
"""

from __future__ import annotations

from nmdeploy._lazy import lazy_getattr

_LAZY = {
    "ArrayData": "nmdeploy.data.sources",
    "BUILTIN_DATA": "nmdeploy.data.sources",
    "DataConfig": "nmdeploy.data.config",
    "load_data": "nmdeploy.data.sources",
}

__all__ = list(_LAZY)
__getattr__ = lazy_getattr("nmdeploy.data", _LAZY, globals())

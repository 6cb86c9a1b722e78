"""Data sources read on demand: built-in example sets, ``.npz`` files, image folders, plug-ins.

Names resolve lazily: reading a recipe (``DataConfig``) imports no numpy, and the loaders
(:mod:`nmdeploy.data.loader`) are the only part that imports torch.
"""

from __future__ import annotations

from nmdeploy._lazy import lazy_getattr

_LAZY = {
    "ArrayData": "nmdeploy.data.source",
    "BUILTIN_DATA": "nmdeploy.data.sources",
    "DataConfig": "nmdeploy.data.config",
    "ImageFolderSource": "nmdeploy.data.images",
    "Source": "nmdeploy.data.source",
    "Stream": "nmdeploy.data.source",
    "load_data": "nmdeploy.data.sources",
    "open_data": "nmdeploy.data.sources",
}

__all__ = list(_LAZY)
__getattr__ = lazy_getattr("nmdeploy.data", _LAZY, globals())

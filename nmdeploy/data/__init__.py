"""Data sources as plain numpy arrays: built-in example sets, ``.npz`` files, plug-ins."""

from nmdeploy.data.sources import BUILTIN_DATA, ArrayData, load_data

__all__ = ["ArrayData", "BUILTIN_DATA", "load_data"]

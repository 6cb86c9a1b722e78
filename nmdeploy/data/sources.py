"""Resolve a data SPEC into arrays that calibration, evaluation and training can share.

A SPEC is one of

* a built-in example name, optionally with a split: ``fashion-mnist``, ``fashion-mnist:test``;
* a path to an ``.npz``: inputs under ``x`` (one input) or under the model's input names,
  optional integer labels under ``y`` (a calibration set written by ``nmdeploy calibrate`` is
  such a file);
* ``package.module:callable``: called with the split, it returns ``x``, ``(x, y)`` or a dict
  of arrays (``y`` = labels, the rest = inputs).

Everything stays numpy so that the ONNX-side stages never import torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nmdeploy._imports import import_target
from nmdeploy.errors import InputError

__all__ = ["ArrayData", "BUILTIN_DATA", "load_data", "split_spec"]

# Built-in example name -> "module:callable(split) -> (x, y)"; the examples live in the checkout.
BUILTIN_DATA = {"fashion-mnist": "examples.fashion_mnist.data:load"}
_PREPROCESSING = {"fashion-mnist": "examples.fashion_mnist.data:PREPROCESSING"}
_LABELS = "y"


@dataclass(frozen=True)
class ArrayData:
    """Model inputs (name -> array with samples along dim 0), optional labels, provenance."""

    inputs: Mapping[str, np.ndarray]
    labels: np.ndarray | None
    source: str
    split: str = ""
    preprocessing: str = ""

    def __post_init__(self) -> None:
        if not self.inputs:
            raise InputError(f"data {self.source!r} holds no input arrays; store inputs under 'x' or the model's input names")
        counts = {name: (a.shape[0] if a.ndim else 0) for name, a in self.inputs.items()}
        if self.labels is not None:
            counts[_LABELS] = self.labels.shape[0] if self.labels.ndim else 0
        if len(set(counts.values())) > 1:
            raise InputError(f"data {self.source!r}: arrays disagree on the sample count {counts}; give every array the same dim 0")

    def __len__(self) -> int:
        return next(iter(self.inputs.values())).shape[0]

    def take(self, index: np.ndarray) -> ArrayData:
        """The samples at ``index`` (a new ArrayData with the same provenance)."""
        labels = None if self.labels is None else self.labels[index]
        return ArrayData({k: v[index] for k, v in self.inputs.items()}, labels, self.source, self.split, self.preprocessing)


def split_spec(spec: str, default_split: str) -> tuple[str, str]:
    """``"fashion-mnist:test"`` -> ("fashion-mnist", "test"); a bare name gets ``default_split``."""
    name, sep, split = spec.partition(":")
    if name in BUILTIN_DATA:
        return name, (split if sep else default_split)
    return spec, default_split


def _from_npz(path: Path, spec: str) -> ArrayData:
    try:
        with np.load(path, allow_pickle=False) as npz:  # no pickles: an .npz must never run code
            arrays = {key: npz[key] for key in npz.files}
    except Exception as exc:
        raise InputError(f"{path} is not a readable .npz of arrays ({type(exc).__name__}); save with numpy.savez") from None
    labels = arrays.pop(_LABELS, None)
    return ArrayData(arrays, labels, str(path), "", "")


def _from_result(result: Any, spec: str, split: str) -> ArrayData:
    labels = None
    if isinstance(result, tuple) and len(result) == 2:
        result, labels = result
    if isinstance(result, Mapping):
        result = dict(result)
        labels = result.pop(_LABELS, labels)
        inputs = {str(k): np.asarray(v) for k, v in result.items()}
    else:
        inputs = {"x": np.asarray(result)}
    return ArrayData(inputs, None if labels is None else np.asarray(labels), spec, split, "")


def load_data(spec: str, default_split: str = "test") -> ArrayData:
    """Load ``spec`` (see the module docstring) as arrays; ``default_split`` when it names none."""
    if not spec:
        raise InputError("empty data spec; give a built-in name (fashion-mnist), an .npz path or module:callable")
    name, split = split_spec(spec, default_split)
    if name in BUILTIN_DATA:
        data = _from_result(import_target(BUILTIN_DATA[name], spec, "data")(split), name, split)
        preprocessing = import_target(_PREPROCESSING[name], spec, "data") if name in _PREPROCESSING else ""
        return ArrayData(data.inputs, data.labels, name, split, preprocessing)
    path = Path(spec)
    if path.suffix == ".npz" or path.exists():
        if not path.is_file():
            raise InputError(f"{path}: no such data file; give an .npz path, a built-in name ({', '.join(BUILTIN_DATA)}) or module:callable")
        return _from_npz(path, spec)
    if ":" not in spec:
        raise InputError(
            f"data spec {spec!r} is neither a file, a built-in ({', '.join(BUILTIN_DATA)}) nor package.module:callable"
        )
    return _from_result(import_target(spec, spec, "data")(default_split), spec, default_split)

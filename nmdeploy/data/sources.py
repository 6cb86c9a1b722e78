"""Resolve a data SPEC into arrays that calibration, evaluation and training can share.

A SPEC is one of

* a built-in example name, optionally with a split: ``fashion-mnist``, ``fashion-mnist:test``;
* a path to an ``.npz``: inputs under ``x`` (one input) or under the model's input names,
  optional integer labels under ``y`` (a calibration set written by ``nmdeploy calibrate`` is
  such a file);
* an ImageFolder-style directory: one sub-folder per class (sorted names = label order) of
  image files; when it has a sub-folder named after the split (``train/``, ``test/``,
  ``val/``) that one is read;
* ``package.module:callable``: called with the split, it returns ``x``, ``(x, y)``, a dict
  of arrays (``y`` = labels, the rest = inputs), a map-style dataset of ``(input, label)``
  pairs, or a ``(train_dataset, val_dataset)`` pair (the split picks one).

Everything stays numpy so that the ONNX-side stages never import torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nmdeploy._imports import call_target, import_target
from nmdeploy.errors import InputError, describe

__all__ = ["ArrayData", "BUILTIN_DATA", "load_data", "split_spec"]

# Built-in example name -> "module:callable(split) -> (x, y)"; the examples live in the checkout.
BUILTIN_DATA = {"fashion-mnist": "nmdeploy.examples.fashion_mnist.data:load"}
_PREPROCESSING = {"fashion-mnist": "nmdeploy.examples.fashion_mnist.data:PREPROCESSING"}
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
            raise InputError(
                f"data {self.source!r} holds no input arrays; store inputs under 'x' or the model's input names"
            )
        arrays = {**self.inputs, **({_LABELS: self.labels} if self.labels is not None else {})}
        for name, array in arrays.items():
            if np.ndim(array) == 0:
                raise InputError(
                    f"data {self.source!r}: array {name!r} is a single value; every array needs its samples along dim 0"
                )
        counts = {name: array.shape[0] for name, array in arrays.items()}
        if len(set(counts.values())) > 1:
            raise InputError(
                f"data {self.source!r}: arrays disagree on the sample count {counts}; give every array the same dim 0"
            )

    def __len__(self) -> int:
        return next(iter(self.inputs.values())).shape[0]

    @property
    def has_class_labels(self) -> bool:
        """Labels that name classes: one integer per sample."""
        return self.labels is not None and self.labels.ndim == 1 and np.issubdtype(self.labels.dtype, np.integer)

    def class_labels(self) -> np.ndarray:
        """The labels as classes, or the one-line error saying why they cannot be (where classes are counted)."""
        if self.labels is None:
            raise InputError(f"data {self.source!r} has no labels (y); give integer class labels")
        if not self.has_class_labels:
            raise InputError(
                f"data {self.source!r}: labels 'y' are {self.labels.dtype} of shape {list(self.labels.shape)}; classes "
                "need one integer label per sample (store y as a 1-D int64 array)"
            )
        return self.labels

    def take(self, index: np.ndarray) -> ArrayData:
        """The samples at ``index`` (a new ArrayData with the same provenance)."""
        labels = None if self.labels is None else self.labels[index]
        return ArrayData(
            {k: v[index] for k, v in self.inputs.items()}, labels, self.source, self.split, self.preprocessing
        )


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
        raise InputError(
            f"{path} is not a readable .npz of arrays ({type(exc).__name__}); save with numpy.savez"
        ) from None
    labels = arrays.pop(_LABELS, None)
    return ArrayData(arrays, labels, str(path), "", "")


def _is_dataset(value: Any) -> bool:
    """A map-style dataset (torch Dataset or alike), not an array or a container of arrays."""
    return (
        hasattr(value, "__getitem__")
        and hasattr(value, "__len__")
        and not hasattr(value, "shape")
        and not isinstance(value, (list, tuple, Mapping, str, bytes))
    )


def _from_dataset(dataset: Any, spec: str) -> tuple[np.ndarray, np.ndarray]:
    """Stack a dataset of (input, label) pairs into arrays (the trainer keeps data in memory)."""
    inputs, labels = [], []
    try:
        size = len(dataset)
    except Exception as exc:  # the user's dataset class
        raise InputError(f"data {spec!r}: len() of its dataset raised {describe(exc)}") from exc
    for i in range(size):
        try:
            item = dataset[i]
        except Exception as exc:
            raise InputError(f"data {spec!r}: dataset item {i} raised {describe(exc)}") from exc
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise InputError(f"data {spec!r}: dataset item {i} is not an (input, label) pair")
        inputs.append(np.asarray(item[0]))
        labels.append(np.asarray(item[1]))
    if not inputs:
        raise InputError(f"data {spec!r}: the dataset is empty")
    if len({a.shape for a in inputs}) > 1:
        raise InputError(f"data {spec!r}: dataset items have different shapes; resize them to one shape")
    return np.stack(inputs), np.stack(labels)


_SPLIT_ALIASES = {"test": ("test", "val"), "val": ("val", "test"), "train": ("train",)}
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def _from_image_folder(path: Path, split: str) -> ArrayData:
    """Read ``path/<class>/*.png``-style folders into float32 NCHW arrays scaled to [0, 1].

    Hand-written instead of torchvision's ImageFolder because torchvision is not a dependency
    here (it breaks the pinned torch build); Pillow comes with matplotlib.
    """
    from PIL import Image

    for name in _SPLIT_ALIASES.get(split, (split,)):
        if (path / name).is_dir():
            path = path / name
            break
    classes = sorted(p.name for p in path.iterdir() if p.is_dir())
    if not classes:
        raise InputError(f"{path} has no class sub-folders; an ImageFolder is DIR/<class>/<image files>")
    images, labels = [], []
    for label, cls in enumerate(classes):
        for file in sorted((path / cls).iterdir()):
            if file.suffix.lower() not in _IMAGE_SUFFIXES:
                continue
            try:
                with Image.open(file) as img:
                    array = np.asarray(
                        img.convert("L" if img.mode in ("1", "L", "I;16", "I") else "RGB"), dtype=np.float32
                    )
            except OSError as exc:
                raise InputError(f"{file} is not a readable image ({exc}); remove it from the folder") from None
            images.append(array[None] if array.ndim == 2 else array.transpose(2, 0, 1))
            labels.append(label)
    if not images:
        raise InputError(f"{path} holds no image files ({', '.join(_IMAGE_SUFFIXES)}) in its class folders")
    shapes = {a.shape for a in images}
    if len(shapes) > 1:
        raise InputError(f"{path}: images have different sizes/channels {sorted(shapes)[:3]}; resize them to one size")
    x = np.stack(images) / np.float32(255.0)
    return ArrayData(
        {"x": x}, np.asarray(labels, dtype=np.int64), str(path), split, f"image / 255 (classes: {', '.join(classes)})"
    )


def _from_result(result: Any, spec: str, split: str) -> ArrayData:
    labels = None
    if isinstance(result, tuple) and len(result) == 2 and _is_dataset(result[0]) and _is_dataset(result[1]):
        result = result[0] if split == "train" else result[1]  # (train_dataset, val_dataset)
    if _is_dataset(result):
        result = _from_dataset(result, spec)
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
        data = _from_result(call_target(BUILTIN_DATA[name], spec, "data", split), name, split)
        preprocessing = import_target(_PREPROCESSING[name], spec, "data") if name in _PREPROCESSING else ""
        return ArrayData(data.inputs, data.labels, name, split, preprocessing)
    path = Path(spec)
    if path.is_dir():
        return _from_image_folder(path, split)
    if path.suffix == ".npz" or path.exists():
        if not path.is_file():
            raise InputError(
                f"{path}: no such data file; give an .npz path, a built-in name ({', '.join(BUILTIN_DATA)}) or module:callable"
            )
        return _from_npz(path, spec)
    if ":" not in spec:
        raise InputError(
            f"data spec {spec!r} is neither a file, a built-in ({', '.join(BUILTIN_DATA)}) nor package.module:callable"
        )
    return _from_result(call_target(spec, spec, "data", default_split), spec, default_split)

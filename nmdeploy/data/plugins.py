"""A plug-in's datasets used as they are: map-style datasets indexed on demand, iterables streamed.

``package.module:callable`` may return a map-style dataset (``__len__`` and ``__getitem__``,
a ``torch.utils.data.Dataset`` or alike) or an ``IterableDataset`` of ``(input, label)``
pairs; nothing is stacked into memory. ``input`` is an array (one model input), a tuple of
arrays (several, in the model's argument order) or a dict (input name -> array); ``label``
an integer, an array, or None for unlabelled data. An item may also be one dict of inputs
holding its label under ``label`` (``labels``, ``y``), as a Hugging Face dataset's rows do. Every call into the dataset goes through
one guard, so whatever it raises is one line naming the data spec and the item.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

import numpy as np

from nmdeploy.data.source import Sample, Source
from nmdeploy.errors import InputError, NMDeployError, describe

__all__ = ["DatasetSource", "as_sample", "is_dataset", "is_stream"]


def is_dataset(value: Any) -> bool:
    """A map-style dataset (torch Dataset or alike), not an array or a container of arrays."""
    return (
        hasattr(value, "__getitem__")
        and hasattr(value, "__len__")
        and not hasattr(value, "shape")
        and not isinstance(value, (list, tuple, Mapping, str, bytes))
    )


def is_stream(value: Any) -> bool:
    """An iterable dataset: a torch ``IterableDataset``, or anything iterable again and again with no ``__getitem__``."""
    torch = sys.modules.get("torch")  # a torch dataset means torch is imported already
    if torch is not None and isinstance(value, torch.utils.data.IterableDataset):
        return True
    return (
        hasattr(value, "__iter__")
        and not hasattr(value, "__getitem__")
        and not hasattr(value, "__next__")  # an iterator is one pass only
        and not isinstance(value, (str, bytes, Mapping, set, frozenset))
    )


def _array(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor, maybe on a GPU or with a gradient
        value = value.detach().cpu().numpy()
    return np.asarray(value)


_LABEL_KEYS = ("label", "labels", "y")  # the label of a dict item (Hugging Face datasets: "label")


def _pair(item: Any) -> tuple[Any, Any] | None:
    """``(inputs, label)`` of an item: a pair, or a dict whose ``label`` (``labels``, ``y``) key is the label."""
    if isinstance(item, (tuple, list)) and len(item) == 2:
        return item[0], item[1]
    if isinstance(item, Mapping):
        key = next((k for k in _LABEL_KEYS if k in item), None)
        inputs = {k: v for k, v in item.items() if k != key}
        return (inputs, item[key] if key else None) if inputs else None
    return None


def as_sample(item: Any, source: str, where: str, names: tuple[str, ...] | None = None) -> Sample:
    """An ``(input, label)`` item as a sample: a tuple of arrays (``names`` orders a dict) and the label."""
    pair = _pair(item)
    if pair is None:
        raise InputError(
            f"data {source!r}: dataset {where} is not an (input, label) pair nor a dict with a 'label' key"
        )
    inputs, label = pair
    if isinstance(inputs, Mapping):
        keys = names if names is not None else tuple(str(k) for k in inputs)
        try:
            arrays = tuple(_array(inputs[k]) for k in keys)
        except KeyError as exc:
            raise InputError(
                f"data {source!r}: dataset {where} has no input {exc}; give every sample the same inputs"
            ) from None
    elif isinstance(inputs, (tuple, list)):
        arrays = tuple(_array(a) for a in inputs)
    else:
        arrays = (_array(inputs),)
    for array in arrays:
        if array.dtype == object:
            raise InputError(f"data {source!r}: dataset {where} holds a {type(inputs).__name__} that is not an array")
    return arrays, None if label is None else _array(label)


def input_names(item: Any) -> tuple[str, ...]:
    """The input names an item implies: a dict's keys, else ``x`` (one input) or ``x0, x1, ...``."""
    pair = _pair(item)
    inputs = None if pair is None else pair[0]
    if isinstance(inputs, Mapping):
        return tuple(str(k) for k in inputs)
    if isinstance(inputs, (tuple, list)):
        return tuple(f"x{i}" for i in range(len(inputs)))
    return ("x",)


class DatasetSource(Source):
    """A plug-in's map-style dataset, indexed one item at a time (in worker processes when there are any)."""

    def __init__(self, dataset: Any, source: str, split: str) -> None:
        self.dataset = dataset
        self.source = source
        self.split = split
        try:
            self._length = len(dataset)
        except NMDeployError:
            raise
        except Exception as exc:  # the user's dataset class
            raise InputError(f"data {source!r}: len() of its dataset raised {describe(exc)}") from exc
        if self._length == 0:
            raise InputError(f"data {source!r}: the dataset is empty")
        item = self._item(0)  # read once, for the input names
        first = _pair(item)
        self.names = input_names(item)
        self._keyed = first is not None and isinstance(first[0], Mapping)

    def __len__(self) -> int:
        return self._length

    def _item(self, index: int) -> Any:
        try:
            return self.dataset[index]
        except NMDeployError:
            raise
        except Exception as exc:
            raise InputError(f"data {self.source!r}: dataset item {index} raised {describe(exc)}") from exc

    def read(self, index: int, rng: np.random.Generator | None = None) -> Sample:
        return as_sample(self._item(index), self.source, f"item {index}", self.names if self._keyed else None)

    def known_labels(self) -> np.ndarray | None:
        """A ``targets`` (torchvision's name) or ``labels`` attribute of one integer per item, if the dataset has one."""
        for attribute in ("targets", "labels"):
            values = getattr(self.dataset, attribute, None)
            if values is None or callable(values):
                continue
            try:
                labels = _array(values)
            except Exception:
                continue
            if labels.shape == (self._length,) and np.issubdtype(labels.dtype, np.integer):
                return labels.astype(np.int64, copy=False)
        return None

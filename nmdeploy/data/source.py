"""What every data source is: samples read on demand by index, and the arrays a few of them make.

A :class:`Source` is a sized, indexable set of ``(inputs, label)`` samples that reads a
sample only when asked: an image folder decodes one file per item, a plug-in's dataset is
indexed as it is. :class:`ArrayData` is the source whose samples are already in memory
(an ``.npz``, the built-in example, a calibration set, a batch read from any other source).

Everything here is numpy: the loaders in :mod:`nmdeploy.data.loader` put sources behind
torch's ``DataLoader``, and the ONNX-side stages read them in chunks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nmdeploy.errors import InputError

__all__ = ["ArrayData", "BadSample", "ListedItems", "Sample", "Source", "SubsetSource", "Stream"]

LABELS = "y"
Sample = tuple[tuple[np.ndarray, ...], Any]  # (one array per model input, the label or None)


class BadSample(InputError):
    """A sample that cannot be read at all (a corrupt image file): ``data.skip_bad`` may skip it."""


class Source:
    """A sized data source of ``(inputs, label)`` samples, read on demand.

    Subclasses set ``source`` (what to call it in messages), ``names`` (the model inputs, in
    order) and implement ``__len__`` and :meth:`read`. ``random`` says :meth:`read` uses its
    ``rng`` (augmentation); ``in_memory`` that reading costs nothing worth a worker process;
    ``dynamic_dims`` that batches differ in those dims (text, padded per batch) and ``pad_values``
    what fills them when batches are joined.
    """

    source: str = ""
    split: str = ""
    preprocessing: str = ""
    names: tuple[str, ...] = ("x",)
    random: bool = False
    in_memory: bool = False
    skip_bad: bool = False
    dynamic_dims: tuple[int, ...] = ()  # array dims whose size varies from batch to batch (a text's tokens)
    pad_values: Mapping[str, int] = {}  # what pads those dims when batches are joined, per input (default 0)

    def __len__(self) -> int:
        raise NotImplementedError

    def read(self, index: int, rng: np.random.Generator | None = None) -> Sample:
        """Sample ``index``: a tuple of arrays (one per input) and its label (None: unlabelled)."""
        raise NotImplementedError

    def known_labels(self) -> np.ndarray | None:
        """Every sample's class label, when the source knows them without reading samples (else None)."""
        return None

    def item_name(self, index: int) -> str:
        """How an error names sample ``index`` (an image folder names the file)."""
        return f"item {index}"

    def read_batch(
        self,
        indices: Sequence[int],
        rngs: Sequence[np.random.Generator] | None = None,
        expect: Sequence[tuple[tuple[int, ...], str]] | None = None,
    ) -> ArrayData:
        """Samples ``indices`` stacked into arrays; every one must have the shapes and dtype kinds
        of ``expect`` (default: of the first one read). A :class:`BadSample` is skipped, and
        listed in ``skipped``, when ``skip_bad`` is set."""
        columns: list[list[np.ndarray]] | None = None
        labels: list[Any] = []
        kept, skipped = [], []
        for k, index in enumerate(indices):
            try:
                inputs, label = self.read(int(index), None if rngs is None else rngs[k])
            except BadSample:
                if not self.skip_bad:
                    raise
                skipped.append(int(index))
                continue
            arrays = [np.asarray(a) for a in inputs]
            if expect is None:
                expect = signature(arrays)
            self._check_sample(int(index), arrays, expect)
            if columns is None:
                columns = [[] for _ in arrays]
            for column, array in zip(columns, arrays):
                column.append(array)
            labels.append(label)
            kept.append(int(index))
        if columns is None:  # nothing left: keep the shapes for an empty batch
            shapes = expect or [((), "f")] * len(self.names)
            empty = {
                n: np.zeros((0, *s), np.float32 if k == "f" else np.int64) for n, (s, k) in zip(self.names, shapes)
            }
            return ArrayData(empty, None, self.source, self.split, self.preprocessing, tuple(skipped), ())
        stacked = {name: np.stack(column) for name, column in zip(self.names, columns)}
        label_array = None
        if any(label is not None for label in labels):
            if any(label is None for label in labels):
                raise InputError(f"data {self.source!r}: some samples have a label and some do not; label all of them")
            label_array = np.stack([np.asarray(label) for label in labels])
        return ArrayData(stacked, label_array, self.source, self.split, self.preprocessing, tuple(skipped), tuple(kept))

    def _check_sample(
        self, index: int, arrays: list[np.ndarray], expect: Sequence[tuple[tuple[int, ...], str]]
    ) -> None:
        if len(arrays) != len(expect):
            raise InputError(
                f"data {self.source!r}: {self.item_name(index)} has {len(arrays)} inputs but the others have "
                f"{len(expect)}; give every sample the same inputs"
            )
        for name, array, (shape, kind) in zip(self.names, arrays, expect):
            if array.shape != tuple(shape) or _kind(array) != kind:
                what = "" if len(arrays) == 1 else f" input {name!r}"
                raise InputError(
                    f"data {self.source!r}: {self.item_name(index)}{what} has shape {list(array.shape)} "
                    f"({array.dtype}) but samples must be {list(shape)} ({_KINDS[kind]}); give every sample that shape"
                )

    def take(self, indices: Sequence[int] | np.ndarray) -> ArrayData:
        """The samples at ``indices`` (without augmentation), as arrays."""
        return self.read_batch([int(i) for i in np.asarray(indices).reshape(-1)])

    def subset(self, indices: np.ndarray) -> Source:
        """The samples at ``indices``, in that order, read from this source on demand."""
        return SubsetSource(self, np.asarray(indices, dtype=np.int64))


_KINDS = {"f": "float", "i": "integer", "b": "bool"}


def _kind(array: np.ndarray) -> str:
    return "f" if array.dtype.kind in "fc" else "b" if array.dtype.kind == "b" else "i"


def signature(arrays: Sequence[np.ndarray]) -> list[tuple[tuple[int, ...], str]]:
    """(shape, dtype kind) of each array of a sample: what every other sample must match."""
    return [(tuple(a.shape), _kind(a)) for a in arrays]


class SubsetSource(Source):
    """Some samples of another source (a recipe's ``train_subset``), read from it on demand."""

    def __init__(self, base: Source, indices: np.ndarray) -> None:
        self.base = base
        self.indices = indices
        self.source, self.split, self.preprocessing = base.source, base.split, base.preprocessing
        self.names, self.random, self.in_memory, self.skip_bad = base.names, base.random, base.in_memory, base.skip_bad
        self.dynamic_dims, self.pad_values = base.dynamic_dims, base.pad_values

    def __len__(self) -> int:
        return len(self.indices)

    def read(self, index: int, rng: np.random.Generator | None = None) -> Sample:
        return self.base.read(int(self.indices[index]), rng)

    def read_batch(self, indices, rngs=None, expect=None) -> ArrayData:
        data = self.base.read_batch([int(self.indices[i]) for i in indices], rngs, expect)
        position = {int(self.indices[i]): int(i) for i in indices}  # back to this subset's numbering
        return data.renumbered(position)

    def known_labels(self) -> np.ndarray | None:
        labels = self.base.known_labels()
        return None if labels is None else labels[self.indices]

    def item_name(self, index: int) -> str:
        return self.base.item_name(int(self.indices[index]))


@dataclass(frozen=True)
class ArrayData(Source):
    """Model inputs (name -> array with samples along dim 0), optional labels, provenance.

    ``skipped`` and ``index``: when the arrays are a batch read from another source, the
    indices it skipped (unreadable) and those the rows came from.
    """

    inputs: Mapping[str, np.ndarray]
    labels: np.ndarray | None
    source: str
    split: str = ""
    preprocessing: str = ""
    skipped: tuple[int, ...] = field(default=(), compare=False)
    index: tuple[int, ...] = field(default=(), compare=False)

    in_memory = True

    def __post_init__(self) -> None:
        if not self.inputs:
            raise InputError(
                f"data {self.source!r} holds no input arrays; store inputs under 'x' or the model's input names"
            )
        arrays = {**self.inputs, **({LABELS: self.labels} if self.labels is not None else {})}
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

    @property
    def names(self) -> tuple[str, ...]:  # type: ignore[override]
        return tuple(self.inputs)

    def __len__(self) -> int:
        return next(iter(self.inputs.values())).shape[0]

    def read(self, index: int, rng: np.random.Generator | None = None) -> Sample:
        label = None if self.labels is None else self.labels[index]
        return tuple(a[index] for a in self.inputs.values()), label

    def read_batch(self, indices, rngs=None, expect=None) -> ArrayData:
        """Rows ``indices`` by fancy indexing: one copy per array, no per-sample work."""
        index = np.asarray(indices, dtype=np.int64)
        data = self.take(index)
        return ArrayData(
            data.inputs, data.labels, self.source, self.split, self.preprocessing, (), tuple(index.tolist())
        )

    def known_labels(self) -> np.ndarray | None:
        return self.labels if self.has_class_labels else None

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

    def take(self, index: Sequence[int] | np.ndarray) -> ArrayData:
        """The samples at ``index`` (a new ArrayData with the same provenance)."""
        index = np.asarray(index, dtype=np.int64)
        labels = None if self.labels is None else self.labels[index]
        return ArrayData(
            {k: v[index] for k, v in self.inputs.items()}, labels, self.source, self.split, self.preprocessing
        )

    def renumbered(self, position: Mapping[int, int]) -> ArrayData:
        """The same rows, with ``skipped`` and ``index`` in another numbering (a subset's)."""
        return ArrayData(
            self.inputs,
            self.labels,
            self.source,
            self.split,
            self.preprocessing,
            tuple(position[i] for i in self.skipped),
            tuple(position[i] for i in self.index),
        )

    def subset(self, indices: np.ndarray) -> ArrayData:
        return self.take(indices)  # in memory already: the copy is the subset


class Stream:
    """A source with no length and no index: a plug-in's ``IterableDataset`` (or alike), read in order.

    ``iterate()`` yields ``(inputs, label)`` samples as :meth:`Source.read` returns them.
    """

    random = False
    in_memory = False
    skip_bad = False
    dynamic_dims: tuple[int, ...] = ()
    pad_values: Mapping[str, int] = {}

    def __init__(self, iterable: Any, source: str, split: str, names: tuple[str, ...] = ("x",)) -> None:
        self.iterable = iterable
        self.source = source
        self.split = split
        self.preprocessing = ""
        self.names = names

    def item_name(self, index: int) -> str:
        return f"stream item {index}"

    def batch_reader(self) -> ListedItems:
        """The source that turns one batch of this stream's items into arrays (set its ``items`` and
        ``positions``, then :meth:`Source.read_batch`, with its checks)."""
        return ListedItems(self)

    def iterate(self):
        from nmdeploy.data.plugins import as_sample

        for position, item in enumerate(self.iterable):
            yield as_sample(item, self.source, f"stream item {position}")


class ListedItems(Source):
    """Samples already read from a stream, as a source (for :meth:`Source.read_batch`'s checks)."""

    def __init__(self, stream: Stream) -> None:
        self.source, self.split, self.names = stream.source, stream.split, stream.names
        self.dynamic_dims, self.pad_values = stream.dynamic_dims, stream.pad_values
        self.items: list[Any] = []
        self.positions: list[int] = []

    def __len__(self) -> int:
        return len(self.items)

    def read(self, index: int, rng: Any = None) -> Any:
        return self.items[index]

    def item_name(self, index: int) -> str:
        return f"stream item {self.positions[index]}"

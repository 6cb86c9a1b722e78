"""Resolve a data SPEC into a source that calibration, evaluation and training read on demand.

A SPEC is one of

* a built-in example name, optionally with a split: ``fashion-mnist``, ``fashion-mnist:test``;
* a path to an ``.npz``: inputs under ``x`` (one input) or under the model's input names,
  optional integer labels under ``y`` (a calibration set written by ``nmdeploy calibrate`` is
  such a file);
* an ImageFolder-style directory: one sub-folder per class (sorted names = label order) of
  image files of any size and mode, decoded one per item (:mod:`nmdeploy.data.images`); when
  it has a sub-folder named after the split (``train/``, ``test/``, ``val/``) that one is read;
* a ``.jsonl`` or ``.csv`` of texts (``text``, optional ``text_pair`` and integer ``label``),
  tokenised per batch with ``data.tokenizer`` (:mod:`nmdeploy.data.text`);
* ``package.module:callable``: called with the split, it returns ``x``, ``(x, y)``, a dict
  of arrays (``y`` = labels, the rest = inputs), a dict with ``text`` (a list of strings) and
  optional ``text_pair`` / ``label`` (read like a text file), a map-style dataset of ``(input, label)``
  pairs, an ``IterableDataset`` of them, or a ``(train, val)`` pair of datasets (the split
  picks one). Datasets are used as they are (:mod:`nmdeploy.data.plugins`), never stacked.

Arrays (``.npz``, the built-in example, a plug-in's arrays) are wrapped without a copy;
everything else reads a sample only when it is asked for one.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from nmdeploy._imports import call_target, import_target
from nmdeploy.data.config import DataConfig
from nmdeploy.data.plugins import DatasetSource, is_dataset, is_stream
from nmdeploy.data.source import LABELS, ArrayData, Source, Stream
from nmdeploy.errors import InputError

__all__ = ["BUILTIN_DATA", "load_data", "open_data", "split_spec"]

# Built-in example name -> "module:callable(split) -> (x, y)"; the examples ship in the package.
BUILTIN_DATA = {"fashion-mnist": "nmdeploy.examples.fashion_mnist.data:load"}
_PREPROCESSING = {"fashion-mnist": "nmdeploy.examples.fashion_mnist.data:PREPROCESSING"}


def split_spec(spec: str, default_split: str) -> tuple[str, str]:
    """``"fashion-mnist:test"`` -> ("fashion-mnist", "test"); a bare name gets ``default_split``."""
    name, sep, split = spec.partition(":")
    if name in BUILTIN_DATA:
        return name, (split if sep else default_split)
    return spec, default_split


def _from_npz(path: Path) -> ArrayData:
    try:
        with np.load(path, allow_pickle=False) as npz:  # no pickles: an .npz must never run code
            arrays = {key: npz[key] for key in npz.files}
    except Exception as exc:
        raise InputError(
            f"{path} is not a readable .npz of arrays ({type(exc).__name__}); save with numpy.savez"
        ) from None
    labels = arrays.pop(LABELS, None)
    return ArrayData(arrays, labels, str(path), "", "")


def _from_result(result: Any, spec: str, split: str, config: DataConfig | None = None) -> Source | Stream:
    labels = None
    if isinstance(result, tuple) and len(result) == 2 and all(is_dataset(r) or is_stream(r) for r in result):
        result = result[0] if split == "train" else result[1]  # (train_dataset, val_dataset)
    if is_dataset(result):
        return DatasetSource(result, spec, split)
    if is_stream(result):
        from nmdeploy.data.streams import as_stream

        return as_stream(result, spec, split, config)
    if isinstance(result, tuple) and len(result) == 2:
        result, labels = result
    if isinstance(result, Mapping) and "text" in result:
        from nmdeploy.data.text import text_from_mapping

        return text_from_mapping(result, spec, split, config)
    if isinstance(result, Mapping):
        result = dict(result)
        labels = result.pop(LABELS, labels)
        inputs = {str(k): np.asarray(v) for k, v in result.items()}
    else:
        inputs = {"x": np.asarray(result)}
    if any(a.dtype == object for a in inputs.values()):
        raise InputError(
            f"data {spec!r} returned {type(result).__name__}, which is not arrays, a dataset or an IterableDataset"
        )
    return ArrayData(inputs, None if labels is None else np.asarray(labels), spec, split, "")


def open_data(
    spec: str, default_split: str = "test", config: DataConfig | None = None, train: bool = False
) -> Source | Stream:
    """The source ``spec`` names (see the module docstring); ``default_split`` when it names none.

    ``config`` says how image folders are decoded (size, channels, normalisation, bad files);
    ``train`` picks the training transform (augmented when ``config.augment``).
    """
    if not spec:
        raise InputError("empty data spec; give a built-in name (fashion-mnist), an .npz path or module:callable")
    name, split = split_spec(spec, default_split)
    if name in BUILTIN_DATA:
        data = _from_result(call_target(BUILTIN_DATA[name], spec, "data", split), name, split)
        assert isinstance(data, ArrayData)
        preprocessing = import_target(_PREPROCESSING[name], spec, "data") if name in _PREPROCESSING else ""
        return ArrayData(data.inputs, data.labels, name, split, preprocessing)
    path = Path(spec)
    if path.is_dir():
        from nmdeploy.data.images import ImageFolderSource

        return ImageFolderSource(path, split, config, train)
    if path.suffix in (".jsonl", ".csv"):
        from nmdeploy.data.text import open_text

        return open_text(path, split, config)
    if path.suffix == ".npz" or path.exists():
        if not path.is_file():
            raise InputError(
                f"{path}: no such data file; give an .npz path, a built-in name ({', '.join(BUILTIN_DATA)}) or module:callable"
            )
        return _from_npz(path)
    if ":" not in spec:
        raise InputError(
            f"data spec {spec!r} is neither a file, a built-in ({', '.join(BUILTIN_DATA)}) nor package.module:callable"
        )
    return _from_result(call_target(spec, spec, "data", default_split), spec, default_split, config)


def load_data(spec: str, default_split: str = "test", config: DataConfig | None = None) -> ArrayData:
    """``spec`` read whole into arrays: for what is small by nature (a calibration set, a test's data)."""
    data = open_data(spec, default_split, config)
    if isinstance(data, ArrayData):
        return data
    if isinstance(data, Stream):
        from nmdeploy.data.streams import read_stream

        return read_stream(data, None)
    return data.take(np.arange(len(data)))

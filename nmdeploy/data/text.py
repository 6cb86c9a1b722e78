"""Text data: ``.jsonl`` and ``.csv`` files (or a plug-in's ``{"text": [...]}``) tokenised per batch.

Each record has ``text``, optionally ``text_pair`` (the second segment of a pair task) and
``label`` (an integer class, for classification; absent for distillation). The texts are
held in memory (a million sentences are a few hundred MB); tokens are made only when a batch
is read, with the tokenizer of the model folder (``data.tokenizer``; the ``hf:`` model's own by
default), cut to ``data.max_length`` tokens and padded to the longest text *of the batch*, so a
batch of short sentences costs what short sentences cost. Inputs are named as the tokenizer
names them and ordered ``input_ids, attention_mask, token_type_ids`` (the ``hf:`` models'
argument order).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nmdeploy._hf import find_folder, load_tokenizer
from nmdeploy.data.config import DataConfig
from nmdeploy.data.source import ArrayData, ListedItems, Sample, Source, Stream
from nmdeploy.errors import InputError

__all__ = ["TEXT_SUFFIXES", "TextSource", "TextStream", "read_records"]

TEXT_SUFFIXES = (".jsonl", ".csv")
_ORDER = ("input_ids", "attention_mask", "token_type_ids")


def read_records(path: Path) -> tuple[list[str], list[str] | None, np.ndarray | None]:
    """(texts, pairs or None, integer labels or None) of a ``.jsonl`` or ``.csv`` file, checked line by line."""
    rows: list[tuple[int, Mapping[str, Any]]] = []
    try:
        if path.suffix == ".jsonl":
            with path.open(encoding="utf-8") as f:
                for number, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                    except ValueError:
                        raise InputError(f"{path} line {number} is not JSON; write one JSON object per line") from None
                    if not isinstance(row, Mapping):
                        raise InputError(
                            f'{path} line {number} is not a JSON object; write {{"text": ..., "label": ...}}'
                        )
                    rows.append((number, row))
        else:
            with path.open(encoding="utf-8", newline="") as f:
                reader = csv.DictReader(f)
                if "text" not in (reader.fieldnames or []):
                    raise InputError(
                        f"{path} has no 'text' column (its header is {', '.join(reader.fieldnames or []) or 'empty'}); "
                        "give a header line with text[,text_pair][,label]"
                    )
                rows = [(number, row) for number, row in enumerate(reader, 2)]
    except UnicodeDecodeError:
        raise InputError(f"{path} is not UTF-8 text; save it as UTF-8") from None
    return _columns(path, rows)


def _columns(
    where: Any, rows: Sequence[tuple[int, Mapping[str, Any]]], unit: str = "line"
) -> tuple[list[str], list[str] | None, np.ndarray | None]:
    if not rows:
        raise InputError(f"{where} holds no texts; give at least one record with a 'text'")
    texts, pairs, labels = [], [], []
    has_pair = "text_pair" in rows[0][1]
    has_label = "label" in rows[0][1] and rows[0][1]["label"] not in (None, "")
    for number, row in rows:
        text = row.get("text")
        if not isinstance(text, str):
            raise InputError(f"{where} {unit} {number} has no 'text' string; give every record a text")
        texts.append(text)
        if has_pair:
            pair = row.get("text_pair")
            if not isinstance(pair, str):
                raise InputError(f"{where} {unit} {number} has no 'text_pair' string, though the first record has one")
            pairs.append(pair)
        label = row.get("label")
        if has_label != (label not in (None, "")):
            raise InputError(f"{where} {unit} {number}: some records have a label and some do not; label all of them")
        if has_label:
            labels.append(_integer(label, f"{where} {unit}", number))
    return texts, pairs if has_pair else None, np.asarray(labels, dtype=np.int64) if has_label else None


def _integer(value: Any, where: Any, number: int) -> int:
    if isinstance(value, bool):
        value = None
    elif isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    elif isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int):
        raise InputError(
            f"{where} {number} has label {value!r}, not an integer class; give labels 0, 1, ... "
            "(map class names to numbers first)"
        )
    return value


def tokenizer_folder(config: DataConfig, what: str) -> Path:
    if not config.tokenizer:
        raise InputError(
            f"{what} is text and needs a tokenizer: use an hf:PATH model, or set data.tokenizer "
            "(--tokenizer) to the model folder"
        )
    return find_folder(config.tokenizer, "data.tokenizer")  # a tokenizer needs no weights beside it


class TextSource(Source):
    """Texts (and labels) in memory, tokenised a batch at a time."""

    in_memory = True

    def __init__(
        self,
        texts: list[str],
        pairs: list[str] | None,
        labels: np.ndarray | None,
        source: str,
        split: str,
        config: DataConfig,
    ) -> None:
        self.texts, self.pairs, self.labels = texts, pairs, labels
        self.source, self.split = source, split
        self.max_length = config.max_length
        self.tokenizer_path = str(tokenizer_folder(config, f"data {source!r}"))
        self._tokenizer: Any = None
        present = set(self.tokenizer.model_input_names)
        self.names = tuple(n for n in _ORDER if n in present) or ("input_ids",)
        pad = self.tokenizer.pad_token_id
        self.pad_values = {"input_ids": int(pad) if pad is not None else 0}
        self.dynamic_dims = (1,)  # the token axis of every input: padded per batch
        self.preprocessing = f"tokenizer {Path(self.tokenizer_path).name}, max_length {self.max_length}"

    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(Path(self.tokenizer_path))
            if self._tokenizer.pad_token is None:  # GPT-style tokenizers: pad with end-of-text (masked out anyway)
                self._tokenizer.pad_token = self._tokenizer.eos_token or self._tokenizer.unk_token
        return self._tokenizer

    def __getstate__(self) -> dict[str, Any]:  # worker processes load their own tokenizer
        return {**self.__dict__, "_tokenizer": None}

    def __len__(self) -> int:
        return len(self.texts)

    def known_labels(self) -> np.ndarray | None:
        return self.labels

    def item_name(self, index: int) -> str:
        return f"text {index}"

    def encode(self, indices: Sequence[int]) -> dict[str, np.ndarray]:
        """Tokens of the texts at ``indices`` (see :meth:`encode_texts`)."""
        pairs = [self.pairs[i] for i in indices] if self.pairs is not None else None
        return self.encode_texts([self.texts[i] for i in indices], pairs)

    def encode_texts(self, texts: list[str], pairs: list[str] | None) -> dict[str, np.ndarray]:
        """Tokens of ``texts`` (and their ``pairs``): truncated to ``max_length``, padded to the longest of them."""
        encoded = self.tokenizer(
            texts,
            pairs,
            truncation=True,
            max_length=self.max_length,
            padding="longest",
            return_tensors="np",
        )
        return {name: np.asarray(encoded[name], dtype=np.int64) for name in self.names}

    def read(self, index: int, rng: np.random.Generator | None = None) -> Sample:
        arrays = self.encode([index])
        label = None if self.labels is None else self.labels[index]
        return tuple(arrays[name][0] for name in self.names), label

    def read_batch(self, indices, rngs=None, expect=None) -> ArrayData:
        indices = [int(i) for i in indices]
        if not indices:
            empty = {name: np.zeros((0, 1), np.int64) for name in self.names}
            return ArrayData(empty, None, self.source, self.split, self.preprocessing, (), ())
        labels = None if self.labels is None else self.labels[indices]
        return ArrayData(self.encode(indices), labels, self.source, self.split, self.preprocessing, (), tuple(indices))


def open_text(path: Path, split: str, config: DataConfig | None) -> TextSource:
    """The text file ``path`` as a source."""
    if not path.is_file():
        raise InputError(f"{path}: no such text file; give a .jsonl or .csv with a 'text' field")
    texts, pairs, labels = read_records(path)
    return TextSource(texts, pairs, labels, str(path), split, config or DataConfig())


def text_from_mapping(result: Mapping[str, Any], spec: str, split: str, config: DataConfig | None) -> TextSource:
    """A plug-in's ``{"text": [...], "text_pair": [...], "label": [...]}`` as a source."""
    texts = list(result["text"])
    n = len(texts)
    for key in ("text_pair", "label"):
        if key in result and len(result[key]) != n:
            raise InputError(f"data {spec!r}: {key} has {len(result[key])} entries for {n} texts; give one per text")
    rows = [(i, {k: result[k][i] for k in ("text", "text_pair", "label") if k in result}) for i in range(n)]
    texts, pairs, labels = _columns(f"data {spec!r}", rows, "record")
    return TextSource(texts, pairs, labels, spec, split, config or DataConfig())


class TextStream(Stream):
    """A plug-in's ``IterableDataset`` of ``{"text": ..., "label": ...}`` records: read in order like any
    stream, tokenised a batch at a time like a text file."""

    def __init__(self, iterable: Any, source: str, split: str, config: DataConfig | None) -> None:
        self.encoder = TextSource([""], None, None, source, split, config or DataConfig())
        super().__init__(iterable, source, split, self.encoder.names)
        self.preprocessing = self.encoder.preprocessing
        self.dynamic_dims, self.pad_values = self.encoder.dynamic_dims, self.encoder.pad_values

    def iterate(self):
        for position, item in enumerate(self.iterable):  # records whole: tokens are made per batch
            if not isinstance(item, Mapping):
                raise InputError(
                    f"data {self.source!r}: stream item {position} is {type(item).__name__}, not a record like the "
                    "first one; yield {'text': ..., 'label': ...} dicts"
                )
            yield item, position

    def batch_reader(self) -> _StreamedText:
        return _StreamedText(self)


class _StreamedText(ListedItems):
    """One batch of a text stream's records, as a source whose ``read_batch`` tokenises them together."""

    def __init__(self, stream: TextStream) -> None:
        super().__init__(stream)
        self.encoder = stream.encoder

    def read_batch(self, indices, rngs=None, expect=None) -> ArrayData:
        rows = [(position + 1, record) for record, position in (self.items[int(i)] for i in indices)]
        texts, pairs, labels = _columns(f"data {self.source!r}", rows, "stream item")
        inputs = self.encoder.encode_texts(texts, pairs)
        index = tuple(int(i) for i in indices)
        return ArrayData(inputs, labels, self.source, self.split, self.encoder.preprocessing, (), index)

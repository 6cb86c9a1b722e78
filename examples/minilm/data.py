"""Text for the MiniLM example: the corpora gensim's wheel ships, tokenised with the model's tokenizer.

Install ``pip install --no-deps gensim==4.4.0``. Its ``test/test_data/`` folder is read directly,
without importing gensim. ``train`` holds the sentences of ``lee_background.cor``: 300 news
documents, about 3,000 sentences. ``test`` holds the 50 paragraphs of ``lee.cor``, which have
human similarity ratings (Lee, Pincombe & Welsh, 2005), plus the 200 movie-review sentences of
``pang_lee_polarity.cor``. The two splits share no text. Every text becomes ``input_ids`` and
``attention_mask``, int64 arrays of shape ``[N, 64]``, padded or cut to 64 tokens.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np

from examples.minilm.model import SEQ_LEN, model_dir
from nmdeploy.errors import InputError

__all__ = ["lee_similarity", "load", "load_with_windows", "texts", "tokenize"]

_INSTALL = "pip install --no-deps gensim==4.4.0"


def _test_data() -> Path:
    spec = importlib.util.find_spec("gensim")
    if spec is None or not spec.submodule_search_locations:
        raise InputError(f"the MiniLM example reads gensim's test corpora; install them: {_INSTALL}")
    return Path(spec.submodule_search_locations[0]) / "test" / "test_data"


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+", text) if len(s.split()) >= 4]


def texts(split: str, windows: int = 0) -> list[str]:
    """The raw texts of ``split`` (train, test); ``windows`` > 1 adds runs of that many consecutive
    sentences to ``train``, so the distillation also sees texts as long as the held-out paragraphs."""
    folder = _test_data()
    if split == "train":
        docs = [_sentences(doc) for doc in (folder / "lee_background.cor").read_text(encoding="utf-8", errors="replace").splitlines()]
        runs = [" ".join(doc[i:i + windows]) for doc in docs for i in range(len(doc) - windows + 1)] if windows > 1 else []
        return [s for doc in docs for s in doc] + runs
    if split in ("test", "val"):
        lee = [line.strip() for line in (folder / "lee.cor").read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
        polarity = [line.split(" ", 1)[1].strip() for line in (folder / "pang_lee_polarity.cor").read_text(encoding="latin-1").splitlines()
                    if " " in line]
        return lee + polarity
    raise InputError(f"the MiniLM example data has no split {split!r}; use 'train' or 'test'")


def tokenize(items: list[str], length: int = SEQ_LEN) -> dict[str, np.ndarray]:
    """WordPiece ids and attention masks, padded or cut to ``length`` (the model's own tokenizer.json)."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model_dir() / "tokenizer.json"))
    tokenizer.enable_truncation(length)
    tokenizer.enable_padding(length=length, pad_id=0, pad_token="[PAD]")
    encoded = tokenizer.encode_batch(items)
    return {"input_ids": np.array([e.ids for e in encoded], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encoded], dtype=np.int64)}


def load(split: str = "train") -> dict[str, np.ndarray]:
    """Data SPEC ``examples.minilm.data:load``: inputs only; the targets come from the dense model."""
    return tokenize(texts(split))


def load_with_windows(split: str = "train") -> dict[str, np.ndarray]:
    """Data SPEC ``examples.minilm.data:load_with_windows``: ``load`` plus 3-sentence runs in ``train``."""
    return tokenize(texts(split, windows=3))


def lee_similarity() -> np.ndarray:
    """The 50x50 human similarity ratings of the ``lee.cor`` paragraphs (upper triangle given)."""
    rows = (_test_data() / "similarities0-1.txt").read_text().split("\n")
    matrix = np.array([[float(v) for v in row.split("\t")] for row in rows if row.strip()], dtype=np.float64)
    return np.triu(matrix) + np.triu(matrix, 1).T

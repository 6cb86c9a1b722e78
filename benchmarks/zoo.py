"""Real-size networks through the whole chain: ResNet-50 (224x224) and BERT-base (128 tokens) from their configs.

Each model is built by ``transformers`` from its default config with random weights (no download),
saved as a local folder and given to ``nmdeploy build`` as ``hf:PATH`` with synthetic data of the
real shape: one-shot ASP 2:4 (``finetune.epochs: 0``) -> export -> verify -> INT8 (512 calibration
samples) -> target bundle. The build runs as a child process; its resident memory (with any
children) is sampled every 50 ms and split by stage at the lines the build prints when a stage
ends, and each stage's wall time is the manifest's. Goals: no stage above 8 GB peak RSS, the chain
within 10 minutes per model on 2 cores, every 2:4 layer verified.

    python -m benchmarks.zoo                   # prints the table
    python -m benchmarks.zoo --write           # also rewrites its section of RESULTS.md
    python -m benchmarks.zoo --only bert-base  # one model
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from benchmarks._results import write_section

STAGES = ("dense", "sparse", "export", "verify", "quantize", "engine")
CALIBRATION = 512
VALIDATION = 64


def _resnet50(folder: Path, small: bool = False) -> dict:
    import transformers

    config = transformers.ResNetConfig(num_labels=1000)  # the defaults are ResNet-50
    if small:  # a smoke run of the benchmark itself
        config = transformers.ResNetConfig(embedding_size=8, hidden_sizes=[16, 32], depths=[1, 1], num_labels=10)
    transformers.ResNetForImageClassification(config).save_pretrained(str(folder / "model"))
    rng = np.random.default_rng(0)
    size = 32 if small else 224
    for name, count in (("train", _count(small)), ("val", _count(small, VALIDATION))):
        x = rng.standard_normal((count, 3, size, size), dtype=np.float32)
        np.savez(folder / f"{name}.npz", x=x, y=rng.integers(0, config.num_labels, count))
    return {
        "model": {"spec": f"hf:{folder / 'model'}", "pretrained": True},
        "data": {"train": str(folder / "train.npz"), "val": str(folder / "val.npz")},
        "sparsity": {"method": "asp", "pattern": "2:4"},
    }


def _bert_base(folder: Path, small: bool = False) -> dict:
    import transformers

    config = transformers.BertConfig(num_labels=2)  # the defaults are BERT-base: 12 x 768, vocabulary 30,522
    if small:
        config = transformers.BertConfig(
            vocab_size=200,
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
            num_labels=2,
        )
    transformers.BertForSequenceClassification(config).save_pretrained(str(folder / "model"))
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words = [f"w{i}" for i in range(config.vocab_size - len(special))]
    tokenizer = transformers.BertTokenizerFast(vocab={w: i for i, w in enumerate(special + words)})
    tokenizer.save_pretrained(str(folder / "model"))
    rng = np.random.default_rng(0)
    for name, count in (("train", _count(small)), ("val", _count(small, VALIDATION))):
        with open(folder / f"{name}.jsonl", "w") as fh:
            for i in range(count):  # 100-200 words: most texts fill the 128 tokens, some are shorter
                text = " ".join(words[j] for j in rng.integers(0, len(words), rng.integers(100, 200)))
                fh.write(json.dumps({"text": text, "label": i % 2}) + "\n")
    return {
        "model": {"spec": f"hf:{folder / 'model'}", "pretrained": True},
        "data": {"train": str(folder / "train.jsonl"), "val": str(folder / "val.jsonl"), "max_length": 128},
        "sparsity": {"method": "asp", "pattern": "2:4", "include": ["bert.encoder.*"], "exclude": []},
    }


MODELS = {"resnet-50": _resnet50, "bert-base": _bert_base}


def _count(small: bool, count: int = CALIBRATION) -> int:
    return 16 if small else count


def _rss_kib(pid: int) -> int:
    """Resident memory of ``pid`` and its descendants (KiB), from /proc."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/status") as fh:
                total += next((int(line.split()[1]) for line in fh if line.startswith("VmRSS:")), 0)
            with open(f"/proc/{p}/task/{p}/children") as fh:
                todo += [int(c) for c in fh.read().split()]
        except (OSError, ValueError):
            continue
    return total


def run(name: str, root: Path, small: bool = False) -> dict:
    folder = root / name
    folder.mkdir()
    began = time.perf_counter()
    recipe = MODELS[name](folder, small)
    made = time.perf_counter() - began
    recipe |= {
        "finetune": {"epochs": 0},
        "quantize": {"count": _count(small), "method": "minmax"},
        "device": "cpu",
    }
    (folder / "recipe.yaml").write_text(json.dumps(recipe))  # JSON is YAML
    out = folder / "out"
    command = [sys.executable, "-m", "nmdeploy", "build", "--recipe", str(folder / "recipe.yaml"), "--out", str(out)]
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    samples: list[tuple[float, int]] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            samples.append((time.perf_counter(), _rss_kib(child.pid)))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    ends: dict[str, float] = {}
    lines = []
    assert child.stdout is not None
    for line in child.stdout:
        lines.append(line.rstrip())
        stage = line.split(":", 1)[0].strip()
        if stage in STAGES and stage not in ends:
            ends[stage] = time.perf_counter()
    code = child.wait()
    done.set()
    sampler.join()
    if code != 0:
        raise SystemExit(f"{name}: nmdeploy build failed ({code}):\n" + "\n".join(lines[-20:]))
    manifest = json.loads((out / "manifest.json").read_text())
    verify = json.loads((out / "verify.json").read_text())
    start = samples[0][0] if samples else 0.0
    rows = []
    for stage in STAGES:
        end = ends.get(stage, float("inf"))
        peak = max((rss for t, rss in samples if start <= t <= end), default=0)
        start = end
        record = manifest["stages"].get(stage, {})
        rows.append({"stage": stage, "seconds": record.get("seconds", 0.0), "peak_rss_mib": peak / 1024})
    required = [layer for layer in verify["layers"] if layer["required"]]
    return {
        "model": name,
        "parameters": _parameters(out / "model.onnx"),
        "setup_seconds": made,
        "stages": rows,
        "total_seconds": sum(r["seconds"] for r in rows),
        "peak_rss_mib": max(r["peak_rss_mib"] for r in rows),
        "nm_layers": len(required),
        "verified": all(layer["ok"] for layer in required),
        "hw_2of4": sum(1 for layer in required if layer["hw_2of4"]),
        "small": sum(1 for layer in required if "small" in (layer.get("note") or "")),
        "dense_layers": len(verify["layers"]) - len(required),
        "onnx_mb": (out / "model.onnx").stat().st_size / 1e6,
        "int8_mb": (out / "model.int8.onnx").stat().st_size / 1e6,
        "int8_kept_nm": manifest["stages"]["quantize"]["metrics"].get("nm_layers"),
    }


def _parameters(path: Path) -> int:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return sum(int(np.prod(t.dims)) for t in model.graph.initializer)


def render(results: list[dict]) -> str:
    lines = [
        "Random weights from each model's default `transformers` config, synthetic data of the real shape, "
        f"{CALIBRATION} calibration samples, {VALIDATION} validation samples, one `nmdeploy build` per model "
        "(one-shot ASP 2:4, `finetune.epochs: 0`), 2 CPU threads. Peak RSS is sampled every 50 ms over the "
        "build process and its children, per stage.",
        "",
        "| model | stage | wall time (s) | peak RSS (MiB) |",
        "|---|---|---|---|",
    ]
    for r in results:
        for row in r["stages"]:
            lines.append(f"| {r['model']} | {row['stage']} | {row['seconds']:.1f} | {row['peak_rss_mib']:.0f} |")
        lines.append(
            f"| **{r['model']}** | **whole chain** | **{r['total_seconds']:.1f}** | **{r['peak_rss_mib']:.0f}** |"
        )
    lines += ["", "| model | ONNX parameters | 2:4 layers verified | 2:4 on TensorRT's axis | dense layers | "
              "INT8 layers kept 2:4 | ONNX / INT8 MB | notes |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in results:
        lines.append(
            f"| {r['model']} | {r['parameters'] / 1e6:.1f} M | {r['nm_layers']} ({'all pass' if r['verified'] else 'FAIL'}) "
            f"| {r['hw_2of4']} | {r['dense_layers']} | {r['int8_kept_nm']} | {r['onnx_mb']:.0f} / {r['int8_mb']:.0f} "
            f"| {r['small']} of {r['nm_layers']} flagged small (under ~256 channels in or out: TensorRT often keeps "
            "dense kernels there) |"
        )
    goals = []
    for r in results:
        within = r["peak_rss_mib"] <= 8192 and r["total_seconds"] <= 600 and r["verified"]
        goals.append(
            f"{r['model']}: peak {r['peak_rss_mib'] / 1024:.1f} GB (goal <= 8), whole chain "
            f"{r['total_seconds'] / 60:.1f} min (goal <= 10), {'every' if r['verified'] else 'NOT every'} 2:4 layer "
            f"verified: {'met' if within else 'missed'}."
        )
    return "\n".join(lines + ["", *goals])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="rewrite this section of benchmarks/RESULTS.md")
    parser.add_argument("--only", help="comma-separated model names: " + ", ".join(MODELS))
    parser.add_argument("--small", action="store_true", help="tiny configs and 16 samples: a smoke run (no --write)")
    args = parser.parse_args(argv)
    names = args.only.split(",") if args.only else list(MODELS)
    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 2))
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            results.append(run(name, Path(tmp), args.small))
            table = Table(title=name)
            for column in ("stage", "seconds", "peak RSS MiB"):
                table.add_column(column)
            for row in results[-1]["stages"]:
                table.add_row(row["stage"], f"{row['seconds']:.1f}", f"{row['peak_rss_mib']:.0f}")
            Console().print(table)
    body = render(results)
    print(body)
    if args.write and not args.small:
        write_section("Real-size networks: ResNet-50 and BERT-base (benchmarks/zoo.py)",
                      body + "\n\nCommand: `python -m benchmarks.zoo --write`")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""INT8 cost on the Fashion-MNIST example: top-1 drop per calibration method, and CPU latency.

The model is the example's FashionResNet (16/32/64 channels), trained dense on the 60k
training images, then fine-tuned MaxQ 2:4 (every eligible layer; stem and classifier stay
dense), exported and quantised with ``nmdeploy.quantize_int8`` on the committed calibration
set ``nmdeploy/examples/fashion_mnist/fashion-mnist-512.npz`` (drawn from the training split). Top-1 is measured
on the 10,000 test images with onnxruntime (CPU) for FP32 and for each INT8 model.

Latency: onnxruntime CPU, FP32 and INT8 sessions timed interleaved in one process (rounds
alternate the two), batch 1 and 64, median of the per-round ratio. The trained models are
cached under ``benchmarks/.cache`` (delete it to retrain). Training here is a plain loop
kept to the benchmark; ``nmdeploy build`` has the full trainer.

    python -m benchmarks.int8_accuracy            # prints the tables
    python -m benchmarks.int8_accuracy --write    # also rewrites its section of RESULTS.md
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from torch import nn

import nmdeploy
from benchmarks._results import write_section
from nmdeploy.data import ArrayData
from nmdeploy.examples.fashion_mnist import CALIBRATION_SET as CALIBRATION
from nmdeploy.examples.fashion_mnist.data import load
from nmdeploy.examples.fashion_mnist.model import FashionResNet
from nmdeploy.quant.evaluate import evaluate_onnx
from nmdeploy.quant.int8 import METHODS, quantize_int8
from nmdeploy.quant.reader import ort_session

ROOT = Path(__file__).resolve().parent
CACHE = ROOT / ".cache"


def _train(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, lr: float, sp=None, progress=None, task=None
) -> None:
    """SGD (momentum 0.9, nesterov), cosine LR per step, batch 128, weight decay off for BN/bias."""
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    rest = [p for n, p in model.named_parameters() if p.ndim <= 1]
    optimizer = torch.optim.SGD(
        [{"params": decay, "weight_decay": 5e-4}, {"params": rest, "weight_decay": 0.0}],
        lr=lr,
        momentum=0.9,
        nesterov=True,
    )
    steps = epochs * math.ceil(len(x) / 128)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
    gen = torch.Generator().manual_seed(0)
    for epoch in range(epochs):
        if sp is not None:
            sp.set_epoch(epoch)
        model.train()
        for idx in torch.randperm(len(x), generator=gen).split(128):
            optimizer.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            optimizer.step()
            schedule.step()
        if progress is not None:
            progress.advance(task)


def trained_models(dense_epochs: int, sparse_epochs: int, cache: Path, subset: int = 0) -> tuple[Path, Path]:
    """(dense ONNX, MaxQ 2:4 ONNX), trained once and cached."""
    cache.mkdir(parents=True, exist_ok=True)
    tag = f"d{dense_epochs}-s{sparse_epochs}" + (f"-n{subset}" if subset else "")
    dense_onnx, sparse_onnx = cache / f"dense-{tag}.onnx", cache / f"maxq24-{tag}.onnx"
    if dense_onnx.exists() and sparse_onnx.exists():
        return dense_onnx, sparse_onnx
    torch.manual_seed(0)
    x, y = (torch.from_numpy(a[:subset] if subset else a) for a in load("train"))
    model = FashionResNet()
    sample = x[:2]
    with Progress(transient=True) as progress:
        task = progress.add_task("dense training", total=dense_epochs)
        _train(model, x, y, dense_epochs, 0.1, progress=progress, task=task)
        nmdeploy.export_onnx(model, sample, dense_onnx)
        sp = nmdeploy.sparsify(model, "2:4", method="maxq", start_epoch=0, end_epoch=max(1, sparse_epochs // 2))
        task = progress.add_task("MaxQ 2:4 fine-tuning", total=sparse_epochs)
        _train(model, x, y, sparse_epochs, 0.02, sp=sp, progress=progress, task=task)
        nmdeploy.export_onnx(model, sample, sparse_onnx)
    return dense_onnx, sparse_onnx


def _latency(paths: list[Path], batch: int, rounds: int, x: np.ndarray) -> list[tuple[float, float]]:
    """Per model: (median ms, median of the per-round ratio to the first model); rounds interleave the models."""
    sessions = [ort_session(str(p)) for p in paths]
    name = sessions[0].get_inputs()[0].name
    feed = {name: x[:batch]}
    for s in sessions:
        for _ in range(5):
            s.run(None, feed)
    reps = max(1, 200 // batch)
    times: list[list[float]] = [[] for _ in sessions]
    for _ in range(rounds):
        for i, s in enumerate(sessions):
            start = time.perf_counter()
            for _ in range(reps):
                s.run(None, feed)
            times[i].append((time.perf_counter() - start) / reps)
    return [(statistics.median(t) * 1e3, statistics.median(b / a for a, b in zip(times[0], t))) for t in times]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dense-epochs", type=int, default=8)
    parser.add_argument("--sparse-epochs", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated calibration methods")
    parser.add_argument("--train-subset", type=int, default=0, help="train on the first N images only (smoke tests)")
    parser.add_argument("--test-subset", type=int, default=0, help="evaluate on the first N test images only")
    parser.add_argument("--cache", type=Path, default=CACHE, help="where trained and quantised models are kept")
    parser.add_argument("--write", action="store_true", help="rewrite this benchmark's section of RESULTS.md")
    args = parser.parse_args(argv)
    console = Console()
    cache = args.cache
    dense_onnx, sparse_onnx = trained_models(args.dense_epochs, args.sparse_epochs, cache, args.train_subset)
    tx, ty = load("test")
    if args.test_subset:
        tx, ty = tx[: args.test_subset], ty[: args.test_subset]
    test = ArrayData({"x": tx}, ty, "fashion-mnist", "test")
    dense_top1 = evaluate_onnx(dense_onnx, test).top1
    rows = []
    int8_paths = {}
    for method in args.methods.split(","):
        out = cache / f"maxq24.{method}.int8.onnx"
        start = time.perf_counter()
        report = quantize_int8(sparse_onnx, out, CALIBRATION, method, eval_data=test)
        seconds = time.perf_counter() - start
        acc = report.accuracy
        rows.append((method, acc.reference_top1, acc.top1, acc.cosine[0].mean, len(report.sparse_layers), seconds))
        int8_paths[method] = out
    sparse_top1 = rows[0][1]
    table = Table(title=f"Fashion-MNIST test top-1 ({len(tx):,} images), onnxruntime CPU")
    for col in ("model", "top-1", "vs FP32 2:4", "cosine to FP32", "2:4 layers kept", "quantise s"):
        table.add_column(col)
    table.add_row("dense FP32", f"{dense_top1:.2%}", "", "", "", "")
    table.add_row("MaxQ 2:4 FP32", f"{sparse_top1:.2%}", "", "", "", "")
    for method, ref, top1, cos, kept, seconds in rows:
        table.add_row(
            f"MaxQ 2:4 INT8 {method}",
            f"{top1:.2%}",
            f"{100 * (top1 - ref):+.2f} pt",
            f"{cos:.6f}",
            str(kept),
            f"{seconds:.1f}",
        )
    console.print(table)
    best = max(rows, key=lambda r: r[2])[0]
    outputs_path = cache / f"maxq24.{best}.outputs.int8.onnx"
    quantize_int8(sparse_onnx, outputs_path, CALIBRATION, best, output_qdq_on_sparse=True, eval_data=test)
    models = [
        ("FP32 2:4", sparse_onnx),
        (f"INT8 {best}", int8_paths[best]),
        (f"INT8 {best}, --output-qdq-on-sparse", outputs_path),
    ]
    lat = Table(title=f"onnxruntime CPU latency, {args.rounds} interleaved rounds (ratio = median of per-round ratios)")
    for col in ("model", "batch 1 ms", "vs FP32", "batch 64 ms", "vs FP32"):
        lat.add_column(col)
    per_batch = [_latency([p for _, p in models], batch, args.rounds, tx) for batch in (1, 64)]
    lat_rows = [(label, *per_batch[0][i], *per_batch[1][i]) for i, (label, _) in enumerate(models)]
    for label, ms1, r1, ms64, r64 in lat_rows:
        lat.add_row(label, f"{ms1:.3f}", f"{r1:.2f}", f"{ms64:.3f}", f"{r64:.2f}")
    console.print(lat)
    if args.write:
        lines = [
            f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, onnxruntime CPU provider. "
            f"Command: `python -m benchmarks.int8_accuracy --dense-epochs {args.dense_epochs} "
            f"--sparse-epochs {args.sparse_epochs} --rounds {args.rounds} --write`.",
            "",
            f"FashionResNet 16/32/64 trained dense {args.dense_epochs} epochs, MaxQ 2:4 fine-tuned {args.sparse_epochs}; "
            "calibration: `nmdeploy/examples/fashion_mnist/fashion-mnist-512.npz` (512 train images, class-balanced); top-1 on the 10,000 test images.",
            "",
            "| model | top-1 | INT8 drop vs FP32 2:4 | cosine to FP32 | 2:4 layers kept | quantise s |",
            "|---|---|---|---|---|---|",
            f"| dense FP32 | {dense_top1:.2%} | | | | |",
            f"| MaxQ 2:4 FP32 | {sparse_top1:.2%} | | | | |",
            *[
                f"| MaxQ 2:4 INT8 {m} | {t:.2%} | {100 * (t - r):+.2f} pt | {c:.6f} | {k} | {s:.1f} |"
                for m, r, t, c, k, s in rows
            ],
            "",
            "`entropy` is onnxruntime's entropy calibrator with 2048 histogram bins for 128 quantized bins (TensorRT's "
            "calibrator sizes; `quantize_static` alone would use 128 for 128, one candidate threshold, i.e. min-max). "
            "It clips activations hardest, which this small model does not tolerate; `percentile` is 99.999.",
            "",
            f"onnxruntime CPU latency, {args.rounds} interleaved rounds (ratio = median of the per-round ratios to FP32):",
            "",
            "| model | batch 1 ms | vs FP32 | batch 64 ms | vs FP32 |",
            "|---|---|---|---|---|",
            *[f"| {label} | {ms1:.3f} | {r1:.2f} | {ms64:.3f} | {r64:.2f} |" for label, ms1, r1, ms64, r64 in lat_rows],
            "",
            "INT8 is slower on onnxruntime's CPU provider: it fuses DequantizeLinear -> Conv -> QuantizeLinear into an "
            "integer QLinearConv only where a Conv's output is quantised too, so with TensorRT's placement (float Conv "
            "outputs) it runs DequantizeLinear + float Conv, paying for the Q/DQ nodes without integer kernels. "
            "This is a statement about onnxruntime on CPU, not about TensorRT, whose Q/DQ fusion is the point of "
            "the placement; the engine stage measures the GPU.",
        ]
        write_section("INT8 accuracy and CPU latency (Fashion-MNIST)", "\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Streaming data: memory flat in the data size, no cost over the in-memory path, JPEG folder throughput.

1. **Memory**: peak RSS of ``nmdeploy finetune`` (a child process, its workers included as the
   largest process) with the synthetic plug-in dataset of 3x64x64 samples at 10,000 and at
   1,000,000 items, ``finetune.steps_per_epoch`` fixed. The ratio should be <= 1.10.
2. **Step throughput**: the built-in example (Fashion-MNIST in memory, fashion-resnet, batch
   128) trained by ``fit`` through the DataLoader vs a loop that indexes the in-memory tensors
   (what the trainer did before), alternated in one process. The ratio should be >= 0.95.
3. **JPEG folder**: decoded + transformed images/s of an ImageNet-like folder (500x375 JPEGs),
   evaluation (resize + centre crop 224) and training (random-resized crop 224 + flip)
   transforms, with 0, 1 and 2 workers.

    python -m benchmarks.streaming            # prints the tables
    python -m benchmarks.streaming --write    # also rewrites its section of RESULTS.md
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from benchmarks._results import write_section

_RSS_CHILD = """
import resource, subprocess, sys
code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, code)
"""


def _recipe(folder: Path, steps: int, batch: int) -> Path:
    recipe = folder / "recipe.yaml"
    recipe.write_text(
        "model: {spec: 'benchmarks.synthetic:model', pretrained: true, input_shape: [1, 3, 64, 64]}\n"
        "data: {train: 'benchmarks.synthetic:data', val: 'benchmarks.synthetic:data'}\n"
        f"finetune: {{epochs: 1, batch_size: {batch}, steps_per_epoch: {steps}, lr: 0.02}}\n"
        "sparsity: {end_epoch: 0}\n"
        "quantize: {enabled: false}\nengine: {enabled: false}\n"
    )
    return recipe


def peak_rss(items: int, steps: int, batch: int, workers: int | None) -> float:
    """Peak RSS (MiB) of one ``nmdeploy finetune`` on ``items`` synthetic samples."""
    with tempfile.TemporaryDirectory() as tmp:
        recipe = _recipe(Path(tmp), steps, batch)
        command = [sys.executable, "-m", "nmdeploy", "-q", "finetune", "--recipe", str(recipe), "--out", f"{tmp}/out"]
        if workers is not None:
            command += ["--set", f"data.workers={workers}"]
        env = {**os.environ, "NMDEPLOY_SYNTHETIC_ITEMS": str(items), "PYTHONPATH": str(Path.cwd())}
        out = subprocess.run([sys.executable, "-c", _RSS_CHILD, *command], env=env, capture_output=True, text=True)
        kib, code = out.stdout.split()
        if int(code):
            raise SystemExit(f"nmdeploy finetune failed on {items} items: {out.stderr.strip()[-400:]}")
        return int(kib) / 1024


def _config(steps: int, batch: int):
    from nmdeploy.train import TrainConfig

    return TrainConfig(epochs=1, batch_size=batch, steps_per_epoch=steps, lr=0.01)


def _in_memory_steps(model, x, y, steps: int, batch: int) -> float:
    """Samples/s of the old path: index the in-memory tensors, then the trainer's step (same optimizer,
    schedule, loss and score)."""
    from nmdeploy.train.loop import _optimizer, _schedule

    config = _config(steps, batch)
    optimizer = _optimizer(model, config)
    schedule = _schedule(optimizer, config, steps)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    model.train()
    began = time.perf_counter()
    for index in order.split(batch)[:steps]:
        inputs, labels = x[index], y[index]
        optimizer.zero_grad(set_to_none=True)
        logits = model(inputs)
        loss = torch.nn.functional.cross_entropy(logits.float(), labels)
        loss.backward()
        optimizer.step()
        schedule.step()
        float(loss.detach())
        float((logits.detach().argmax(1) == labels).sum())
    return steps * batch / (time.perf_counter() - began)


def _streamed_steps(model, data, steps: int, batch: int) -> float:
    from nmdeploy.train import fit

    began = time.perf_counter()
    fit(model, data, None, _config(steps, batch), workers=0)
    return steps * batch / (time.perf_counter() - began)


def throughput(steps: int, batch: int, rounds: int) -> tuple[list[float], list[float]]:
    from nmdeploy.data import open_data
    from nmdeploy.export.loading import build_model

    data = open_data("fashion-mnist:train")
    x, y = torch.from_numpy(data.inputs["x"]).clone(), torch.from_numpy(data.labels)
    x = x.contiguous()  # torch's own strides, as the old trainer's tensors had after indexing
    memory, streamed = [], []
    for _ in range(rounds):
        torch.manual_seed(0)
        memory.append(_in_memory_steps(build_model("fashion-resnet"), x, y, steps, batch))
        torch.manual_seed(0)
        streamed.append(_streamed_steps(build_model("fashion-resnet"), data, steps, batch))
    return memory, streamed


def _jpeg_folder(root: Path, count: int) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:375, 0:500]
    for i in range(count):
        folder = root / f"n{i % 10:08d}"
        folder.mkdir(parents=True, exist_ok=True)
        base = np.stack([(xx * (i + 1) % 256), (yy * 3 % 256), ((xx + yy) % 256)], -1).astype(np.float32)
        picture = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(picture).save(folder / f"{i}.JPEG", quality=90)
    return root


def jpeg_rates(count: int, workers: tuple[int, ...], batch: int) -> dict[tuple[str, int], float]:
    from nmdeploy.data import DataConfig, open_data
    from nmdeploy.data.loader import EpochBatches, eval_loader, iterate, train_loader

    rates = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = _jpeg_folder(Path(tmp) / "imagenet-like", count)
        config = DataConfig(image_size=224, augment=True, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
        for mode in ("eval", "train"):
            source = open_data(str(root), "train", config, train=mode == "train")
            for k in workers:
                if mode == "eval":
                    loader = eval_loader(source, batch, k)
                else:
                    sampler = EpochBatches(len(source), batch, 0)
                    loader = train_loader(source, sampler, k, False, 0)
                began = time.perf_counter()
                seen = sum(len(b) for b in iterate(loader, source, "images"))
                rates[(mode, k)] = seen / (time.perf_counter() - began)
                del loader
    return rates


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", default="10000,1000000", help="the two synthetic dataset sizes")
    parser.add_argument("--rss-steps", type=int, default=100)
    parser.add_argument("--rss-batch", type=int, default=64)
    parser.add_argument("--rss-rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=150, help="training steps per throughput round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--jpegs", type=int, default=1000)
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: rss, throughput, jpeg")
    parser.add_argument("--write", action="store_true", help="rewrite this benchmark's section of RESULTS.md")
    args = parser.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))
    console = Console()
    lines = []
    if "rss" not in skip:
        small, large = (int(v) for v in args.items.split(","))
        runs: dict[int, list[float]] = {small: [], large: []}
        for _ in range(args.rss_rounds):  # alternated: a run's peak RSS varies by a few percent
            for n in (small, large):
                runs[n].append(peak_rss(n, args.rss_steps, args.rss_batch, None))
        rss = {n: statistics.median(v) for n, v in runs.items()}
        ratio = rss[large] / rss[small]
        table = Table(title=f"Peak RSS of nmdeploy finetune, {args.rss_steps} steps of {args.rss_batch}")
        for column in ("items", "peak RSS (median)", "runs", "ratio"):
            table.add_column(column, justify="right")
        table.add_row(f"{small:,}", f"{rss[small]:.0f} MiB", " ".join(f"{v:.0f}" for v in runs[small]), "1.00")
        table.add_row(f"{large:,}", f"{rss[large]:.0f} MiB", " ".join(f"{v:.0f}" for v in runs[large]), f"{ratio:.3f}")
        console.print(table)
        lines += [
            f"**Memory is flat in the data size** (goal: ratio <= 1.10): peak RSS of `nmdeploy finetune` (its "
            f"largest process) on the synthetic plug-in (`benchmarks.synthetic:data`, 3x64x64 float32 samples made "
            f"per item), `finetune.steps_per_epoch: {args.rss_steps}`, batch {args.rss_batch}, automatic workers, "
            f"median of {args.rss_rounds} alternated runs:",
            "",
            "| items | peak RSS | runs (MiB) | ratio |",
            "|---:|---:|---:|---:|",
            f"| {small:,} | {rss[small]:.0f} MiB | {' '.join(f'{v:.0f}' for v in runs[small])} | 1.00 |",
            f"| {large:,} | {rss[large]:.0f} MiB | {' '.join(f'{v:.0f}' for v in runs[large])} | {ratio:.3f} |",
            "",
            f"The same samples held in memory would take {small * 3 * 64 * 64 * 4 / 2**20:,.0f} MiB and "
            f"{large * 3 * 64 * 64 * 4 / 2**30:,.1f} GiB.",
            "",
        ]
    if "throughput" not in skip:
        memory, streamed = throughput(args.steps, 128, args.rounds)
        ratio = statistics.median(streamed) / statistics.median(memory)
        table = Table(title="Training throughput, fashion-resnet, batch 128 (samples/s, median of rounds)")
        for column in ("path", "samples/s", "rounds", "ratio"):
            table.add_column(column, justify="right")
        table.add_row(
            "in-memory tensors", f"{statistics.median(memory):.0f}", " ".join(f"{v:.0f}" for v in memory), "1.00"
        )
        table.add_row(
            "DataLoader (fit)",
            f"{statistics.median(streamed):.0f}",
            " ".join(f"{v:.0f}" for v in streamed),
            f"{ratio:.3f}",
        )
        console.print(table)
        lines += [
            f"**Streaming costs nothing** (goal: >= 0.95x): the built-in example's training steps, {args.steps} steps "
            f"of 128, `fit` reading Fashion-MNIST through the DataLoader vs a loop indexing the in-memory tensors "
            f"(the trainer before streaming), alternated in one process, median of {args.rounds} rounds:",
            "",
            "| path | samples/s | ratio |",
            "|---|---:|---:|",
            f"| in-memory tensors | {statistics.median(memory):.0f} | 1.00 |",
            f"| DataLoader (`fit`) | {statistics.median(streamed):.0f} | {ratio:.3f} |",
            "",
        ]
    if "jpeg" not in skip:
        workers = (0, 1, 2)
        rates = jpeg_rates(args.jpegs, workers, 32)
        table = Table(title=f"JPEG folder, {args.jpegs} images of 500x375, to 224x224 (images/s)")
        table.add_column("transform")
        for k in workers:
            table.add_column(f"{k} workers", justify="right")
        for mode in ("eval", "train"):
            table.add_row(mode, *(f"{rates[(mode, k)]:.0f}" for k in workers))
        console.print(table)
        lines += [
            f"**A JPEG folder**: {args.jpegs} JPEGs of 500x375 (quality 90), decoded and transformed to 224x224 and "
            "normalised, batches of 32, images/s:",
            "",
            "| transform | " + " | ".join(f"{k} workers" for k in workers) + " |",
            "|---|" + "---:|" * len(workers),
            *(
                f"| {'evaluation: resize 256 + centre crop' if mode == 'eval' else 'training: random-resized crop + flip'} | "
                + " | ".join(f"{rates[(mode, k)]:.0f}" for k in workers)
                + " |"
                for mode in ("eval", "train")
            ),
            "",
            f"On {os.cpu_count()} cores the workers share the CPUs with the main process; a training step on a GPU "
            "leaves the cores to them.",
            "",
        ]
    if args.write and lines:
        given = [a for a in (sys.argv[1:] if argv is None else argv) if a != "--write"]
        command = " ".join(["python -m benchmarks.streaming", *given])
        write_section("Streaming data (benchmarks/streaming.py)", "\n".join([f"`{command}`", "", *lines]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Train-step cost of each sparsity method relative to dense training, on CPU.

A ResNet-style CNN (examples.fashion_mnist.FashionResNet, channels multiples of 16) on
28x28 inputs at batch 128. Every method gets its own copy of the same initial model and
optimizer; steps are interleaved (method order shuffled each round) so machine noise hits
all methods alike. The figure is the median over rounds of step_time(method) /
step_time(dense) within the same round.

    python -m benchmarks.overhead                     # prints the table
    python -m benchmarks.overhead --write             # also rewrites its section of RESULTS.md
"""

from __future__ import annotations

import argparse
import copy
import platform
import random
import statistics
import sys
import time

import torch
from rich.console import Console
from rich.progress import track
from rich.table import Table

import nmdeploy
from benchmarks._results import write_section
from examples.fashion_mnist import FashionResNet

TARGETS = {"maxq": 1.10, "srste": 1.05}


def _variants(base: torch.nn.Module, methods: list[str]) -> dict[str, tuple[torch.nn.Module, torch.optim.Optimizer]]:
    out = {}
    for name in methods:
        model = copy.deepcopy(base)
        if name == "maxq-ramp":  # mid-schedule: half the blocks dense, the extra block ranking runs
            sp = nmdeploy.sparsify(model, method="maxq", start_epoch=0, end_epoch=2)
            sp.set_epoch(1)
        elif name != "dense":
            nmdeploy.sparsify(model, method=name, start_epoch=0, end_epoch=0)
        out[name] = (model, torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4))
    return out


def _step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> float:
    start = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    torch.nn.functional.cross_entropy(model(x), y).backward()
    optimizer.step()
    return time.perf_counter() - start


def measure(widths: tuple[int, ...], methods: list[str], batch: int, rounds: int, warmup: int, seed: int) -> dict:
    torch.manual_seed(seed)
    base = FashionResNet(widths)
    variants = _variants(base, ["dense", *[m for m in methods if m != "dense"]])
    x = torch.randn(batch, 1, 28, 28)
    y = torch.randint(0, 10, (batch,))
    times: dict[str, list[float]] = {name: [] for name in variants}
    order = list(variants)
    rng = random.Random(seed)
    for r in track(range(warmup + rounds), description=f"widths {widths}", transient=True):
        rng.shuffle(order)
        for name in order:
            elapsed = _step(*variants[name], x, y)
            if r >= warmup:
                times[name].append(elapsed)
    dense = times["dense"]
    return {
        "params": sum(p.numel() for p in base.parameters()),
        "dense_ms": statistics.median(dense) * 1e3,
        "rows": {
            name: {
                "ms": statistics.median(ts) * 1e3,
                "ratio": statistics.median(t / d for t, d in zip(ts, dense)),
            }
            for name, ts in times.items()
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", default="16,32,64;32,64,128", help="';'-separated width triples")
    parser.add_argument("--methods", default="maxq,maxq-ramp,srste,ste,asp")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=40, help="timed steps per method (>= 20)")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--write", action="store_true", help="rewrite this benchmark's section of RESULTS.md")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    methods = args.methods.split(",")
    console = Console()
    lines = []
    for spec in args.widths.split(";"):
        widths = tuple(int(w) for w in spec.split(","))
        result = measure(widths, methods, args.batch, args.rounds, args.warmup, args.seed)
        table = Table(title=f"FashionResNet{widths}, {result['params']:,} parameters, batch {args.batch}")
        for col in ("method", "median step (ms)", "x dense (paired median)", "target"):
            table.add_column(col, justify="right" if col != "method" else "left")
        lines.append(f"| FashionResNet{widths} ({result['params'] // 1000}k params) | dense | {result['dense_ms']:.1f} | 1.00 | |")
        for name, row in result["rows"].items():
            target = TARGETS.get(name)
            verdict = "" if target is None else f"<= {target:.2f} {'met' if row['ratio'] <= target else 'MISSED'}"
            table.add_row(name, f"{row['ms']:.1f}", f"{row['ratio']:.3f}", verdict)
            if name != "dense":
                lines.append(f"| | {name} | {row['ms']:.1f} | {row['ratio']:.3f} | {verdict} |")
        console.print(table)
    if args.write:
        command = "python -m benchmarks.overhead " + " ".join(a for a in (argv if argv is not None else sys.argv[1:]))
        body = "\n".join(
            [
                f"Command: `{command.strip()}` ({args.rounds} interleaved rounds, {args.threads} threads, "
                f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads).",
                "Ratio = median over rounds of step(method) / step(dense) in the same round. "
                "`maxq` is fully N:M (schedule finished); `maxq-ramp` is mid-schedule (half the blocks dense).",
                "",
                "| model | method | median step (ms) | x dense | target |",
                "|---|---|---|---|---|",
                *lines,
            ]
        )
        write_section("Training-step overhead (benchmarks/overhead.py)", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Train-step cost of each sparsity method relative to dense training, on CPU.

A ResNet-style CNN (nmdeploy.examples.fashion_mnist.FashionResNet, channels multiples of 16) on
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
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import track
from rich.table import Table

import nmdeploy
from benchmarks._results import write_section
from nmdeploy.examples.fashion_mnist import FashionResNet
from nmdeploy.sparsity.methods.maxq import MaxQMask

TARGETS = {"maxq": 1.10, "srste": 1.05}


class SortedMaxQMask(MaxQMask):
    """MaxQ computed the direct way (docs/design/methods.md §3.9): a full sort per group, per filter and
    per kernel position, then scatters. Same mask; here only as the speed baseline."""

    def _soft_mask(self, weight: torch.Tensor, nm: torch.Tensor | None = None) -> torch.Tensor:
        with torch.no_grad():  # ignores a batched N:M indicator: everything is sorted here
            n, m, a = self.n, self.m, weight.detach().abs()
            out, cin = a.shape[:2]
            blocks = a.reshape(out, cin, -1).transpose(1, 2).reshape(-1, m)
            order = blocks.sort(dim=1).indices
            kept = torch.ones_like(blocks).scatter_(1, order[:, : m - n], 0.0)
            kept = kept.reshape(out, -1, cin).transpose(1, 2).reshape(a.shape)

            def query(rows: torch.Tensor) -> torch.Tensor:
                i = (m - n) * rows.shape[1] // m
                values, index = rows.sort(dim=1)
                t = values[:, i - 1 : i + 1].mean(dim=1, keepdim=True)
                rank = torch.ones_like(rows).scatter_(1, index[:, :i], 0.0)
                return rank * torch.sigmoid((rows - t) / self.tau)

            mult = 1 + query(a.reshape(out, -1)).reshape(a.shape)
            positions = a[0, 0].numel()
            if positions > 1:
                mult += query(a.reshape(-1, positions).t().contiguous()).t().reshape(a.shape)
            return kept * mult


def _sparsify_sorted_maxq(model: torch.nn.Module) -> None:
    nmdeploy.sparsify(model, method="maxq", start_epoch=0, end_epoch=0)
    for module in model.modules():
        for p in getattr(module, "parametrizations", {}).values():
            if isinstance(p[0], MaxQMask):
                p[0].__class__ = SortedMaxQMask


def _variants(base: torch.nn.Module, methods: list[str]) -> dict[str, tuple[torch.nn.Module, torch.optim.Optimizer]]:
    out = {}
    for name in methods:
        model = copy.deepcopy(base)
        if name == "maxq-sort":
            _sparsify_sorted_maxq(model)
        elif name == "maxq-ramp":  # mid-schedule: half the blocks dense, the extra block ranking runs
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
                "iqr": _quartiles([t / d for t, d in zip(ts, dense)]),
            }
            for name, ts in times.items()
        },
    }


def plot(results: dict[str, dict], path: Path, title: str) -> None:
    """Bar chart of each method's step-time ratio per model, with quartile whiskers and targets."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    models = list(results)
    methods = [m for m in next(iter(results.values()))["rows"] if m != "dense"]
    width = 0.8 / len(models)
    for i, model in enumerate(models):
        rows = results[model]["rows"]
        xs = [j + i * width for j in range(len(methods))]
        ratios = [rows[m]["ratio"] for m in methods]
        errors = [
            [r - rows[m]["iqr"][0] for m, r in zip(methods, ratios)],
            [rows[m]["iqr"][1] - r for m, r in zip(methods, ratios)],
        ]
        ax.bar(xs, ratios, width, yerr=errors, capsize=3, label=model)
    for k, (name, target) in enumerate((n, t) for n, t in TARGETS.items() if n in methods):
        j = methods.index(name)
        ax.hlines(
            target,
            j - width / 2,
            j + 0.8 - width / 2,
            colors="black",
            linestyles="dashed",
            label="target" if k == 0 else None,
        )
    ax.axhline(1.0, color="grey", linewidth=0.8)
    ax.set_ylim(0.8, max(1.2, ax.get_ylim()[1]))
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(methods))], methods)
    ax.set_ylabel("train step time / dense")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


def _quartiles(values: list[float]) -> tuple[float, float]:
    q = statistics.quantiles(values, n=4)
    return q[0], q[2]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", default="16,32,64;32,64,128", help="';'-separated width triples")
    parser.add_argument("--methods", default="maxq,maxq-ramp,maxq-sort,srste,ste,asp")
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
    results = {}
    for spec in args.widths.split(";"):
        widths = tuple(int(w) for w in spec.split(","))
        result = measure(widths, methods, args.batch, args.rounds, args.warmup, args.seed)
        results[f"FashionResNet{widths}"] = result
        table = Table(title=f"FashionResNet{widths}, {result['params']:,} parameters, batch {args.batch}")
        for col in ("method", "median step (ms)", "x dense (paired median)", "quartiles", "target"):
            table.add_column(col, justify="right" if col != "method" else "left")
        lines.append(
            f"| FashionResNet{widths} ({result['params'] // 1000}k params) | dense | {result['dense_ms']:.1f} | 1.00 | | |"
        )
        for name, row in result["rows"].items():
            target = TARGETS.get(name)
            verdict = "" if target is None else f"<= {target:.2f} {'met' if row['ratio'] <= target else 'MISSED'}"
            spread = f"{row['iqr'][0]:.2f}-{row['iqr'][1]:.2f}"
            table.add_row(name, f"{row['ms']:.1f}", f"{row['ratio']:.3f}", spread, verdict)
            if name != "dense":
                lines.append(f"| | {name} | {row['ms']:.1f} | {row['ratio']:.3f} | {spread} | {verdict} |")
        console.print(table)
    if args.write:
        command = "python -m benchmarks.overhead " + " ".join(a for a in (argv if argv is not None else sys.argv[1:]))
        body = "\n".join(
            [
                f"Command: `{command.strip()}` ({args.rounds} interleaved rounds, torch {torch.__version__}, "
                f"{platform.machine()}, {os.cpu_count()} cores, {args.threads} torch threads).",
                "Ratio = median over rounds of step(method) / step(dense) in the same round. "
                "`maxq` is fully N:M (schedule finished); `maxq-ramp` is mid-schedule (half the blocks dense); "
                "`maxq-sort` is the same mask computed the direct way (full sorts and scatters), for comparison. "
                "`asp` adds one multiply per layer, so its distance from 1.00 shows the machine's noise.",
                "",
                "| model | method | median step (ms) | x dense | quartiles of the ratio | target |",
                "|---|---|---|---|---|---|",
                *lines,
            ]
        )
        threads = f"{args.threads} thread" + ("s" if args.threads != 1 else "")
        picture = f"overhead-{args.threads}thread.png"
        plot(results, Path(__file__).with_name(picture), f"Sparse training overhead, CPU, {threads}")
        body += f"\n\n![step time relative to dense, {threads}]({picture})"
        write_section(f"Training-step overhead, {threads} (benchmarks/overhead.py)", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())

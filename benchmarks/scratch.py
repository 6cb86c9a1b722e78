"""A fair test of MaxQ's claim, from scratch: MaxQ against SR-STE with paired seeds on Fashion-MNIST.

The MaxQ paper trains from random initialisation with its incremental schedule ending at 25 % of
the budget and reports a clear gain over SR-STE at high sparsity. This benchmark puts that
setting on our smallest real network, FashionResNet(16, 32, 64): 20 epochs from random weights,
lr 0.1 with a cosine schedule, SGD with Nesterov momentum, batch 128, the loop and test set of
the accuracy sweep. Three arms at 1:16 and at 2:4:

- ``srste``: SR-STE, every block N:M from the first step;
- ``maxq``: MaxQ with the dense share falling linearly to 0 at 25 % of the budget;
- ``maxq-no-multipliers``: the same schedule with the soft multipliers ``1 + Q`` forced to 1,
  which isolates what the soft mask adds over the schedule alone.

A seed draws both the initial weights and the data order, and every arm runs every seed, so the
arms are compared pair by pair. The claim is judged as it is stated: MaxQ − SR-STE at least
0.5 pt on the mean, with every pair positive.

    python -m benchmarks.scratch --write        # 24 runs, about 1.5 h on 2 cores; resumable
    python -m benchmarks.scratch --patterns 1:16 --seeds 2

Runs go to ``benchmarks/runs/scratch/<arm>/`` (JSON committed, weights not), and a re-run skips
finished runs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
from pathlib import Path

from benchmarks import accuracy
from benchmarks._results import mean_cell, write_section
from benchmarks.maxq_ablations import _without_multipliers

ROOT = Path(__file__).with_name("runs") / "scratch"
ARMS = ("srste", "maxq", "maxq-no-multipliers")
PATTERNS = ("1:16", "2:4")
EPOCHS, LR, END = 20, 0.1, 0.25
CLAIM = 0.5  # points MaxQ must beat SR-STE by, with every pair positive


def run_arm(data, arm: str, pattern: str, seed: int, epochs: int = EPOCHS) -> dict:
    """One arm at one pattern and seed, from random weights drawn from ``seed``."""
    folder = ROOT / arm
    folder.mkdir(parents=True, exist_ok=True)
    method = "srste" if arm == "srste" else "maxq"
    switch = _without_multipliers() if arm == "maxq-no-multipliers" else contextlib.nullcontext()
    with switch:
        return accuracy.run_one(data, folder, method, pattern, seed, epochs, END, scratch=True, lr=LR, init_seed=seed)


def _recorded(arm: str, pattern: str) -> dict[int, dict]:
    tag = pattern.replace(":", "of")
    method = "srste" if arm == "srste" else "maxq"
    rows = [json.loads(p.read_text()) for p in sorted((ROOT / arm).glob(f"{method}-{tag}-s*.json"))]
    return {r["seed"]: r for r in rows}


def paired(pattern: str, arm: str, key: str = "fp32_top1") -> list[tuple[int, float]]:
    """(seed, arm − SR-STE in points) for every seed both ran."""
    base, other = _recorded("srste", pattern), _recorded(arm, pattern)
    return [(s, 100 * (other[s][key] - base[s][key])) for s in sorted(set(base) & set(other))]


def verdict(diffs: list[float]) -> str:
    if not diffs:
        return "no paired runs yet"
    mean = statistics.fmean(diffs)
    holds = mean >= CLAIM and all(d > 0 for d in diffs)
    return (
        f"mean {mean:+.2f} pt over {len(diffs)} pair(s), {sum(d > 0 for d in diffs)} positive: "
        f"the claim (≥ +{CLAIM} pt, every pair positive) {'holds' if holds else 'does NOT hold'}"
    )


def summarise(patterns: list[str], seeds: int) -> str:
    lines = [
        "| pattern | arm | runs | FP32 top-1 (%) | INT8 top-1 (%) | paired diff vs SR-STE, FP32 (pt, per seed) |",
        "|---|---|---|---|---|---|",
    ]
    checks = []
    for pattern in patterns:
        for arm in ARMS:
            rows = list(_recorded(arm, pattern).values())
            fp32 = [100 * r["fp32_top1"] for r in rows]
            int8 = [100 * r["int8_top1"] for r in rows]
            diffs = "" if arm == "srste" else ", ".join(f"s{s} {d:+.2f}" for s, d in paired(pattern, arm))
            lines.append(f"| {pattern} | {arm} | {len(rows)} | {mean_cell(fp32)} | {mean_cell(int8)} | {diffs} |")
        for arm in ARMS[1:]:
            checks.append(f"{pattern}, {arm} − SR-STE: {verdict([d for _, d in paired(pattern, arm)])}")
    done = sum(len(_recorded(a, p)) for a in ARMS for p in patterns)
    planned = len(ARMS) * len(patterns) * seeds
    status = (
        f"Runs recorded: {done} of {planned}"
        + ("" if done >= planned else " — **not finished**; the same command resumes it")
        + "."
    )
    return "\n".join([status, "", *lines, "", *(f"- {c}" for c in checks)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--patterns", default=",".join(PATTERNS))
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--summary-only", action="store_true", help="only summarise the recorded runs")
    parser.add_argument("--write", action="store_true", help="rewrite this section of benchmarks/RESULTS.md")
    args = parser.parse_args(argv)
    patterns = args.patterns.split(",")
    if not args.summary_only:
        data = accuracy._data()
        for pattern in patterns:  # every arm of a seed before the next seed: a partial run is already paired
            for seed in range(args.seeds):
                for arm in ARMS:
                    run_arm(data, arm, pattern, seed, args.epochs)
    shown = " ".join(a for a in (argv if argv is not None else sys.argv[1:]) if a != "--summary-only")
    text = "\n".join(
        [
            f"Command: `python -m benchmarks.scratch {shown}`.",
            "",
            f"FashionResNet(16, 32, 64) from random weights, {args.epochs} epochs, lr {LR} cosine, SGD Nesterov, "
            f"batch 128; MaxQ's schedule ends at {END:.0%} of the budget. A seed draws the initial weights and the "
            "data order; every arm runs every seed. Test set 10,000 images; INT8 = min-max Q/DQ on ONNX Runtime CPU.",
            "",
            summarise(patterns, args.seeds),
        ]
    )
    print(text)
    if args.write:
        write_section("From scratch: MaxQ against SR-STE, paired seeds (benchmarks/scratch.py)", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Distillation from the dense model in the Fashion-MNIST fine-tune, and the build's defaults it chose.

Same start, loop, budget and test set as the accuracy sweep (``benchmarks/accuracy.py``: the
converged FashionResNet, 12 fine-tune epochs at lr 0.02), with the dense start as teacher:
loss ``(1 - w)·CE + w·T²·KL`` (``task.distill``). Arms:

- ``<method>+kd``: the sweep's method with its sweep settings, plus distillation (w 0.5, T 4);
- ``default``: MaxQ with distillation, the schedule ending at 25 % of the budget and λ = 2e-3
  (λ/wd = 4, the references' ratio): what ``nmdeploy build`` does at 2:4; at 1:4 and 1:16 it
  uses λ = 5e-3 (``default-decay5e-3``; ``sparsity.decay: null`` picks λ by pattern);
  ``default-w0.9`` / ``default-t2`` / ``default-decay5e-3`` the same with distillation weight
  0.9, temperature 2, or λ = 5e-3; ``srste-tuned`` SR-STE given the same
  λ and distillation, so that the baseline is not left behind by the tuning;
- ``default+permute`` / ``asp+kd+permute``: the same with ``sparsity.permute`` (channel
  permutation before the first mask), to see whether the magnitude it keeps survives fine-tuning;
- ``kd-w<w>-t<T>``: SR-STE at other distillation settings, the sweep that chose them.

Each arm's numbers sit next to the sweep's own run of the method without distillation (same
seeds), so the paired difference is what distillation (and the defaults) changed.

    python -m benchmarks.distill --write                         # every arm, 3 seeds (hours on 2 cores)
    python -m benchmarks.distill --arms default --patterns 1:16 --seeds 1

Runs go to ``benchmarks/runs/accuracy-distill/<arm>/`` (JSON committed); re-runs skip finished runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from benchmarks import accuracy
from benchmarks._results import mean_cell, write_section
from benchmarks.maxq_ablations import prepare

ROOT = Path(__file__).with_name("runs") / "accuracy-distill"
PATTERNS = ("1:16", "2:4", "1:4")
DEFAULT_KD = (0.5, 4.0)


def _arms() -> dict[str, tuple[str, dict, str]]:
    """name: (method, keyword arguments of accuracy.run_one besides distill, what it is)."""
    arms: dict[str, tuple[str, dict, str]] = {
        "default": (
            "maxq",
            {"end_fraction": 0.25, "options": {"decay": 2e-3}},
            "MaxQ, early ramp, λ 2e-3, + distillation",
        ),
        "default-nokd": (
            "maxq",
            {"end_fraction": 0.25, "options": {"decay": 2e-3}, "kd": None},
            "the default without distillation",
        ),
        "default-w0.9": (
            "maxq",
            {"end_fraction": 0.25, "options": {"decay": 2e-3}, "kd": (0.9, 4.0)},
            "the default with distillation weight 0.9",
        ),
        "default-decay5e-3": (
            "maxq",
            {"end_fraction": 0.25, "options": {"decay": 5e-3}},
            "the same with λ = 5e-3 (10x the weight decay)",
        ),
        "default-t2": (
            "maxq",
            {"end_fraction": 0.25, "options": {"decay": 2e-3}, "kd": (0.5, 2.0)},
            "the default with distillation temperature 2",
        ),
    }
    arms["default+permute"] = (
        "maxq",
        {"end_fraction": 0.25, "options": {"decay": 5e-3}, "permute": True},
        "the 1:16 default (λ 5e-3) with channel permutation",
    )
    arms["asp+kd+permute"] = ("asp", {"permute": True}, "asp + distillation with channel permutation")
    for method in accuracy.METHODS:
        arms[f"{method}+kd"] = (method, {}, f"{method}, sweep settings, + distillation")
    arms["srste-tuned"] = ("srste", {"options": {"decay": 2e-3}}, "srste with the default's λ = 2e-3, + distillation")
    arms["srste-decay5e-3"] = ("srste", {"options": {"decay": 5e-3}}, "srste with λ = 5e-3, + distillation")
    for w, t in ((0.9, 4.0), (0.5, 2.0), (0.9, 1.0)):
        arms[f"kd-w{w:g}-t{t:g}"] = ("srste", {"kd": (w, t)}, f"srste + distillation w {w:g}, T {t:g}")
    return arms


ARMS = _arms()
# which arm is what nmdeploy build now does, per pattern (sparsity.decay: null picks λ by pattern)
BUILD_DEFAULT = {"2:4": "default", "1:4": "default-decay5e-3", "1:16": "default-decay5e-3"}


def run_arm(data, arm: str, pattern: str, seed: int) -> dict:
    from nmdeploy.train import Distill

    method, kwargs, _ = ARMS[arm]
    kwargs = dict(kwargs)
    kd = kwargs.pop("kd", DEFAULT_KD)
    folder = prepare(ROOT / arm)
    return accuracy.run_one(data, folder, method, pattern, seed, 12, distill=kd and Distill(*kd), **kwargs)


def _recorded(folder: Path, method: str, pattern: str) -> dict[int, dict]:
    tag = pattern.replace(":", "of")
    return {r["seed"]: r for r in (json.loads(p.read_text()) for p in sorted(folder.glob(f"{method}-{tag}-s*.json")))}


def summarise(arms: list[str], patterns: list[str]) -> tuple[str, dict]:
    lines = [
        "| arm | what | pattern | FP32 top-1 (%) | without distillation, same seeds | paired diff (pt) | INT8 top-1 (%) |",
        "|---|---|---|---|---|---|---|",
    ]
    means: dict = {}
    for arm in arms:
        method, _, what = ARMS[arm]
        for pattern in patterns:
            mine = _recorded(ROOT / arm, method, pattern)
            if not mine:
                continue
            base = _recorded(accuracy.RUNS, method, pattern)
            seeds = sorted(set(mine) & set(base))
            fp32 = [100 * mine[s]["fp32_top1"] for s in sorted(mine)]
            int8 = [100 * mine[s]["int8_top1"] for s in sorted(mine)]
            diffs = [100 * (mine[s]["fp32_top1"] - base[s]["fp32_top1"]) for s in seeds]
            means[(arm, pattern)] = (statistics.fmean(fp32), statistics.fmean(int8))
            lines.append(
                f"| {arm} | {what} | {pattern} | {mean_cell(fp32, count=True)} | {mean_cell([base[s]['fp32_top1'] for s in seeds], 100, True)} | "
                f"{', '.join(f'{d:+.2f}' for d in diffs) or '–'} | {mean_cell(int8, count=True)} |"
            )
    return "\n".join(lines), means


PERMUTED = {"default+permute": "default-decay5e-3", "asp+kd+permute": "asp+kd"}  # arm: the same without permute


def permutation_lines(patterns: list[str]) -> list[str]:
    """What channel permutation changed after fine-tuning: each permuted arm against its plain twin, seed by seed."""
    out = []
    for arm, plain in PERMUTED.items():
        method = ARMS[arm][0]
        for pattern in patterns:
            mine, base = _recorded(ROOT / arm, method, pattern), _recorded(ROOT / plain, method, pattern)
            seeds = sorted(set(mine) & set(base))
            if seeds:
                diffs = [100 * (mine[s]["fp32_top1"] - base[s]["fp32_top1"]) for s in seeds]
                out.append(
                    f"{arm} − {plain} at {pattern}, FP32: {', '.join(f'{d:+.2f}' for d in diffs)} "
                    f"(mean {statistics.fmean(diffs):+.2f} pt over {len(seeds)} seed(s))"
                )
    return out


def goals(means: dict) -> list[str]:
    control = list(_recorded(accuracy.RUNS, "dense", "2:4").values())
    if not control:
        return []
    dense = 100 * statistics.fmean(r["fp32_top1"] for r in control)
    dense_int8 = 100 * statistics.fmean(r["int8_top1"] for r in control)
    out = [f"Dense at the same budget (the sweep's dense +12 epochs control): FP32 {dense:.2f}, INT8 {dense_int8:.2f}."]
    # the build's default: λ by pattern (sparsity.decay: null), 2e-3 at 2:4, 5e-3 at 1:4 and 1:16
    if (BUILD_DEFAULT["1:16"], "1:16") in means:
        gap = means[(BUILD_DEFAULT["1:16"], "1:16")][0] - dense
        out.append(
            f"Default recipe 1:16 (λ 5e-3) vs dense: {gap:+.2f} pt (goal >= -1.00): {'met' if gap >= -1 else 'NOT met'}"
        )
    if (BUILD_DEFAULT["2:4"], "2:4") in means:
        gap = means[(BUILD_DEFAULT["2:4"], "2:4")][1] - dense_int8
        out.append(
            f"Default recipe 2:4 (λ 2e-3) INT8 vs dense INT8: {gap:+.2f} pt (goal >= -0.10): "
            f"{'met' if gap >= -0.1 else 'NOT met'}"
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument("--patterns", default=",".join(PATTERNS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--summary-only", action="store_true", help="only summarise the recorded runs")
    parser.add_argument("--write", action="store_true", help="rewrite this section of benchmarks/RESULTS.md")
    args = parser.parse_args(argv)
    arms, patterns = args.arms.split(","), args.patterns.split(",")
    unknown = sorted(set(arms) - set(ARMS))
    if unknown:
        parser.error(f"unknown arm(s) {unknown}; choose from {sorted(ARMS)}")
    if not args.summary_only:
        data = accuracy._data()
        for seed in range(args.seeds):  # seed 0 of every arm first: a partial run already says something
            for pattern in patterns:
                for arm in arms:
                    if arm.startswith("kd-w") and pattern != "1:16":
                        continue  # the settings sweep is at the pattern that needs it most
                    run_arm(data, arm, pattern, seed)
    table, means = summarise(arms, patterns)
    shown = " ".join(a for a in (argv if argv is not None else sys.argv[1:]) if a != "--summary-only")
    text = "\n".join(
        [
            f"Command: `python -m benchmarks.distill {shown}`.",
            "",
            "From the accuracy sweep's converged dense start, 12 fine-tune epochs, its loop and test set; the teacher "
            "is the dense start. The number of runs is in each cell; seed-to-seed spread is about 0.1-0.3 pt.",
            "",
            table,
            "",
            *(f"- {g}" for g in goals(means) + permutation_lines(patterns)),
        ]
    )
    print(text)
    if args.write:
        write_section("Distillation from the dense model (benchmarks/distill.py)", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

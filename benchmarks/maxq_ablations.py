"""Why MaxQ trails SR-STE at 1:16 on Fashion-MNIST: one ablation per suspected cause.

The accuracy sweep (``benchmarks/accuracy.py``) has MaxQ 1:16 about 0.65 pt *below* SR-STE,
where the paper has it far above. Each ablation below changes one thing and reruns MaxQ (and,
where the change applies to both, SR-STE) over 3 seeds, from the same converged dense start
and with the same loop as the sweep:

- ``no-multipliers``: MaxQ's incremental schedule with hard masks (the soft multipliers
  ``1 + Q`` forced to 1). Isolates the soft mask.
- ``no-schedule``: the soft multipliers with every block N:M from the first step. Isolates
  the incremental schedule.
- ``end-0.25``: the schedule ends at 25% of the budget instead of 75%.
- ``rescale``: MaxQ's ``rescale`` option, which undoes the multipliers' growth of each row's
  norm at the start (built for pretrained nets without BatchNorm).
- ``tau-1e-3`` / ``tau-1e-1``: the sigmoid temperature, 10x below and above the reference.
- ``decay-0`` / ``decay-2e-3``: the SR decay λ on pruned weights, off (MaxQ; SR-STE with λ = 0 is the
  sweep's STE) and 10x the reference (MaxQ and SR-STE).
- ``epochs-30``: 30 fine-tune epochs instead of 12, MaxQ and SR-STE.
- ``scratch-30``: no dense start, 30 epochs at lr 0.1, MaxQ and SR-STE: the papers' setting
  (both train from scratch).

Before training, the "start shock" is measured too: test top-1 of the dense start right after
``sparsify`` with MaxQ's schedule at its first epoch (every block still dense, so only the
multipliers act), as evaluated (BatchNorm statistics of the dense model) and after the
BatchNorm statistics are re-estimated on 4,096 training images. It shows how far the
multipliers move a converged network before any step is taken.

    python -m benchmarks.maxq_ablations --write        # about 1 h on 2 cores; resumable
    python -m benchmarks.maxq_ablations --only rescale --seeds 1

Runs go to ``benchmarks/runs/accuracy-ablations/<name>/`` (JSON committed); the dense start
is the sweep's (``benchmarks/runs/accuracy/dense.pt``, retrained by the sweep command if missing).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
from pathlib import Path

import torch

from benchmarks import accuracy
from benchmarks._results import mean_cell, write_section

ROOT = Path(__file__).with_name("runs") / "accuracy-ablations"

# name: (methods, keyword arguments of accuracy.run_one, what changes)
ABLATIONS: dict[str, tuple[tuple[str, ...], dict, str]] = {
    "no-multipliers": (("maxq",), {}, "soft multipliers forced to 1 (schedule + hard masks only)"),
    "no-schedule": (("maxq",), {"end_fraction": 0.0}, "every block N:M from the first step"),
    "end-0.25": (("maxq",), {"end_fraction": 0.25}, "schedule ends at 25% of the budget"),
    "rescale": (("maxq",), {"options": {"rescale": True}}, "row norms restored at the start (`rescale`)"),
    "tau-1e-3": (("maxq",), {"options": {"tau": 1e-3}}, "τ = 1e-3"),
    "tau-1e-1": (("maxq",), {"options": {"tau": 1e-1}}, "τ = 1e-1"),
    "decay-0": (("maxq",), {"options": {"decay": 0.0}}, "λ = 0 (no SR decay on pruned weights)"),
    "decay-2e-3": (("maxq", "srste"), {"options": {"decay": 2e-3}}, "λ = 2e-3 (10x)"),
    "epochs-30": (("maxq", "srste"), {"epochs": 30}, "30 fine-tune epochs"),
    "scratch-30": (("maxq", "srste"), {"epochs": 30, "scratch": True, "lr": 0.1}, "from scratch, 30 epochs, lr 0.1"),
}


@contextlib.contextmanager
def _without_multipliers():
    """MaxQ with ``1 + Q`` replaced by 1: an ablation switch the library deliberately does not offer."""
    from nmdeploy.sparsity import nm

    original = nm._maxq_multipliers
    nm._maxq_multipliers = lambda a, n, m, tau, hints: torch.ones_like(a)
    try:
        yield
    finally:
        nm._maxq_multipliers = original


def _prepare(name: str) -> Path:
    """The ablation's run folder, holding the sweep's dense start."""
    return prepare(ROOT / name)


def prepare(folder: Path) -> Path:
    """``folder``, holding a copy of the accuracy sweep's dense start (its JSON and weights)."""
    folder.mkdir(parents=True, exist_ok=True)
    for file in ("dense.json", "dense.pt"):
        source = accuracy.RUNS / file
        if not source.is_file():
            raise SystemExit(
                f"{source} is missing: run `python -m benchmarks.accuracy --seeds 0 --no-control` first "
                "(it retrains the dense start deterministically)"
            )
        if not (folder / file).is_file() or (folder / file).stat().st_mtime < source.stat().st_mtime:
            shutil.copy2(source, folder / file)
    return folder


def run_ablation(data, name: str, pattern: str, seed: int) -> list[dict]:
    methods, kwargs, _ = ABLATIONS[name]
    kwargs = dict(kwargs)
    epochs = kwargs.pop("epochs", 12)
    folder = _prepare(name)
    with _without_multipliers() if name == "no-multipliers" else contextlib.nullcontext():
        return [accuracy.run_one(data, folder, method, pattern, seed, epochs, **kwargs) for method in methods]


def start_shock(data, pattern: str, options: dict | None = None, method: str = "maxq") -> tuple[float, float]:
    """Test top-1 of the dense start right after ``sparsify``, as is and with BN re-estimated.

    MaxQ at its first epoch (all blocks dense: only the multipliers act); any other method
    as it starts (the one-shot N:M projection of the dense weights).
    """
    import nmdeploy
    from nmdeploy.train import top1_accuracy

    model = accuracy._model()
    model.load_state_dict(torch.load(accuracy.RUNS / "dense.pt", weights_only=True)["model"])
    sp = nmdeploy.sparsify(model, pattern, method, "linear", 0, 9 if method == "maxq" else 0, options=options)
    sp.set_epoch(0)
    model.eval()
    as_is = top1_accuracy(model, *data["test"])
    norms = [mod for mod in model.modules() if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm)]
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None  # a plain average over the batches below
    model.train()
    x = data["train"][0]
    with torch.no_grad():
        for start in range(0, 4096, 256):
            model(x[start : start + 256])
    model.eval()
    return as_is, top1_accuracy(model, *data["test"])


def _recorded(folder: Path, method: str, pattern: str) -> list[dict]:
    tag = pattern.replace(":", "of")
    return [json.loads(p.read_text()) for p in sorted(folder.glob(f"{method}-{tag}-s*.json"))]


def summarise(pattern: str, names: list[str]) -> str:
    lines = [
        "| ablation | what changes | method | FP32 top-1 (%) mean ± std (runs) | INT8 top-1 (%) |",
        "|---|---|---|---|---|",
    ]
    for method in ("srste", "maxq"):
        rows = _recorded(accuracy.RUNS, method, pattern)
        lines.append(
            f"| sweep (reference) | 12 epochs, defaults | {method} | {mean_cell([r['fp32_top1'] for r in rows], 100, True)} | {mean_cell([r['int8_top1'] for r in rows], 100, True)} |"
        )
    for name in names:
        methods, _, what = ABLATIONS[name]
        for method in methods:
            rows = _recorded(ROOT / name, method, pattern)
            lines.append(
                f"| `{name}` | {what} | {method} | {mean_cell([r['fp32_top1'] for r in rows], 100, True)} | {mean_cell([r['int8_top1'] for r in rows], 100, True)} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pattern", default="1:16")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--only", default=",".join(ABLATIONS), help="comma-separated ablation names")
    parser.add_argument("--summary-only", action="store_true", help="only summarise the recorded runs")
    parser.add_argument("--write", action="store_true", help="rewrite this section of benchmarks/RESULTS.md")
    args = parser.parse_args(argv)
    names = [n for n in args.only.split(",") if n]
    unknown = sorted(set(names) - set(ABLATIONS))
    if unknown:
        parser.error(f"unknown ablation(s) {unknown}; choose from {sorted(ABLATIONS)}")
    shock_file = ROOT / "start-shock.json"
    if not args.summary_only:
        data = accuracy._data()
        dense = json.loads((accuracy.RUNS / "dense.json").read_text())
        shock = []
        for pattern in ("2:4", args.pattern):
            for label, method, options in (
                ("MaxQ, epoch 0", "maxq", None),
                ("MaxQ `rescale`, epoch 0", "maxq", {"rescale": True}),
                ("hard N:M (SR-STE/ASP start)", "asp", None),
            ):
                as_is, bn = start_shock(data, pattern, options, method)
                shock.append({"pattern": pattern, "maxq": label, "dense": dense["test_top1"], "as_is": as_is, "bn": bn})
                print(shock[-1], flush=True)
        ROOT.mkdir(parents=True, exist_ok=True)
        shock_file.write_text(json.dumps(shock, indent=2))
        for seed in range(args.seeds):  # every ablation's seed 0 first: a partial run already says something
            for name in names:
                run_ablation(data, name, args.pattern, seed)
    body = [
        f"Command: `python -m benchmarks.maxq_ablations {' '.join(a for a in (argv if argv is not None else sys.argv[1:]) if a != '--summary-only')}`.",
        "",
        f"Pattern {args.pattern}, from the accuracy sweep's converged dense start unless stated; same loop and "
        "test set as the sweep. Each ablation changes one thing. The number of seeds is in each cell (the sweep's "
        "references average 3); seed-to-seed spread is about 0.2-0.4 pt, so single differences below that are noise.",
        "",
        summarise(args.pattern, names),
    ]
    shock_lines = [
        f"| {r['pattern']} | {r['maxq']} | {100 * r['dense']:.2f} | {100 * r['as_is']:.2f} | {100 * r['bn']:.2f} |"
        for r in (json.loads(shock_file.read_text()) if shock_file.is_file() else [])
    ]
    if shock_lines:
        body += [
            "",
            "Start shock: test top-1 of the dense start right after `sparsify`, before any step. MaxQ at epoch 0 "
            "has every block still dense, so only its multipliers act; the hard N:M row is the magnitude projection "
            "SR-STE, STE and ASP start from.",
            "",
            "| pattern | start | dense | as evaluated | BN statistics re-estimated |",
            "|---|---|---|---|---|",
            *shock_lines,
        ]
    text = "\n".join(body)
    print(text)
    if args.write:
        write_section("MaxQ ablations (why MaxQ trails SR-STE at 1:16)", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

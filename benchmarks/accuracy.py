"""MaxQ against its baselines and a peer on Fashion-MNIST: top-1 (FP32 and INT8) per method and pattern.

Every run starts from the same **converged** dense FashionResNet (16/32/64): dense training
with a cosine schedule on 55,000 training images, 5,000 held out to watch validation top-1 level
off. Every method then gets the same fine-tune budget (``--epochs``, SGD Nesterov, lr 0.02 cosine,
batch 128). MaxQ's dense share falls linearly to 0 over the first 25% of the budget (75% for
1:16, docs/design/methods.md §3.3). The other methods are N:M from the first step. ``dense`` is the same
fine-tune without sparsity, the control for "more epochs". The peer is NVIDIA ModelOpt's
``sparse_magnitude`` 2:4 (``--peer``; needs ``nvidia-modelopt``, ``requests`` and
``huggingface_hub``, installed for the benchmark only), fine-tuned with the same loop.

Each run is finalized, exported, quantised to INT8 (min-max, 512 class-balanced training images)
and measured on the 10,000 test images. Every run writes its own JSON under ``--runs``, and a
re-run skips finished runs, so the sweep can be stopped and resumed.

    python -m benchmarks.accuracy --write                      # the whole sweep (about 1.5 h on 2 cores)
    python -m benchmarks.accuracy --seeds 1 --epochs 2 --patterns 2:4 --methods maxq   # a quick look
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks._results import mean_cell, write_section
from nmdeploy.data import ArrayData
from nmdeploy.train import TrainConfig, fit, top1_accuracy

RUNS = Path(__file__).with_name("runs") / "accuracy"  # per-run JSON is committed; weights and ONNX files are not
METHODS = ("asp", "ste", "srste", "maxq")
PATTERNS = ("2:4", "1:4", "1:16")
SPARSITY = {"2:4": 50.0, "1:4": 75.0, "1:16": 93.75}


def _data(split_seed: int = 0, subset: int = 0) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    from nmdeploy.examples.fashion_mnist.data import load

    x, y = load("train")
    order = np.random.default_rng(split_seed).permutation(len(x))
    held, train = order[:5000], order[5000:]
    if subset:
        held, train = held[: max(1, subset // 10)], train[:subset]  # a quick look, not a result
    xt, yt = load("test")
    as_t = lambda a, b: (torch.from_numpy(np.ascontiguousarray(a)), torch.from_numpy(b))  # noqa: E731
    return {"train": as_t(x[train], y[train]), "val": as_t(x[held], y[held]), "test": as_t(xt, yt)}


def _model(init_seed: int = 0) -> torch.nn.Module:
    from nmdeploy.examples.fashion_mnist.model import FashionResNet

    torch.manual_seed(init_seed)
    return FashionResNet()


def train_dense(data, runs: Path, epochs: int) -> dict:
    """The converged starting point: dense training, cosine schedule, checkpointed per epoch."""
    record = runs / "dense.json"
    if record.is_file() and (runs / "dense.pt").is_file():
        return json.loads(record.read_text())
    recorded = json.loads(record.read_text()) if record.is_file() else None  # a fresh checkout: retrain, then compare
    model = _model()
    began = time.perf_counter()
    result = fit(
        model,
        data["train"],
        data["val"],
        TrainConfig(epochs=epochs, lr=0.1),
        checkpoint=runs / "dense.ckpt",
        on_epoch=lambda m: print(f"dense epoch {m.epoch}/{epochs}: val {m.val_score:.2%}", flush=True),
    )
    torch.save({"model": model.state_dict()}, runs / "dense.pt")
    vals = [m.val_score for m in result.history]
    summary = {
        "epochs": epochs,
        "val": vals,
        "test_top1": top1_accuracy(model, *data["test"]),
        "last5_gain_pt": 100 * (vals[-1] - vals[-6]) if len(vals) > 5 else None,
        "seconds": time.perf_counter() - began,
    }
    (runs / "dense.ckpt").unlink(missing_ok=True)
    if recorded is not None:
        if recorded["test_top1"] != summary["test_top1"]:
            print(
                f"warning: the retrained dense model scores {summary['test_top1']:.4f}, the recorded one {recorded['test_top1']:.4f}; "
                "the runs already recorded started from the recorded one (another machine or library version?)",
                flush=True,
            )
        return recorded
    record.write_text(json.dumps(summary, indent=2))
    return summary


def _quantised_top1(model: torch.nn.Module, data, folder: Path) -> tuple[float, float]:
    """(FP32 ONNX top-1, INT8 top-1) on the test set, calibrated on 512 class-balanced training images."""
    import nmdeploy
    from nmdeploy.quant.calibset import make_calibration_set

    x, y = data["train"]
    calib, _ = make_calibration_set(ArrayData({"x": x.numpy()}, y.numpy(), "fashion-mnist", "train"), 512, 0)
    test = ArrayData({"x": data["test"][0].numpy()}, data["test"][1].numpy(), "fashion-mnist", "test")
    nmdeploy.export_onnx(model, data["test"][0][:2], folder / "model.onnx")
    report = nmdeploy.quantize_int8(folder / "model.onnx", folder / "model.int8.onnx", calib, "minmax", eval_data=test)
    return report.accuracy.reference_top1, report.accuracy.top1


def _sparsify_peer(model: torch.nn.Module):
    """ModelOpt's magnitude 2:4 (its own layer rules: out % 8 and in % 16)."""
    import modelopt.torch.sparsity as mts

    return mts.sparsify(model, "sparse_magnitude")


def run_one(
    data,
    runs: Path,
    method: str,
    pattern: str,
    seed: int,
    epochs: int,
    end_fraction: float | None = None,
    *,
    options: dict | None = None,
    scratch: bool = False,
    lr: float = 0.02,
    init_seed: int = 0,
    distill: object = None,
    permute: bool = False,
) -> dict:
    """Fine-tune the dense model with ``method`` at ``pattern``; resumable through its checkpoint.

    ``options`` go to the method (e.g. ``{"tau": 1e-3}``); ``scratch`` starts from the untrained
    model drawn from ``init_seed`` instead of the converged dense one (the setting of the MaxQ and
    SR-STE papers). ``distill`` (a :class:`nmdeploy.train.Distill`) trains towards the dense
    start's logits as well as the labels. ``permute``: channel permutation before the first mask
    (``sparsity.permute``), searched on 16 held-out images.
    """
    import nmdeploy

    name = f"{method}-{pattern.replace(':', 'of')}-s{seed}"
    record = runs / f"{name}.json"
    if record.is_file():
        return json.loads(record.read_text())
    model = _model(init_seed if scratch else 0)
    if not scratch:
        model.load_state_dict(torch.load(runs / "dense.pt", weights_only=True)["model"])
    end = round((end_fraction if end_fraction is not None else 0.75 if pattern == "1:16" else 0.25) * epochs)
    sp = None
    if method == "modelopt":
        model = _sparsify_peer(model)
    elif method != "dense":
        sp = nmdeploy.sparsify(
            model,
            pattern,
            method,
            "linear",
            0,
            end,
            options=options,
            permute=permute,
            example_inputs=(data["val"][0][:16],) if permute else None,
        )
    config = TrainConfig(epochs=epochs, lr=lr, seed=seed)
    teacher = None
    if distill is not None:
        teacher = _model()
        teacher.load_state_dict(torch.load(runs / "dense.pt", weights_only=True)["model"])
    began = time.perf_counter()
    result = fit(
        model,
        data["train"],
        data["val"],
        config,
        sp,
        runs / f"{name}.ckpt",
        on_epoch=lambda m: print(f"{name} epoch {m.epoch}/{epochs}: val {m.val_score:.2%}", flush=True),
        teacher=teacher,
        distill=distill,  # type: ignore[arg-type]
    )
    if method == "modelopt":
        import modelopt.torch.sparsity as mts

        model = mts.export(model)
    else:
        nmdeploy.finalize(model)
    fp32 = top1_accuracy(model, *data["test"])
    folder = runs / name
    folder.mkdir(exist_ok=True)
    onnx_top1, int8_top1 = _quantised_top1(model, data, folder)
    summary = {
        "method": method,
        "pattern": pattern,
        "seed": seed,
        "epochs": epochs,
        "end_epoch": end if sp else None,
        **({"options": options} if options else {}),
        **({"scratch": True, "lr": lr} if scratch else {}),
        **({"distill": dataclasses.asdict(distill)} if distill is not None else {}),  # type: ignore[call-overload]
        **({"permuted_layers": sum(r.permuted for r in sp.permutation)} if permute and sp else {}),
        "fp32_top1": fp32,
        "onnx_top1": onnx_top1,
        "int8_top1": int8_top1,
        "val": [m.val_score for m in result.history],
        "seconds": time.perf_counter() - began,
    }
    record.write_text(json.dumps(summary, indent=2))
    (runs / f"{name}.ckpt").unlink(missing_ok=True)
    return summary


def summarise(runs: Path, dense: dict, methods: list[str], patterns: list[str]) -> tuple[str, dict]:
    rows = [json.loads(p.read_text()) for p in sorted(runs.glob("*-s*.json"))]
    by = {}
    for r in rows:
        by.setdefault((r["method"], r["pattern"]), []).append(r)
    lines = [
        "| method | pattern | sparsity | runs | FP32 top-1 (%) | INT8 top-1 (%) |",
        "|---|---|---|---|---|---|",
        f"| dense (converged start) | – | 0% | 1 | {100 * dense['test_top1']:.2f} | – |",
    ]
    means = {}
    for method in ["dense", *methods, "modelopt"]:
        for pattern in ["–"] if method == "dense" else patterns if method != "modelopt" else ["2:4"]:
            got = by.get((method, "2:4" if method == "dense" else pattern), [])
            if not got:
                continue
            label = (
                f"dense (+{got[0]['epochs']} epochs)"
                if method == "dense"
                else "ModelOpt sparse_magnitude"
                if method == "modelopt"
                else method
            )
            fp32, int8 = [r["fp32_top1"] for r in got], [r["int8_top1"] for r in got]
            means[(method, pattern)] = statistics.fmean(fp32)
            sparsity = "0%" if method == "dense" else f"{SPARSITY[pattern]:g}%"
            lines.append(
                f"| {label} | {pattern} | {sparsity} | {len(got)} | {mean_cell(fp32, 100)} | {mean_cell(int8, 100)} |"
            )
    return "\n".join(lines), means


def goals(dense: dict, means: dict) -> list[str]:
    out = []
    if ("maxq", "2:4") in means:
        gap = 100 * (means[("maxq", "2:4")] - dense["test_top1"])
        out.append(f"MaxQ 2:4 vs converged dense: {gap:+.2f} pt (goal >= -0.30): {'met' if gap >= -0.3 else 'NOT met'}")
    if ("maxq", "1:16") in means and ("srste", "1:16") in means:
        gap = 100 * (means[("maxq", "1:16")] - means[("srste", "1:16")])
        out.append(f"MaxQ 1:16 vs SR-STE 1:16: {gap:+.2f} pt (goal >= +1.00): {'met' if gap >= 1.0 else 'NOT met'}")
    for pattern in PATTERNS:
        trio = [means.get((m, pattern)) for m in ("asp", "srste", "maxq")]
        if None not in trio:
            ok = trio[0] <= trio[1] <= trio[2]
            out.append(
                f"{pattern}: ASP {100 * trio[0]:.2f} <= SR-STE {100 * trio[1]:.2f} <= MaxQ {100 * trio[2]:.2f}: "
                f"{'holds' if ok else 'does NOT hold'}"
            )
    return out


def plot(runs: Path, methods: list[str], patterns: list[str], dense: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(p.read_text()) for p in runs.glob("*-s*.json")]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for method in [*methods, "modelopt"]:
        xs, ys, es = [], [], []
        for pattern in patterns:
            vals = [100 * r["fp32_top1"] for r in rows if r["method"] == method and r["pattern"] == pattern]
            if vals:
                xs.append(SPARSITY[pattern])
                ys.append(statistics.fmean(vals))
                es.append(statistics.stdev(vals) if len(vals) > 1 else 0.0)
        if xs:
            ax.errorbar(
                xs, ys, yerr=es, marker="o", capsize=3, label="ModelOpt magnitude" if method == "modelopt" else method
            )
    ax.axhline(100 * dense["test_top1"], color="grey", ls="--", lw=1, label="dense")
    ax.set_xticks([SPARSITY[p] for p in patterns], [f"{p}\n{SPARSITY[p]:g}%" for p in patterns])
    ax.set_xlabel("N:M pattern (sparsity of the sparsified layers)")
    ax.set_ylabel("test top-1 (%)")
    ax.set_title("FashionResNet, same fine-tune budget per method")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=12, help="fine-tune budget per method")
    parser.add_argument("--dense-epochs", type=int, default=30)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--patterns", default=",".join(PATTERNS))
    parser.add_argument(
        "--peer", action="store_true", help="also ModelOpt sparse_magnitude 2:4 (needs nvidia-modelopt)"
    )
    parser.add_argument("--runs", type=Path, default=RUNS, help="folder of the per-run JSON files (resumable)")
    parser.add_argument(
        "--end-fraction",
        type=float,
        default=None,
        help="MaxQ's schedule end as a share of the budget (default: 0.25, 0.75 for 1:16); an ablation",
    )
    parser.add_argument("--no-control", action="store_true", help="skip the dense fine-tune control")
    parser.add_argument("--train-subset", type=int, default=0, help="train on this many images only (a smoke test)")
    parser.add_argument("--summary-only", action="store_true", help="only summarise the runs already in --runs")
    parser.add_argument(
        "--write", action="store_true", help="rewrite this section of benchmarks/RESULTS.md and the plot"
    )
    args = parser.parse_args(argv)
    methods, patterns = args.methods.split(","), args.patterns.split(",")
    args.runs.mkdir(parents=True, exist_ok=True)
    if args.summary_only:
        dense = json.loads((args.runs / "dense.json").read_text())
    else:
        data = _data(subset=args.train_subset)
        dense = train_dense(data, args.runs, args.dense_epochs)
        for seed in range(args.seeds):
            for pattern in patterns:
                for method in methods:
                    run_one(data, args.runs, method, pattern, seed, args.epochs, args.end_fraction)
            if not args.no_control:
                run_one(data, args.runs, "dense", "2:4", seed, args.epochs)
            if args.peer:
                run_one(data, args.runs, "modelopt", "2:4", seed, args.epochs)
    table, means = summarise(args.runs, dense, methods, patterns)
    recorded = len(list(args.runs.glob("*-s*.json")))
    planned = args.seeds * (len(methods) * len(patterns) + 1 + (1 if args.peer else 0))
    checks = goals(dense, means)
    gain = dense.get("last5_gain_pt")
    body = "\n".join(
        [
            f"Command: `python -m benchmarks.accuracy {' '.join(a for a in (argv if argv is not None else sys.argv[1:]) if a != '--summary-only')}`.",
            "",
            f"Start: FashionResNet 16/32/64 trained dense for {dense['epochs']} epochs (cosine), held-out validation top-1 "
            f"{100 * dense['val'][-1]:.2f}% ({'gain over the last 5 epochs: ' + format(gain, '+.2f') + ' pt' if gain is not None else 'too few epochs to judge convergence'}), "
            f"test top-1 {100 * dense['test_top1']:.2f}%. "
            f"Fine-tune budget per method: {args.epochs} epochs, lr 0.02 cosine; MaxQ's schedule ends at "
            f"{'25% of it (75% for 1:16)' if args.end_fraction is None else format(args.end_fraction, '.0%') + ' of it'}. "
            "Mean ± std over seeds (data order); test set 10,000 images; INT8 = min-max Q/DQ on ONNX Runtime CPU.",
            "",
            f"Runs recorded: {recorded} of {planned}"
            + (
                ""
                if recorded >= planned
                else " — **the sweep is not finished**; the same command resumes it (finished runs are kept)"
            )
            + ".",
            "",
            table,
            "",
            *(f"- {c}" for c in checks),
            "",
            "![accuracy vs sparsity](accuracy.png)",
        ]
    )
    print(body)
    if args.write:
        plot(args.runs, methods, patterns, dense, Path(__file__).with_name("accuracy.png"))
        write_section("Accuracy: MaxQ vs baselines and a peer (Fashion-MNIST)", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

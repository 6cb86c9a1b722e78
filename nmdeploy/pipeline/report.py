"""``report.md`` and its plots: what a build made, how accurate each artifact is, which layers are 2:4.

Plots are drawn with matplotlib's Agg backend (no display needed) and, like the report,
written atomically, so a report on disk always belongs to one finished build.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nmdeploy._atomic import write_all_atomic

__all__ = ["PLOTS", "write_report"]

PLOTS = ("training.png", "accuracy.png", "layers.png")  # written beside report.md

_LABELS = {
    "dense": "dense (PyTorch)",
    "sparse": "sparse (PyTorch)",
    "sparse_onnx": "sparse (ONNX FP32)",
    "int8": "sparse INT8 (ONNX)",
}


def _figure_bytes(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()


def _training_plot(plt: Any, stages: Mapping[str, Any], metric: str) -> bytes | None:
    dense = stages.get("dense", {}).get("metrics", {}).get("history") or []
    sparse = stages.get("sparse", {}).get("metrics", {}).get("history") or []
    if not dense and not sparse:
        return None
    scale = 100 if metric == "top-1" else 1
    fig, (acc_ax, loss_ax) = plt.subplots(1, 2, figsize=(10, 3.6))
    offset = len(dense)
    for rows, start, label, colour in (
        (dense, 0, "dense pre-training", "tab:blue"),
        (sparse, offset, "sparse fine-tune", "tab:orange"),
    ):
        if not rows:
            continue
        epochs = [start + r["epoch"] for r in rows]
        acc_ax.plot(epochs, [scale * (r["val_score"] or 0) for r in rows], "o-", color=colour, label=f"{label}, val")
        acc_ax.plot(
            epochs, [scale * r["train_score"] for r in rows], "--", color=colour, alpha=0.6, label=f"{label}, train"
        )
        loss_ax.plot(epochs, [r["train_loss"] for r in rows], "o-", color=colour, label=label)
    for ax in (acc_ax, loss_ax):
        if dense and sparse:
            ax.axvline(offset + 0.5, color="grey", lw=0.8, ls=":")
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    acc_ax.set_ylabel("top-1 (%)" if metric == "top-1" else metric)
    acc_ax.legend(fontsize=8)
    loss_ax.set_ylabel("training loss")
    loss_ax.legend(fontsize=8)
    fig.suptitle("Training curves")
    return _figure_bytes(fig)


def _accuracy_plot(plt: Any, accuracy: Mapping[str, Any]) -> bytes | None:
    names = [k for k in _LABELS if k in accuracy]
    if not names:
        return None
    metric = accuracy.get("metric", "top-1")
    scale = 100 if metric == "top-1" else 1
    values = [scale * accuracy[k] for k in names]
    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    bars = ax.bar(
        [_LABELS[k] for k in names], values, color=["tab:blue", "tab:orange", "tab:green", "tab:red"][: len(names)]
    )
    for bar, value in zip(bars, values):
        ax.text(
            bar.get_x() + bar.get_width() / 2,
            value,
            f"{value:.2f}" if scale == 100 else f"{value:.4f}",
            ha="center",
            va="bottom",
            fontsize=9,
        )
    low, high = min(values), max(values)
    pad = max(2.0, 0.5 * (high - low)) if scale == 100 else max(0.02, 0.5 * (high - low))
    ax.set_ylim(max(0.0, low - pad), min(float(scale), high + pad * 0.75))
    ax.set_ylabel("validation top-1 (%)" if scale == 100 else f"validation {metric} to the dense model")
    ax.set_title(f"{'Top-1' if scale == 100 else metric.capitalize()} per stage")
    ax.tick_params(axis="x", labelsize=8)
    return _figure_bytes(fig)


def _layers_plot(plt: Any, verify: Mapping[str, Any]) -> bytes | None:
    layers = verify.get("layers") or []
    if not layers:
        return None
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(layers) + 1.2))
    names = [layer["weight"] for layer in layers]
    colours = [
        "tab:green"
        if layer["required"] and layer["ok"]
        else "tab:red"
        if not layer["ok"] and layer["required"]
        else "tab:grey"
        for layer in layers
    ]
    ax.barh(names, [100 * layer["sparsity"] for layer in layers], color=colours)
    for i, layer in enumerate(layers):
        status = (
            f"{verify.get('pattern')} verified"
            if layer["required"] and layer["ok"]
            else ("VIOLATES" if layer["required"] else "dense")
        )
        ax.text(
            1,
            i,
            status + (f" · pays: {layer['likely_to_pay']}" if layer.get("likely_to_pay") and layer["required"] else ""),
            va="center",
            fontsize=7,
            color="black" if status == "dense" else "white",
        )
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("zeros in the weight (%)")
    ax.set_title("Per-layer sparsity and 2:4 status (model.onnx)")
    ax.tick_params(axis="y", labelsize=7)
    return _figure_bytes(fig)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
        *("| " + " | ".join(r) + " |" for r in rows),
    ]


def _show(metrics: Mapping[str, Any], value: float) -> str:
    return f"{value:.2%}" if metrics.get("metric", "top-1") == "top-1" else f"{value:.4f}"


def _stage_summary(name: str, record: Mapping[str, Any]) -> str:
    m = record.get("metrics") or {}
    if name in ("dense", "sparse") and m.get("val_score") is not None:
        epochs = len(m.get("history") or [])
        how = f" after {epochs} epoch(s)" if epochs else " (pretrained)"
        if name == "sparse" and m.get("one_shot"):
            how = " one-shot: pruned by magnitude, not fine-tuned (finetune.epochs = 0)"
        elif name == "sparse" and m.get("distill"):
            d = m["distill"]
            how += f", distilled from the dense model (weight {d['weight']:g}, temperature {d['temperature']:g})"
        return f"val {m.get('metric', 'top-1')} {_show(m, m['val_score'])}" + how
    if name == "export" and "max_abs_error" in m:
        return f"opset {m['opset']}, ONNX Runtime vs PyTorch max abs diff {m['max_abs_error']:.1e}"
    if name == "verify" and "nm_layers" in m:
        return f"{m['nm_layers']} N:M layer(s) verified of {m['layers']}"
    if name == "quantize" and m.get("int8_score") is not None:
        return (
            f"INT8 {m['metric']} {_show(m, m['int8_score'])} (FP32 ONNX {_show(m, m['onnx_score'])}), "
            f"{m['nm_layers']} layer(s) kept N:M"
        )
    if name == "engine" and record.get("status") == "bundled":
        return (
            f"bundled for target: `{m.get('bundle')}/` (run `python3 build_engine.py` there on the GPU); "
            f"here: {m.get('problem', '')}"
        )
    if name == "engine" and m.get("built"):
        return (
            f"model.plan with TensorRT {m['tensorrt']} ({', '.join(m['flags'])}); sparse kernels picked for "
            f"{m['picked_layers']} of {m['eligible_layers']} eligible layer(s), see engine_report.json"
        )
    if name == "serve" and m.get("models"):
        waits = f"; `{m['pending']}` waits for its plan from the target bundle" if m.get("pending") else ""
        return f"Triton model repository `{m['repository']}/`: {', '.join(f'`{x}`' for x in m['models'])}{waits}"
    return record.get("note", "")


def write_report(out: Path, manifest: Mapping[str, Any], verify: Mapping[str, Any] | None, command: str) -> Path:
    """Write ``report.md`` and its PNGs to ``out`` from the manifest and ``verify.json``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = manifest.get("stages", {})
    accuracy = manifest.get("accuracy", {})
    metric = accuracy.get("metric", "top-1")
    plots = {
        "training.png": _training_plot(plt, stages, metric),
        "accuracy.png": _accuracy_plot(plt, accuracy),
        "layers.png": _layers_plot(plt, verify or {}),
    }
    plt.close("all")
    recipe = manifest.get("recipe", {})
    sp = recipe.get("sparsity", {})
    lines = [
        f"# nmdeploy build: {recipe.get('model', {}).get('spec', '?')}, {sp.get('method')} {sp.get('pattern')}",
        "",
        f"Made by `{command}`; the full recipe and the input/output hashes are in `manifest.json`.",
        "",
    ]
    lines += ["## Stages", ""]
    lines += _table(
        ["stage", "status", "seconds", "result"],
        [
            [name, r.get("status", ""), f"{r.get('seconds', 0):.1f}", _stage_summary(name, r)]
            for name, r in stages.items()
        ],
    )
    scores = {k: v for k, v in accuracy.items() if k in _LABELS}
    if scores:
        dense = scores.get("dense")
        top1 = metric == "top-1"
        lines += ["", f"## Accuracy (validation {metric})", ""]
        lines += _table(
            ["artifact", metric, "vs dense"],
            [
                [
                    _LABELS[k],
                    f"{100 * v:.2f}%" if top1 else f"{v:.4f}",
                    ""
                    if dense is None or k == "dense"
                    else (f"{100 * (v - dense):+.2f} pt" if top1 else f"{v - dense:+.4f}"),
                ]
                for k, v in scores.items()
            ],
        )
    for name, title in (
        ("accuracy.png", "Top-1 per stage"),
        ("training.png", "Training curves"),
        ("layers.png", "Per-layer sparsity"),
    ):
        if plots[name] is not None:
            lines += ["", f"![{title}]({name})"]
    permutation = (stages.get("sparse", {}).get("metrics") or {}).get("permutation")
    if permutation:
        lines += ["", "## Channel permutation (share of weight magnitude the N:M mask keeps)", ""]
        lines += _table(
            ["layer", "permuted", "kept before", "kept after", "gain", "why not"],
            [
                [
                    r["layer"],
                    "yes" if r["permuted"] else "no",
                    f"{100 * r['kept_before']:.2f}%",
                    f"{100 * r['kept_after']:.2f}%",
                    f"{100 * r['gain']:+.2f}%" if r["permuted"] else "–",
                    r["reason"] or "",
                ]
                for r in permutation
            ],
        )
    if verify and verify.get("layers"):
        lines += ["", f"## Layers of model.onnx ({verify.get('pattern')} verifier)", ""]
        lines += _table(
            ["weight", "op", "shape", "zeros", "status", "2:4 kernel eligible", "likely to pay"],
            [
                [
                    layer["weight"],
                    layer["op"],
                    "x".join(map(str, layer["shape"])),
                    f"{100 * layer['sparsity']:.1f}%",
                    ("verified" if layer["ok"] else f"{layer['violations']} bad group(s)")
                    if layer["required"]
                    else "dense",
                    "yes" if layer["hw_2of4"] and layer["required"] else "no",
                    f"{layer['likely_to_pay']}: {layer['pay_reason']} ({layer['gemm']})"
                    if layer.get("likely_to_pay") and layer["required"]
                    else "",
                ]
                for layer in verify["layers"]
            ],
        )
    versions = manifest.get("versions", {})
    lines += ["", "## Versions", "", ", ".join(f"{k} {v}" for k, v in versions.items()), ""]
    report = out / "report.md"
    write_all_atomic(
        [*((out / name, data) for name, data in plots.items() if data is not None), (report, "\n".join(lines))]
    )
    return report

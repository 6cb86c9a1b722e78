"""nmdeploy verify against `polygraphy inspect sparsity` on the same ~100M-parameter ONNX model.

The model (built here with onnx.helper, no torch export) holds 4 Gemm weights of 4096x4096 and
14 Conv weights of 512x512x3x3, all exactly 2:4 along TensorRT's axis — the worst case for
polygraphy, whose checker visits every group in Python. Both tools read the same file in one
run; nmdeploy is timed end to end (load + check, median of 3) and for the check alone.

    python -m benchmarks.verify_speed            # prints the table
    python -m benchmarks.verify_speed --write    # also rewrites its section of RESULTS.md
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from rich.console import Console
from rich.table import Table

from benchmarks._results import write_section
from nmdeploy.export.verify import load_onnx, verify_model, verify_onnx


def _sparse_24(shape: tuple[int, ...], axis: int, rng: np.random.Generator) -> np.ndarray:
    w = rng.standard_normal(shape, dtype=np.float32) + np.float32(0.01)
    moved = np.moveaxis(w, axis, -1).copy()
    groups = moved.reshape(-1, 4)
    drop = np.argsort(rng.random(groups.shape, dtype=np.float32), axis=1)[:, :2]
    np.put_along_axis(groups, drop, 0.0, axis=1)
    return np.ascontiguousarray(np.moveaxis(groups.reshape(moved.shape), -1, axis))


def _rate(weight_bytes: int, seconds: float) -> str:
    rate = weight_bytes / seconds
    return f"{rate / 1e9:.2f} GB/s" if rate >= 1e8 else f"{rate / 1e6:.1f} MB/s"


def build_model(path: Path, linears: int = 4, convs: int = 14, seed: int = 0) -> int:
    """Write the benchmark model; returns its weight bytes."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    x = "x"
    for i in range(convs):
        name = f"conv{i}.weight"
        inits.append(numpy_helper.from_array(_sparse_24((512, 512, 3, 3), 1, rng), name))
        nodes.append(helper.make_node("Conv", [x, name], [f"c{i}"], pads=[1, 1, 1, 1], name=f"conv{i}"))
        x = f"c{i}"
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["pooled"]))
    nodes.append(helper.make_node("Flatten", ["pooled"], ["flat"]))
    nodes.append(helper.make_node("Tile", ["flat", "reps"], ["h0"]))
    inits.append(numpy_helper.from_array(np.array([1, 8], np.int64), "reps"))
    x = "h0"
    for i in range(linears):
        name = f"fc{i}.weight"
        inits.append(numpy_helper.from_array(_sparse_24((4096, 4096), 1, rng), name))
        nodes.append(helper.make_node("Gemm", [x, name], [f"h{i + 1}"], transB=1, name=f"fc{i}"))
        x = f"h{i + 1}"
    graph = helper.make_graph(
        nodes,
        "verify_speed",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 512, 8, 8])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, None)],
        inits,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return sum(numpy_helper.to_array(t).nbytes for t in inits if t.name != "reps")


def run_polygraphy(path: Path) -> tuple[float, int, int]:
    """Wall time of `polygraphy inspect sparsity`, and the sparse / non-sparse tensors it logged."""
    exe = Path(sys.executable).parent / "polygraphy"
    start = time.perf_counter()
    proc = subprocess.run([str(exe), "inspect", "sparsity", str(path)], capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    text = proc.stdout + proc.stderr
    return elapsed, text.count("Found sparse tensor:"), text.count("Found non-sparse tensor:")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--linears", type=int, default=4)
    parser.add_argument("--convs", type=int, default=14)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-polygraphy", action="store_true", help="time nmdeploy only")
    parser.add_argument("--write", action="store_true", help="rewrite this benchmark's section of RESULTS.md")
    args = parser.parse_args(argv)
    console = Console()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.onnx"
        with console.status("building the model"):
            weight_bytes = build_model(path, args.linears, args.convs)
        params = weight_bytes // 4
        with console.status("nmdeploy verify"):
            end_to_end = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                report = verify_onnx(path)
                end_to_end.append(time.perf_counter() - start)
            loaded = load_onnx(path)
            check_only = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                verify_model(loaded)
                check_only.append(time.perf_counter() - start)
        ours = statistics.median(end_to_end)
        ours_check = statistics.median(check_only)
        ours_sparse = sum(layer.hw_2of4 for layer in report.layers)
        poly = None
        if not args.skip_polygraphy:
            with console.status("polygraphy inspect sparsity (a few minutes)"):
                poly = run_polygraphy(path)
    table = Table(
        title=f"2:4 verification of a {params / 1e6:.0f}M-parameter ONNX model ({weight_bytes / 1e9:.2f} GB of weights)"
    )
    for col in ("tool", "seconds", "weights checked per second", "2:4 tensors found"):
        table.add_column(col)
    rows = [
        ("nmdeploy verify (load + check)", ours, f"{ours_sparse}/{len(report.layers)}"),
        ("nmdeploy verify (check only)", ours_check, f"{ours_sparse}/{len(report.layers)}"),
    ]
    if poly is not None:
        rows.append(("polygraphy inspect sparsity", poly[0], f"{poly[1]}/{poly[1] + poly[2]}"))
    for name, seconds, found in rows:
        table.add_row(name, f"{seconds:.2f}", _rate(weight_bytes, seconds), found)
    console.print(table)
    if poly is not None:
        console.print(
            f"speed-up end to end: {poly[0] / ours:.0f}x (target >= 20x); check only: {weight_bytes / ours_check / 1e9:.2f} GB/s (target >= 1 GB/s)"
        )
    if args.write and poly is not None:
        body = "\n".join(
            [
                f"Command: `python -m benchmarks.verify_speed --write` (torch-free; numpy {np.__version__}, onnx {onnx.__version__}, "
                f"{platform.machine()}, {os.cpu_count()} cores). Model: {args.convs} Conv 512x512x3x3 + {args.linears} Gemm 4096x4096, "
                f"{params / 1e6:.1f}M parameters, all 2:4; both tools read the same file in one run.",
                "",
                "| tool | seconds | weights checked per second | 2:4 tensors found |",
                "|---|---|---|---|",
                *[
                    f"| {name} | {seconds:.2f} | {_rate(weight_bytes, seconds)} | {found} |"
                    for name, seconds, found in rows
                ],
                "",
                f"Speed-up over polygraphy, end to end: **{poly[0] / ours:.0f}x** (target >= 20x). "
                f"Check alone: **{weight_bytes / ours_check / 1e9:.2f} GB/s** (target >= 1 GB/s).",
            ]
        )
        write_section("ONNX 2:4 verification speed (benchmarks/verify_speed.py)", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())

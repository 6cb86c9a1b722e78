"""GPU proof: 2:4 semi-structured matmuls against dense ones, for every sparse layer shape we ship for.

``bash benchmarks/gpu_proof.sh`` runs it on a GPU machine (with ``tests/gpu`` first); this module
is its Python half:

- ``--shapes`` (here, on the CPU): the GEMM of every layer nmdeploy sparsifies (its layer
  selection, ``exclude: auto``) in the built-in FashionResNet, MiniLM-L6, ResNet-50 and
  BERT-base, the last three built from their ``transformers`` configs, by forward hooks on one
  batch: M = batch × output positions, N = output channels, K = input channels × kernel size.
  Written to ``benchmarks/gpu_shapes.json`` (committed), so the GPU machine needs neither
  ``transformers`` nor the models.
- ``--run`` (on the GPU): for each distinct (M, N, K) a random weight pruned 2:4 along K and a
  random activation; ``F.linear`` with the dense weight against the same weight as PyTorch's
  ``to_sparse_semi_structured`` (cuSPARSELt / CUTLASS), fp16, and int8 where the backend takes
  it (dense int8 through ``torch._int_mm``). Interleaved, CUDA events, median of the runs.
  Also the device name, the versions and the ``tests/gpu`` summary, into one JSON.
  ``--dry-run`` takes the same path on the CPU with every step but the sparse timing.
- ``--trt-samples DIR`` (where TensorRT is importable): builds the example engine and keeps
  TensorRT's real inspector JSON and build log, for ``tests/engine/samples/``.
- ``--write``: the ``GPU proof`` section of RESULTS.md from ``benchmarks/runs/gpu_proof/gpu_proof.json``.

    python -m benchmarks.gpu_proof --shapes            # CPU: refresh benchmarks/gpu_shapes.json
    bash benchmarks/gpu_proof.sh                       # GPU: tests/gpu + timing + samples (<= 8 min)
    bash benchmarks/gpu_proof.sh --dry-run             # CPU: everything but the timing
    python -m benchmarks.gpu_proof --write             # RESULTS.md from the JSON
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from benchmarks._results import write_section

HERE = Path(__file__).resolve().parent
SHAPES = HERE / "gpu_shapes.json"
RESULT = HERE / "runs" / "gpu_proof" / "gpu_proof.json"
DRY = HERE / "runs" / "gpu_proof" / "dry_run.json"  # never where a GPU result lives
BATCH = 32  # engine.opt_batch: the batch the engines are tuned for
TOKENS = 128  # data.max_length


# -- shapes (CPU) -----------------------------------------------------------------------------------------


def _models() -> dict:
    """name -> (model, example inputs): the built-in example and three real architectures from their configs."""
    import torch
    import transformers

    from nmdeploy.examples.fashion_mnist import FashionResNet

    torch.manual_seed(0)
    ids = torch.zeros(BATCH, TOKENS, dtype=torch.long)
    minilm = transformers.BertConfig(  # all-MiniLM-L6-v2's shape: 6 layers of 384, FFN 1536
        hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536
    )
    return {
        "fashion-resnet": (FashionResNet(), (torch.zeros(BATCH, 1, 28, 28),)),
        "minilm-l6": (transformers.BertModel(minilm), (ids,)),
        "resnet-50": (
            transformers.ResNetForImageClassification(transformers.ResNetConfig(num_labels=1000)),
            (torch.zeros(BATCH, 3, 224, 224),),
        ),
        "bert-base": (transformers.BertForSequenceClassification(transformers.BertConfig(num_labels=2)), (ids,)),
    }


def gemm_shapes(model, inputs) -> list[dict]:
    """One row per sparsified layer: its name and GEMM (M, N, K) on ``inputs``."""
    import torch
    from torch import nn

    from nmdeploy.sparsity.targets import select_layers

    found = []

    def hook(name):
        def record(module, args, output):
            x = args[0]
            if isinstance(module, nn.Conv2d):
                m = output.shape[0] * output.shape[2] * output.shape[3]
                k = module.in_channels // module.groups * math.prod(module.kernel_size)
                n = module.out_channels
            else:
                m, k, n = math.prod(x.shape[:-1]), module.in_features, module.out_features
            found.append({"layer": name, "m": int(m), "n": int(n), "k": int(k)})

        return record

    handles = [
        t.module.register_forward_hook(hook(t.name))
        for t in select_layers(model, 4)
        if t.eligible and isinstance(t.module, (nn.Conv2d, nn.Linear))
    ]
    with torch.no_grad():
        model.eval()(*inputs)
    for h in handles:
        h.remove()
    return found


def collect_shapes() -> dict:
    models = {}
    for name, (model, inputs) in _models().items():
        layers = gemm_shapes(model, inputs)
        distinct: dict[tuple[int, int, int], list[str]] = {}
        for row in layers:
            distinct.setdefault((row["m"], row["n"], row["k"]), []).append(row["layer"])
        models[name] = [{"m": m, "n": n, "k": k, "layers": names} for (m, n, k), names in distinct.items()]
    return {"batch": BATCH, "tokens": TOKENS, "models": models}


# -- timing (GPU) -----------------------------------------------------------------------------------------


def _pruned(n: int, k: int, dtype, device):
    """A random [n, k] weight with nmdeploy's 2:4 mask along k (the reduction axis)."""
    import torch

    from nmdeploy.sparsity.nm import nm_mask

    w = torch.randn(n, k, device=device)
    w = w * nm_mask(w, 2, 4)
    if dtype == torch.int8:
        return (w * 32).round().clamp(-127, 127).to(torch.int8)
    return w.to(dtype)


def _median_ms(fn, warmup: int, iterations: int, cuda: bool) -> float:
    import torch

    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iterations):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        else:
            began = time.perf_counter()
            fn()
            times.append(1e3 * (time.perf_counter() - began))
    return statistics.median(times)


def time_shape(m: int, n: int, k: int, dtype_name: str, dry_run: bool, warmup: int = 10, iterations: int = 50) -> dict:
    """Dense and 2:4 time of ``x @ w.T`` (x [m, k], w [n, k]); dense / sparse is the speed-up."""
    import torch
    import torch.nn.functional as F

    from nmdeploy.sparsity.nm import is_nm_sparse

    device = "cpu" if dry_run else "cuda"
    dtype = {"fp16": torch.float16, "int8": torch.int8}[dtype_name]
    if dry_run:
        m, iterations, warmup = min(m, 64), 1, 0  # the path, not the speed
    row = {"m": m, "n": n, "k": k, "dtype": dtype_name}
    w = _pruned(n, k, dtype, device)
    assert is_nm_sparse(w.float(), 2, 4)
    if dtype == torch.int8:
        x = torch.randint(-64, 64, (m, k), dtype=torch.int8, device=device)
        dense = (lambda: x.float() @ w.float().t()) if dry_run else (lambda: torch._int_mm(x, w.t()))
    else:
        x = torch.randn(m, k, device=device).to(dtype if not dry_run else torch.float32)
        wd = w if not dry_run else w.float()
        dense = lambda: F.linear(x, wd)  # noqa: E731
    try:
        row["dense_ms"] = _median_ms(dense, warmup, iterations, not dry_run)
    except RuntimeError as exc:
        row["error"] = f"dense: {str(exc).splitlines()[0][:160]}"
        return row
    if dry_run:
        return row
    try:
        from torch.sparse import to_sparse_semi_structured

        ws = to_sparse_semi_structured(w)
        if dtype == torch.int8:
            sparse = lambda: torch.mm(ws, x.t())  # noqa: E731  (int8 sparse takes the sparse operand first)
        else:
            sparse = lambda: F.linear(x, ws)  # noqa: E731
        sparse()  # an unsupported shape or dtype raises here
        row["sparse_ms"] = _median_ms(sparse, warmup, iterations, True)
        row["dense_ms"] = _median_ms(dense, warmup, iterations, True)  # again, right beside it
        row["speedup"] = row["dense_ms"] / row["sparse_ms"]
    except (RuntimeError, NotImplementedError, ValueError) as exc:
        row["error"] = f"sparse: {str(exc).splitlines()[0][:160]}"
    return row


def _tests_summary(junit: Path | None) -> dict | None:
    if junit is None or not junit.is_file():
        return None
    root = ET.parse(junit).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    counts = {key: int(suite.get(key, 0)) for key in ("tests", "failures", "errors", "skipped")}
    counts["seconds"] = round(float(suite.get("time", 0)), 1)
    return counts


def run(dry_run: bool, junit: Path | None = None, budget_s: float = 150.0) -> dict:
    import torch

    shapes = json.loads(SHAPES.read_text())
    if not dry_run and not torch.cuda.is_available():
        raise SystemExit("no CUDA device here; run with --dry-run for the CPU check")
    device = "cpu (dry run)" if dry_run else torch.cuda.get_device_name(0)
    began = time.perf_counter()
    rows, cache = [], {}
    for model, entries in shapes["models"].items():
        for entry in entries:
            for dtype in ("fp16", "int8"):
                key = (entry["m"], entry["n"], entry["k"], dtype)
                if key not in cache:
                    if time.perf_counter() - began > budget_s:
                        cache[key] = {
                            "m": key[0],
                            "n": key[1],
                            "k": key[2],
                            "dtype": dtype,
                            "error": "time budget spent",
                        }
                    else:
                        cache[key] = time_shape(*key, dry_run=dry_run)
                rows.append({"model": model, "layers": entry["layers"], **cache[key]})
    return {
        "device": device,
        "dry_run": dry_run,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "batch": shapes["batch"],
        "tokens": shapes["tokens"],
        "tests": _tests_summary(junit),
        "seconds": round(time.perf_counter() - began, 1),
        "rows": rows,
    }


def trt_samples(folder: Path) -> list[Path]:
    """Build the example's INT8 engine with TensorRT and keep its inspector JSON and build log."""
    import tempfile

    import numpy as np
    import torch

    import nmdeploy
    from nmdeploy.engine.build import build_engine
    from nmdeploy.engine.config import EngineConfig
    from nmdeploy.examples.fashion_mnist import FashionResNet

    work = Path(tempfile.mkdtemp(prefix="trt-samples-"))
    torch.manual_seed(0)
    net = FashionResNet()
    nmdeploy.sparsify(net, "2:4", method="asp")
    nmdeploy.export_onnx(net.eval(), torch.randn(2, 1, 28, 28), work / "model.onnx")
    rng = np.random.default_rng(0)
    np.savez(work / "calib.npz", x=rng.standard_normal((64, 1, 28, 28), dtype=np.float32))
    nmdeploy.quantize_int8(work / "model.onnx", work / "model.int8.onnx", str(work / "calib.npz"))
    build_engine(work / "model.int8.onnx", work / "model.plan", EngineConfig(dense_twin=False), samples=folder)
    return sorted(folder.iterdir())


# -- RESULTS.md -------------------------------------------------------------------------------------------


def render(result: dict | None) -> str:
    command = "Command: `bash benchmarks/gpu_proof.sh` on a GPU machine, then `python -m benchmarks.gpu_proof --write`."
    if result is None:
        return (
            f"{command}\n\nNot run on a GPU yet: no GPU machine has been lent to this project's sessions so far. "
            "`bash benchmarks/gpu_proof.sh --dry-run` checks the script on the CPU (every step but the timing)."
        )
    lines = [command, ""]
    tests = result.get("tests")
    lines.append(
        f"Device: {result['device']} (torch {result['torch']}, CUDA {result['cuda']}); batch {result['batch']}, "
        f"{result['tokens']} tokens. "
        + (
            f"tests/gpu: {tests['tests']} tests, {tests['failures']} failed, {tests['errors']} errors, "
            f"{tests['skipped']} skipped ({tests['seconds']} s)."
            if tests
            else "tests/gpu: not recorded."
        )
    )
    lines += [
        "",
        "Dense `F.linear` (int8: `torch._int_mm`) against the same 2:4 weight through `to_sparse_semi_structured`, "
        "interleaved, median of 50 CUDA-event timings. Speed-up = dense / sparse time; GEMM M = batch × output "
        "positions, N = output channels, K = input channels × kernel size.",
        "",
        "| model | M | N | K | layers | fp16 dense ms | fp16 speed-up | int8 dense ms | int8 speed-up |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    by_shape: dict = {}
    for row in result["rows"]:
        key = (row["model"], row["m"], row["n"], row["k"])
        by_shape.setdefault(key, {"layers": row["layers"]})[row["dtype"]] = row

    def cells(row: dict | None) -> list[str]:
        if row is None:
            return ["", ""]
        if "error" in row:
            return [f"{row.get('dense_ms', 0):.3f}" if "dense_ms" in row else "", row["error"]]
        if "speedup" not in row:
            return [f"{row['dense_ms']:.3f}", "(dry run)"]
        return [f"{row['dense_ms']:.3f}", f"{row['speedup']:.2f}x"]

    for (model, m, n, k), entry in by_shape.items():
        names = entry["layers"]
        shown = ", ".join(names[:2]) + (f" (+{len(names) - 2})" if len(names) > 2 else "")
        lines.append(
            f"| {model} | {m} | {n} | {k} | {shown} | "
            + " | ".join([*cells(entry.get("fp16")), *cells(entry.get("int8"))])
            + " |"
        )
    speedups = [r["speedup"] for r in result["rows"] if "speedup" in r and r["dtype"] == "fp16"]
    if speedups:
        wins = sum(s > 1.0 for s in speedups)
        lines += [
            "",
            f"fp16: 2:4 faster on {wins} of {len(speedups)} layer shapes (median speed-up {statistics.median(speedups):.2f}x).",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", action="store_true", help="refresh benchmarks/gpu_shapes.json (CPU, transformers)")
    parser.add_argument("--run", action="store_true", help="time every shape on the GPU")
    parser.add_argument("--dry-run", action="store_true", help="the --run path on the CPU, without the sparse timing")
    parser.add_argument(
        "--out", type=Path, default=RESULT, help="JSON to write (default: %(default)s; a dry run: dry_run.json)"
    )
    parser.add_argument("--tests", type=Path, help="junit XML of the tests/gpu run, summarised into the JSON")
    parser.add_argument("--budget", type=float, default=150.0, help="seconds of timing at most")
    parser.add_argument(
        "--trt-samples", type=Path, metavar="DIR", help="build the example engine, keep TensorRT's texts"
    )
    parser.add_argument("--write", action="store_true", help="rewrite the GPU proof section of RESULTS.md")
    args = parser.parse_args(argv)
    if args.shapes:
        SHAPES.write_text(json.dumps(collect_shapes(), indent=1) + "\n")
        print(f"wrote {SHAPES}")
    if args.run or args.dry_run:
        if args.dry_run and args.out == RESULT:
            args.out = DRY
        result = run(args.dry_run, args.tests, args.budget)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {args.out} ({len(result['rows'])} rows, {result['seconds']} s)")
    if args.trt_samples:
        for path in trt_samples(args.trt_samples):
            print(f"wrote {path}")
    if args.write or not (args.shapes or args.run or args.dry_run or args.trt_samples):
        result = json.loads(RESULT.read_text()) if RESULT.is_file() else None
        body = render(result)
        if args.write:
            write_section("GPU proof", body)
        print(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``nmdeploy engine`` (ONNX -> sparse TensorRT plan, or a target bundle) and ``nmdeploy bench`` (plans on
TensorRT, or ONNX models on onnxruntime)."""

from __future__ import annotations

from pathlib import Path

import click

from nmdeploy.cli._outputs import FORCE, claim_outputs, onnx_inputs
from nmdeploy.cli._settings import config_from, setting_option
from nmdeploy.engine.config import EngineConfig
from nmdeploy.quant.providers import PROVIDERS


def _batch(value: str, count: int, option: str) -> tuple[int, ...]:
    from nmdeploy.errors import ConfigError

    try:
        values = tuple(int(v) for v in value.split(","))
    except ValueError:
        values = ()
    if (count and len(values) != count) or not values or any(v < 1 for v in values):
        want = f"{count} comma-separated positive integers" if count else "comma-separated positive integers"
        raise ConfigError(f"{option} {value!r} is invalid: give {want}, e.g. {'1,32,256' if count == 3 else '1,32'}")
    return values


@click.command()
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Plan to write.  [default: MODEL with .plan]",
)
@setting_option(
    EngineConfig, "sparse", "--dense", invert=True, help="Build without SPARSE_WEIGHTS (the dense baseline)."
)
@click.option(
    "--batch",
    default=",".join(map(str, EngineConfig().batch)),
    show_default=True,
    help="min,opt,max batch of the profile (dynamic dim 0).",
)
@click.option("--min-shapes", help="Explicit profile shapes NAME:DIMS[,...] (with --opt-shapes and --max-shapes).")
@click.option("--opt-shapes", help="Shapes TensorRT tunes for, NAME:DIMS[,...].")
@click.option("--max-shapes", help="Largest shapes, NAME:DIMS[,...].")
@setting_option(EngineConfig, "workspace_mb", "--workspace", type=click.IntRange(1), metavar="MIB")
@setting_option(EngineConfig, "timing_cache", "--timing-cache", type=click.Path(dir_okay=False))
@setting_option(EngineConfig, "hardware_compat", "--hardware-compat")
@setting_option(EngineConfig, "version_compatible", "--version-compatible")
@setting_option(
    EngineConfig,
    "dense_twin",
    "--dense-twin",
    default=False,
    help="Also build MODEL.dense.plan without SPARSE_WEIGHTS, for nmdeploy bench.",
)
@setting_option(EngineConfig, "fp16", "--fp16")
@setting_option(EngineConfig, "strongly_typed", "--strongly-typed")
@click.option(
    "--verify",
    "verify_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="verify.json to join into the layer report.  [default: verify MODEL now]",
)
@click.option(
    "--bundle",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where to write the target bundle when TensorRT is absent.  [default: OUTPUT stem + -bundle]",
)
@FORCE
def engine(
    model: Path,
    output: Path | None,
    batch: str,
    min_shapes: str | None,
    opt_shapes: str | None,
    max_shapes: str | None,
    verify_path: Path | None,
    bundle: Path | None,
    force: bool,
    **settings: object,
) -> None:
    """Build MODEL (a Q/DQ INT8 or float ONNX) into a TensorRT plan with 2:4 sparse weights.

    Works with TensorRT 10.x and 11.x (feature-detected). Writes the plan and
    engine_report.json: per layer the ONNX node, precision, tactic, 2:4 verified, eligible
    for sparse kernels and picked. Where TensorRT or a GPU is missing it writes a target
    bundle instead (ONNX, verify.json, build_engine.py, build_engine.sh, README) and exits
    with code 3: copy the bundle to the target GPU and run python3 build_engine.py there.
    """
    from nmdeploy.engine.build import engine_files
    from nmdeploy.engine.bundle import MARKER
    from nmdeploy.engine.deploy import build_or_bundle
    from nmdeploy.engine.layers import format_rows
    from nmdeploy.engine.shapes import parse_shapes
    from nmdeploy.errors import EngineUnavailable
    from nmdeploy.outputs import Output

    output = output or model.with_suffix(".plan")
    low, opt, high = _batch(batch, 3, "--batch")
    config = config_from(EngineConfig, settings, min_batch=low, opt_batch=opt, max_batch=high)
    bundle_named = bundle is not None
    bundle = bundle or output.with_name(output.stem + "-bundle")
    timing = [Output(Path(config.timing_cache), rewrites=True)] if config.timing_cache else []
    outputs = [
        *engine_files(output, config).values(),
        Output(bundle, folder=True, named=bundle_named, marker=MARKER),
    ]
    claim_outputs([*outputs, *timing], force, [*onnx_inputs(model), verify_path])
    shapes = [
        parse_shapes(s, f"--{flag}-shapes") or None
        for s, flag in ((min_shapes, "min"), (opt_shapes, "opt"), (max_shapes, "max"))
    ]
    result = build_or_bundle(
        model,
        output,
        bundle,
        config,
        min_shapes=shapes[0],
        opt_shapes=shapes[1],
        max_shapes=shapes[2],
        verify=verify_path,
    )
    if result.report is None:
        raise EngineUnavailable(
            f"{result.reason}. Wrote the target bundle {result.bundle}/ "
            f"({len(result.files)} files); on the target GPU run: python3 {result.bundle}/build_engine.py"
        )
    report = result.report
    click.echo(
        f"wrote {report.plan} (TensorRT {report.tensorrt}, flags {', '.join(report.build.builder_flags) or 'none'}, "
        f"{report.seconds:.1f} s build) and {Path(report.plan).with_name('engine_report.json')}"
    )
    click.echo(format_rows(list(report.layers)))
    if report.dense_twin:
        click.echo(f"dense twin: {report.dense_twin}; time both: nmdeploy bench {report.plan} {report.dense_twin}")


@click.command()
@click.argument("plans", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--batch", default="1,32", show_default=True, help="Batch sizes to time (within the engines' profile).")
@click.option(
    "--provider",
    type=click.Choice(PROVIDERS),
    help="Time ONNX models on onnxruntime with this execution provider instead of plans on TensorRT.  "
    "[default: cpu for .onnx files]",
)
@click.option(
    "--length",
    type=click.IntRange(1),
    default=128,
    show_default=True,
    help="ONNX models: the size of dynamic dims besides the batch (a text model's tokens).",
)
@click.option(
    "--warmup", type=click.IntRange(0), default=20, show_default=True, help="Untimed runs per engine and batch."
)
@click.option(
    "--iterations", type=click.IntRange(1), default=200, show_default=True, help="Timed runs per engine and batch."
)
@click.option(
    "--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), help="Also write the rows as JSON here."
)
@FORCE
def bench(
    plans: tuple[Path, ...],
    batch: str,
    provider: str | None,
    length: int,
    warmup: int,
    iterations: int,
    json_path: Path | None,
    force: bool,
) -> None:
    """Time PLANS side by side (interleaved, one process): latency p50/p90/p99, throughput.

    PLANS are TensorRT plans (needs TensorRT, polygraphy and a GPU; exit 3 without), or ONNX
    models, timed on onnxruntime with --provider cpu|cuda|tensorrt (a provider that cannot
    start here exits 3). With two (e.g. the sparse engine and its --dense-twin) it prints the
    latency ratio of the second to the first.
    """
    import json

    from nmdeploy._atomic import write_atomic
    from nmdeploy.errors import ConfigError

    sizes = _batch(batch, 0, "--batch")
    onnx = [p.suffix == ".onnx" for p in plans]
    if any(onnx) and not all(onnx):
        raise ConfigError("bench times TensorRT plans or ONNX models, not both at once; give one kind")
    if provider is not None and not all(onnx):
        raise ConfigError(
            f"--provider {provider} runs ONNX models on onnxruntime; plans run on TensorRT: drop --provider"
        )
    claim_outputs([json_path], force, plans)
    names = {}
    for path in plans:
        names[path.stem if path.stem not in names else str(path)] = path
    if all(onnx):
        from nmdeploy.quant.timing import bench_onnx

        rows = bench_onnx(names, provider or "cpu", sizes, warmup, iterations, length)
    else:
        from nmdeploy.engine.bench import bench_engines

        rows = bench_engines(names, sizes, warmup, iterations)
    click.echo(f"{'engine':<28} {'batch':>5} {'p50 ms':>9} {'p90 ms':>9} {'p99 ms':>9} {'samples/s':>11}")
    for r in rows:
        click.echo(
            f"{r.engine[:28]:<28} {r.batch:>5} {r.p50_ms:>9.3f} {r.p90_ms:>9.3f} {r.p99_ms:>9.3f} {r.throughput:>11.0f}"
        )
    if len(names) == 2:
        first, second = names
        for size in sizes:
            got = {r.engine: r for r in rows if r.batch == size}
            click.echo(f"batch {size}: {second} / {first} p50 latency = {got[second].p50_ms / got[first].p50_ms:.2f}x")
    if json_path is not None:
        write_atomic(json_path, json.dumps([r.to_dict() for r in rows], indent=2) + "\n")

"""``nmdeploy quantize``: FP32 ONNX -> INT8 Q/DQ ONNX that TensorRT accepts, zeros kept, accuracy shown."""

from __future__ import annotations

from pathlib import Path

import click

from nmdeploy.cli._data import DATA_OPTIONS, data_config
from nmdeploy.cli._outputs import FORCE, claim_outputs, onnx_inputs
from nmdeploy.cli._settings import config_from, setting_option
from nmdeploy.quant.config import DEFAULT_COUNT, QuantizeConfig
from nmdeploy.sparsity.config import SparsityConfig


@click.command()
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="INT8 model to write.  [default: MODEL.int8.onnx]",
)
@click.option(
    "--calibration",
    required=True,
    help="Calibration set (.npz from nmdeploy calibrate, used whole) or any data SPEC (its train split): arrays "
    "are used whole, an image folder or a plug-in's dataset gives a class-balanced draw of --count samples.",
)
@setting_option(
    QuantizeConfig,
    "count",
    "--count",
    type=click.IntRange(1),
    default=DEFAULT_COUNT,
    help="Samples drawn from a --calibration that is not a calibration set (at most what it holds).",
    show_default=True,
)
@setting_option(QuantizeConfig, "seed", "--seed", type=click.IntRange(0))
@setting_option(QuantizeConfig, "method", "--method")
@setting_option(QuantizeConfig, "percentile", "--percentile")
@setting_option(
    QuantizeConfig,
    "per_channel",
    "--per-tensor",
    invert=True,
    help="One weight scale per layer instead of per output channel.",
)
@setting_option(QuantizeConfig, "output_qdq_on_sparse", "--output-qdq-on-sparse")
@setting_option(QuantizeConfig, "keep_float_weights", "--keep-float-weights")
@setting_option(
    QuantizeConfig, "exclude", "--exclude", help="Keep these nodes in float: glob on node or weight names (repeatable)."
)
@click.option("--eval-data", help="Data SPEC for the FP32-vs-INT8 comparison.  [default: the calibration data]")
@click.option(
    "--pattern", default=SparsityConfig.pattern, show_default=True, help="N:M pattern re-verified on the int8 weights."
)
@setting_option(QuantizeConfig, "batch_size", "--batch-size", type=click.IntRange(1))
@DATA_OPTIONS
@click.option(
    "--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), help="Also write the report as JSON here."
)
@FORCE
def quantize(
    model: Path,
    output: Path | None,
    calibration: str,
    eval_data: str | None,
    pattern: str,
    json_path: Path | None,
    force: bool,
    **settings: object,
) -> None:
    """Quantise MODEL to INT8 with explicit Q/DQ nodes (onnxruntime quantize_static).

    Symmetric int8 activations and weights (zero points 0), per-channel weights on the
    output-channel axis, Q/DQ on the inputs of Conv/Gemm/MatMul and on the residual input
    of Add (TensorRT's placement), bias in float. The result must pass the Q/DQ lint and
    keep every N:M layer N:M in its int8 weights; FP32 vs INT8 top-1 (with labels) and
    per-output cosine are printed. Nothing is written when a check fails.
    """
    import json
    from dataclasses import asdict

    from nmdeploy import schemas
    from nmdeploy._atomic import write_atomic
    from nmdeploy.cli._progress import stage_progress
    from nmdeploy.quant.int8 import quantize_int8

    data = data_config(settings, calibration, model)
    config = config_from(QuantizeConfig, settings)
    output = output or model.with_name(model.name.removesuffix(".onnx") + ".int8.onnx")
    read = [calibration, Path(calibration).with_suffix(".json"), eval_data]
    claim_outputs([output, json_path], force, [*onnx_inputs(model), *read])
    with stage_progress() as update:
        report = quantize_int8(
            model,
            output,
            calibration,
            config=config,
            pattern=pattern,
            eval_data=eval_data,
            progress=update,
            data=data,
        )
    setting = f"{config.method}" + (f" {config.percentile}" if report.percentile is not None else "")
    click.echo(
        f"wrote {report.path}: {len(report.quantized)} layer(s) INT8 ({setting}, "
        f"{'per-channel' if report.per_channel else 'per-tensor'} weights, {report.calibration_samples} calibration samples)"
        + (f", {len(report.excluded)} kept float" if report.excluded else "")
    )
    click.echo(
        f"lint PASSED: {report.lint.quantize_nodes} QuantizeLinear, {report.lint.dequantize_nodes} DequantizeLinear, "
        f"{report.residual_adds} residual Add input(s) quantised; TensorRT 10.x/11.x Q/DQ rules hold"
    )
    click.echo(f"{pattern} PASSED on the int8 weights: {len(report.sparse_layers)} N:M layer(s) kept their zeros")
    acc = report.accuracy
    if acc.top1 is not None and acc.reference_top1 is not None:
        click.echo(
            f"top-1 on {acc.samples} samples of {acc.data}: FP32 {acc.reference_top1:.2%} -> INT8 {acc.top1:.2%} "
            f"({100 * (acc.top1 - acc.reference_top1):+.2f} pt)"
        )
    for c in acc.cosine:
        click.echo(f"cosine FP32 vs INT8, output {c.name}: mean {c.mean:.6f}, worst sample {c.min:.6f}")
    if json_path is not None:
        payload = asdict(report) | {
            "schema": schemas.QUANTIZE,
            "lint": report.lint.to_dict(),
            "verify": report.verify.to_dict(),
            "accuracy": acc.to_dict(),
        }
        write_atomic(json_path, json.dumps(payload, indent=2) + "\n")
    click.echo(f"next: nmdeploy verify --trt-rules {report.path}")

"""``nmdeploy eval``: top-1 of an ONNX model on onnxruntime, and cosine to a reference model."""

from __future__ import annotations

from pathlib import Path

import click

from nmdeploy.cli._data import DATA_OPTIONS, data_config
from nmdeploy.cli._outputs import FORCE, claim_outputs, onnx_inputs
from nmdeploy.quant.providers import PROVIDERS  # standard library at import: --help stays light


@click.command("eval")
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--data",
    "spec",
    required=True,
    help="Data SPEC: fashion-mnist[:test|train], an .npz (x, optional y), an image folder or module:callable.",
)
@click.option(
    "--reference",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Reference ONNX (e.g. the FP32 model) for per-output cosine.",
)
@click.option("--batch-size", type=click.IntRange(1), default=256, show_default=True)
@click.option(
    "--provider",
    type=click.Choice(PROVIDERS),
    default="cpu",
    show_default=True,
    help="onnxruntime execution provider; tensorrt builds with INT8 (for a Q/DQ model) and sparse weights. "
    "One that cannot start here exits 3.",
)
@DATA_OPTIONS
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the result as JSON here ('-' for stdout).",
)
@FORCE
def evaluate(
    model: Path,
    spec: str,
    reference: Path | None,
    batch_size: int,
    provider: str,
    json_path: Path | None,
    force: bool,
    **options,
) -> None:
    """Measure MODEL on onnxruntime: top-1, and cosine to a reference model.

    Top-1 is read from the first output ([N, classes]) when the data has labels; with
    --reference, the reference's top-1 and the per-output cosine (mean over samples and the
    worst sample) are printed too. A bare built-in name uses its test split. The data is
    read batch by batch (an image folder of any size streams through, decoded by --workers
    processes); an image folder is resized and centre-cropped to the model's input size
    unless --image-size says otherwise. --provider runs both models on the CPU (default),
    CUDA or TensorRT; a provider onnxruntime cannot start here is an error (exit 3), never
    a silent run on the CPU.
    """
    from nmdeploy._atomic import write_atomic
    from nmdeploy.cli._progress import stage_progress
    from nmdeploy.data import open_data
    from nmdeploy.data.loader import resolve_workers
    from nmdeploy.quant.evaluate import evaluate_onnx

    config = data_config(options, spec, model)
    claim_outputs([json_path], force, [*onnx_inputs(model, reference), spec])
    data = open_data(spec, "test", config)
    workers = resolve_workers(config.workers, data)
    with stage_progress(disable=str(json_path) == "-") as update:
        report = evaluate_onnx(
            model,
            data,
            reference,
            batch_size,
            lambda done, total: update("evaluate", done, total),
            workers,
            provider,
        )
    if json_path is not None:
        if str(json_path) == "-":
            click.echo(report.to_json())
            return
        write_atomic(json_path, report.to_json() + "\n")
    where = f"{data.source}:{data.split}" if data.split else data.source
    on = "" if provider == "cpu" else f" on {provider}"
    if report.top1 is not None:
        click.echo(f"{model}: top-1 {report.top1:.2%} on {report.samples} samples of {where}{on}")
    else:
        click.echo(f"{model}: {report.samples} samples of {where}{on} (no labels or not a classifier: no top-1)")
    if report.reference is not None:
        if report.reference_top1 is not None and report.top1 is not None:
            click.echo(
                f"{reference}: top-1 {report.reference_top1:.2%} (difference {100 * (report.top1 - report.reference_top1):+.2f} pt)"
            )
        for c in report.cosine:
            click.echo(f"cosine to {reference} on output {c.name}: mean {c.mean:.6f}, worst sample {c.min:.6f}")

"""``nmdeploy export``: checkpoint -> ONNX, finalized, checked against PyTorch with onnxruntime."""

from __future__ import annotations

import math
from pathlib import Path

import click

from nmdeploy._hf import HF_TASKS, is_hf_spec
from nmdeploy.cli._outputs import FORCE, claim_outputs
from nmdeploy.cli._settings import config_from, setting_option
from nmdeploy.export.config import ExportConfig


def _shape(value: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(d) for d in value.lower().split("x"))
    except ValueError:
        dims = ()
    from nmdeploy.errors import InputError

    if not dims or any(d <= 0 for d in dims):
        raise InputError(f"--input-shape {value!r} is invalid: write positive sizes joined by 'x', e.g. 1x1x28x28")
    if math.prod(dims) > _MAX_SAMPLE:
        raise InputError(
            f"--input-shape {value!r} is {math.prod(dims):,} values, too large for one sample batch; "
            "give the shape of a small batch, e.g. 1x3x224x224"
        )
    return dims


_MAX_SAMPLE = 1 << 30  # values in the random sample export checks against PyTorch (4 GiB of float32)


@click.command()
@click.argument("checkpoint", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--model",
    "spec",
    required=True,
    help="Built-in example (fashion-resnet), hf:PATH (a local transformers folder) or package.module:callable.",
)
@click.option(
    "--hf-task",
    type=click.Choice(HF_TASKS),
    help="hf: models: what the model returns.  [default: from its config.json]",
)
@click.option(
    "--input-shape",
    help="Sample input shape, e.g. 1x1x28x28 (dim 0 stays dynamic; and the token axis of text).  "
    "[default for hf: models: 1x16 tokens, or the config's image size]",
)
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True, help="The .onnx file to write."
)
@setting_option(ExportConfig, "opset", "--opset")
@setting_option(
    ExportConfig,
    "dynamic_batch",
    "--static-batch",
    invert=True,
    help="Fix the batch size to the sample's instead of a dynamic dim 0.",
)
@setting_option(ExportConfig, "atol", "--atol")
@setting_option(ExportConfig, "rtol", "--rtol")
@FORCE
def export(
    checkpoint: Path,
    spec: str,
    hf_task: str | None,
    input_shape: str | None,
    output: Path,
    force: bool,
    **settings: object,
) -> None:
    """Export CHECKPOINT (a state_dict, optionally with nmdeploy masks) to ONNX.

    The model is finalized (masks folded into exact zeros), BatchNorm folded, written as one
    file (external data only above 2 GB), checked with onnx.checker and compared with PyTorch
    through onnxruntime on a random sample. Nothing is written when any check fails.
    """
    import torch

    from nmdeploy.errors import InputError
    from nmdeploy.export.loading import build_model, load_checkpoint
    from nmdeploy.export.onnx import check_onnx_path, check_opset, export_onnx

    hf = is_hf_spec(spec)
    if input_shape is None and not hf:
        raise InputError("--input-shape is needed for this model: give a sample batch shape, e.g. 1x1x28x28")
    if hf_task is not None and not hf:
        raise InputError(f"--hf-task is for hf:PATH models; --model is {spec!r}: drop --hf-task")
    dims = _shape(input_shape) if input_shape is not None else None
    config = config_from(ExportConfig, settings)
    check_opset(config.opset)
    check_onnx_path(output)
    external = output.with_name(output.name + ".data")  # written too when the weights pass 2 GB
    claim_outputs([output, external], force, [checkpoint])
    model = load_checkpoint(build_model(spec, hf_task), checkpoint)
    if hf:
        from nmdeploy.export.hf import sample_inputs

        sample = sample_inputs(model, dims)
    else:
        sample = torch.randn(dims, generator=torch.Generator().manual_seed(0))
    report = export_onnx(model, sample, output, config=config)
    click.echo(
        f"wrote {report.path} (opset {report.opset}, {report.size_bytes / 1e6:.2f} MB"
        f"{', external data' if report.external_data else ''})"
    )
    for p in report.parity:
        click.echo(f"parity {p.name}: max |onnxruntime - torch| = {p.max_abs_error:.3g}, cosine {p.cosine:.6f}")
    click.echo(f"next: nmdeploy verify {report.path}")

"""``nmdeploy triton``: a Triton model repository from an ONNX model and, optionally, its plan."""

from __future__ import annotations

from pathlib import Path

import click

from nmdeploy.cli._outputs import FORCE, claim_outputs, onnx_inputs
from nmdeploy.cli._settings import config_from, setting_option
from nmdeploy.engine.triton import ServeConfig


@click.command("triton")
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--plan",
    type=click.Path(dir_okay=False, path_type=Path),
    help="TensorRT plan built from MODEL, served as a tensorrt_plan model (checked against MODEL first).",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    help="Repository folder to write.  [default: triton/ beside MODEL]",
)
@setting_option(
    ServeConfig,
    "name",
    "--name",
    help="Model name in Triton (the ONNX model is NAME_onnx).  [default: MODEL's name up to its first dot]",
)
@setting_option(
    ServeConfig,
    "max_batch",
    "--max-batch",
    type=click.IntRange(0),
    help="Triton's max_batch_size (0: no batching).  [default: 256, or the plan's largest batch when smaller]",
)
@setting_option(
    ServeConfig, "dynamic_batching", "--no-dynamic-batching", invert=True, help="Leave Triton's dynamic batcher off."
)
@setting_option(
    ServeConfig,
    "preferred_batch",
    "--preferred-batch",
    type=click.IntRange(1),
    multiple=True,
    default=(),
    show_default=False,
    help="Batch size the dynamic batcher aims for (repeat for several).  [default: 32]",
)
@setting_option(ServeConfig, "queue_delay_us", "--queue-delay-us", type=click.IntRange(0))
@setting_option(ServeConfig, "instances", "--instances", type=click.IntRange(1))
@setting_option(ServeConfig, "trt_cache", "--trt-cache")
@FORCE
def triton(model: Path, plan: Path | None, output: Path | None, force: bool, **settings: object) -> None:
    """Write a Triton model repository for MODEL (an ONNX, e.g. model.int8.onnx).

    It holds NAME_onnx, an onnxruntime_onnx model run by ONNX Runtime's TensorRT accelerator
    (INT8 for a Q/DQ graph, sparse weights, engine cache), and with --plan NAME, a
    tensorrt_plan model of the engine. Inputs, outputs, dtypes and dims come from MODEL
    (dynamic dims as -1); a plan is checked against them with TensorRT where it is
    installed, else with the engine_report.json beside it. Also writes README.md (how to
    start tritonserver) and client.py (one HTTP request with tritonclient).
    """
    from nmdeploy.engine.repository import MARKER, default_name, write_repository
    from nmdeploy.outputs import Output

    named = output is not None
    output = output or model.parent / "triton"
    if not settings.get("preferred_batch"):
        settings["preferred_batch"] = None
    serve = config_from(ServeConfig, settings)
    claim_outputs([Output(output, folder=True, named=named, marker=MARKER)], force, [*onnx_inputs(model), plan])
    if not model.is_file():
        from nmdeploy.errors import InputError

        raise InputError(f"{model}: no such ONNX file")
    repo = write_repository(output, model, serve, name=serve.name or default_name(model), plan=plan)
    click.echo(f"wrote {repo.path}/: {', '.join(repo.models)} ({len(repo.files)} files)")
    click.echo(f"serve: tritonserver --model-repository={repo.path}   check: python3 {repo.path}/client.py --dry-run")

"""``nmdeploy verify``: is every constant weight of an ONNX model N:M along TensorRT's axis?"""

from __future__ import annotations

import json
from pathlib import Path

import click

from nmdeploy.cli._outputs import FORCE, claim_outputs, onnx_inputs
from nmdeploy.sparsity.config import SparsityConfig


@click.command()
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--pattern", default=SparsityConfig.pattern, show_default=True, help="N:M pattern to check, e.g. 2:4, 1:4, 1:16."
)
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the report as JSON here ('-' for stdout).",
)
@click.option(
    "--require",
    default=None,
    help="Which layers must pass: 'all', or a regex on node/weight names. Default: every layer "
    "that has any N:M group (a half-sparse layer is a bug).",
)
@click.option("--trt-rules", is_flag=True, help="Also lint the Q/DQ nodes against TensorRT's INT8 import rules.")
@FORCE
def verify(
    model: Path, pattern: str, json_path: Path | None, require: str | None, trt_rules: bool, force: bool
) -> None:
    """Check the N:M (2:4) layout of every Conv/ConvTranspose/Gemm/MatMul weight of MODEL.

    Follows Cast, Identity, Q/DQ and Transpose back to the stored weight (float or int8).
    --trt-rules also checks every Q/DQ node: int8 zero points all 0, scales finite and > 0,
    per-axis scales only on weights along the output-channel axis, int8 weights behind
    DequantizeLinear, opset >= 13, no QLinear*/ConvInteger/MatMulInteger. Exit code 0 when
    everything passes, 1 on a violation, 2 for bad input.
    """
    from rich.console import Console
    from rich.table import Table

    from nmdeploy._atomic import write_atomic
    from nmdeploy.errors import InputError, PatternError
    from nmdeploy.export.verify import load_onnx, verify_model
    from nmdeploy.quant.lint import lint_qdq

    claim_outputs([json_path], force, onnx_inputs(model))
    try:
        graph = load_onnx(model)
        report = verify_model(graph, pattern, require, str(model))
    except PatternError as exc:
        raise InputError(str(exc)) from None
    lint = lint_qdq(graph, str(model)) if trt_rules else None
    ok = report.ok and (lint is None or lint.ok)
    if json_path is not None:
        payload = report.to_dict() | ({"trt_rules": lint.to_dict()} if lint is not None else {})
        if str(json_path) == "-":
            click.echo(json.dumps(payload, indent=2))
            return _exit(ok)
        write_atomic(json_path, json.dumps(payload, indent=2) + "\n")
    console = Console()
    if lint is not None:
        for v in lint.violations:
            click.echo(f"Q/DQ rule broken at {v}")
        click.echo(
            f"trt-rules {'PASSED' if lint.ok else 'FAILED'}: {lint.quantize_nodes} QuantizeLinear, "
            f"{lint.dequantize_nodes} DequantizeLinear, {len(lint.violations)} violation(s)"
            + (
                "; no Q/DQ at all: an FP32 model (nmdeploy quantize makes the INT8 one)"
                if not lint.quantize_nodes + lint.dequantize_nodes
                else ""
            )
        )
    if not report.layers:
        click.echo(f"{model}: no Conv/ConvTranspose/Gemm/MatMul with a constant weight; nothing to check")
        return _exit(ok)
    table = Table(title=f"{model}: {report.pattern} along the axis TensorRT reduces over")
    for col in (
        "weight",
        "op",
        "shape",
        "axis",
        "pattern",
        "zeros",
        "bad groups",
        "first bad",
        "2:4 hw",
        "required",
        "likely to pay",
    ):
        table.add_column(col, overflow="fold")
    for r in report.layers:
        table.add_row(
            r.weight,
            r.op,
            "x".join(map(str, r.shape)),
            str(r.axis),
            r.observed,
            f"{r.sparsity:.0%}",
            f"{r.violations}/{r.groups}",
            "" if r.first_violation is None else ",".join(map(str, r.first_violation)),
            "yes" if r.hw_2of4 else "no",
            "yes" if r.required else "no",
            r.likely_to_pay,
            style=None if r.ok or not r.required else "red",
        )
    console.print(table)
    judged = [r for r in report.layers if r.hw_2of4 and r.required]
    if judged:
        counts = {k: sum(r.likely_to_pay == k for r in judged) for k in ("yes", "maybe", "no")}
        click.echo(
            f"likely to pay (a rule from each layer's GEMM shape; the reasons are in --json): {counts['yes']} yes, "
            f"{counts['maybe']} maybe, {counts['no']} no of {len(judged)} 2:4 layer(s)"
        )
        for r in (r for r in judged if r.likely_to_pay != "no"):
            click.echo(f"  {r.likely_to_pay}: {r.weight} ({r.gemm}): {r.pay_reason}")
    for s in report.skipped:
        click.echo(f"skipped {s.node} ({s.op}) input {s.input}: {s.reason}")
    failed = report.failures
    if failed:
        click.echo(
            f"FAILED: {len(failed)} required layer(s) not {report.pattern}: " + ", ".join(f.weight for f in failed)
        )
    else:
        click.echo(f"PASSED: {len(report.layers)} weight(s) checked, every required layer is {report.pattern}")
    _exit(ok)


def _exit(ok: bool) -> None:
    if not ok:
        raise SystemExit(1)

"""``nmdeploy verify``: is every constant weight of an ONNX model N:M along TensorRT's axis?"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import click


@click.command()
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--pattern", default="2:4", show_default=True, help="N:M pattern to check, e.g. 2:4, 1:4, 1:16.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), help="Also write the report as JSON here ('-' for stdout).")
@click.option(
    "--require",
    default=None,
    help="Which layers must pass: 'all', or a regex on node/weight names. Default: every layer "
    "that has any N:M group (a half-sparse layer is a bug).",
)
def verify(model: Path, pattern: str, json_path: Path | None, require: str | None) -> None:
    """Check the N:M (2:4) layout of every Conv/ConvTranspose/Gemm/MatMul weight of MODEL.

    Follows Cast, Identity, Q/DQ and Transpose back to the stored weight (float or int8).
    Exit code 0 when every required layer passes, 1 when one violates, 2 for bad input.
    """
    from rich.console import Console
    from rich.table import Table

    from nmdeploy.errors import InputError, PatternError
    from nmdeploy.export.verify import verify_onnx

    try:
        report = verify_onnx(model, pattern, require)
    except PatternError as exc:
        raise InputError(str(exc)) from None
    if json_path is not None:
        if str(json_path) == "-":
            click.echo(report.to_json())
            return _exit(report.ok)
        fd, tmp = tempfile.mkstemp(dir=json_path.parent or ".", prefix=f".{json_path.name}.")
        with os.fdopen(fd, "w") as fh:
            fh.write(report.to_json() + "\n")
        os.replace(tmp, json_path)
    console = Console()
    if not report.layers:
        click.echo(f"{model}: no Conv/ConvTranspose/Gemm/MatMul with a constant weight; nothing to check")
        return _exit(True)
    table = Table(title=f"{model}: {report.pattern} along the axis TensorRT reduces over")
    for col in ("weight", "op", "shape", "axis", "pattern", "zeros", "bad groups", "first bad", "2:4 hw", "required"):
        table.add_column(col, overflow="fold")
    for r in report.layers:
        table.add_row(
            r.weight + (" *" if r.note else ""), r.op, "x".join(map(str, r.shape)), str(r.axis), r.observed,
            f"{r.sparsity:.0%}", f"{r.violations}/{r.groups}",
            "" if r.first_violation is None else ",".join(map(str, r.first_violation)),
            "yes" if r.hw_2of4 else "no", "yes" if r.required else "no",
            style=None if r.ok or not r.required else "red",
        )
    console.print(table)
    notes = [r for r in report.layers if r.note]
    for r in notes:
        click.echo(f"* {r.weight}: {r.note}")
    for s in report.skipped:
        click.echo(f"skipped {s.node} ({s.op}) input {s.input}: {s.reason}")
    failed = report.failures
    if failed:
        click.echo(f"FAILED: {len(failed)} required layer(s) not {report.pattern}: " + ", ".join(f.weight for f in failed))
    else:
        click.echo(f"PASSED: {len(report.layers)} weight(s) checked, every required layer is {report.pattern}")
    _exit(report.ok)


def _exit(ok: bool) -> None:
    if not ok:
        raise SystemExit(1)

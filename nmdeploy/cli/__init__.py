"""The ``nmdeploy`` command line. Thin: parse, call the library, print.

Nothing here imports torch, onnx or tensorrt at module level, so ``nmdeploy --help`` (and
every subcommand's ``--help``) answers fast on any machine.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from nmdeploy import __version__
from nmdeploy.config import env_flag
from nmdeploy.errors import NMDeployError
from nmdeploy.log import configure_logging

__all__ = ["cli", "main"]


class _Group(click.Group):
    """Turns library errors into one line (exit code 1) unless --debug is given."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except NMDeployError as exc:
            if (ctx.obj or {}).get("debug"):
                raise
            error = click.ClickException(str(exc))
            error.exit_code = exc.exit_code
            raise error from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="nmdeploy")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
@click.option("--debug", is_flag=True, help="Show full tracebacks (also NMDEPLOY_DEBUG=1).")
@click.pass_context
def cli(ctx: click.Context, verbose: int, quiet: bool, debug: bool) -> None:
    """nmdeploy: from a trained PyTorch model to a sparse (2:4) INT8 TensorRT engine.

    Fine-tune to N:M sparsity (MaxQ, SR-STE, STE, ASP), export to ONNX, verify the 2:4
    layout, quantise to INT8 and build TensorRT engines for NVIDIA Ampere GPUs.
    """
    try:
        debug = debug or env_flag(os.environ.get("NMDEPLOY_DEBUG"), "NMDEPLOY_DEBUG")
    except NMDeployError as exc:
        raise click.ClickException(str(exc)) from None
    ctx.obj = {"debug": debug, "quiet": quiet}
    configure_logging(-1 if quiet else verbose)


def _register() -> None:
    from nmdeploy.cli.build import build, finetune
    from nmdeploy.cli.calibrate import calibrate
    from nmdeploy.cli.demo import demo
    from nmdeploy.cli.engine import bench, engine
    from nmdeploy.cli.evaluate import evaluate
    from nmdeploy.cli.export import export
    from nmdeploy.cli.quantize import quantize
    from nmdeploy.cli.verify import verify

    for command in (build, finetune, demo, export, verify, calibrate, quantize, evaluate, engine, bench):
        cli.add_command(command)


_register()


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    cli.main(args=argv if argv is not None else sys.argv[1:], prog_name="nmdeploy")

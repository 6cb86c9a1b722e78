"""The ``nmdeploy`` command line. Thin: parse, call the library, print.

Nothing here imports torch, onnx or tensorrt at module level, so ``nmdeploy --help`` (and
every subcommand's ``--help``) answers fast on any machine.
"""

from __future__ import annotations

import os
import shlex
import signal
import sys
import threading
from typing import Any

import click

from nmdeploy import __version__
from nmdeploy.config import env_flag
from nmdeploy.errors import NMDeployError, Terminated, TrainingInterrupted
from nmdeploy.log import configure_logging

__all__ = ["cli", "main"]


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated


def _one_line(message: str, exit_code: int) -> click.ClickException:
    error = click.ClickException(message)
    error.exit_code = exit_code
    return error


def _usage_line(exc: click.UsageError) -> click.ClickException:
    """A usage error in one line, like every other error, with where to read the options (exit 2)."""
    where = exc.ctx.command_path if exc.ctx is not None else "nmdeploy"
    return _one_line(f"{exc.format_message().rstrip('.')} (see {where} --help)", exc.exit_code)


class _Group(click.Group):
    """Turns library errors into one line (their exit code) unless --debug is given.

    Also answers interrupts: Ctrl-C exits 130 and SIGTERM 143, after the atomic writers have
    removed their temporary files; an interrupted training run prints the command that resumes it.
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta["nmdeploy.argv"] = list(args)  # for the resume hint
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            raise _usage_line(exc) from None

    def invoke(self, ctx: click.Context) -> Any:
        in_main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGTERM, _raise_terminated) if in_main else None
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:  # a command's own option parsing
            raise _usage_line(exc) from None
        except NMDeployError as exc:
            if (ctx.obj or {}).get("debug"):
                raise
            message = str(exc)
            if isinstance(exc, TrainingInterrupted):
                message = exc.resume_with(shlex.join(["nmdeploy", *ctx.meta.get("nmdeploy.argv", [])]))
            raise _one_line(message, exc.exit_code) from None
        except (KeyboardInterrupt, Terminated) as exc:
            if (ctx.obj or {}).get("debug"):
                raise
            name, code = ("SIGTERM", 143) if isinstance(exc, Terminated) else ("SIGINT", 130)
            raise _one_line(
                f"stopped by {name}; files already written are complete, nothing half-written was left; "
                "run the same command again to redo what is missing",
                code,
            ) from None
        finally:
            if in_main:
                signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def _set_global(ctx: click.Context, param: click.Parameter, value: int | bool) -> None:
    """Record ``-v``/``-q``/``--debug`` in the root context, wherever on the line they were given."""
    settings = ctx.find_root().ensure_object(dict)
    if value:
        settings[param.name] = settings.get(param.name, 0) + value if param.name == "verbose" else True
    configure_logging(-1 if settings.get("quiet") else settings.get("verbose", 0))


def _global_options() -> list[click.Option]:
    """``-v``, ``-q`` and ``--debug``: the group's options, and every command's (``nmdeploy build -q``)."""
    common = {"expose_value": False, "callback": _set_global}
    return [
        click.Option(["-v", "--verbose"], count=True, help="More log output (-vv for debug).", **common),
        click.Option(["-q", "--quiet"], is_flag=True, help="Only warnings and errors.", **common),
        click.Option(["--debug"], is_flag=True, help="Show full tracebacks (also NMDEPLOY_DEBUG=1).", **common),
    ]


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]}, params=_global_options())
@click.version_option(__version__, "-V", "--version", prog_name="nmdeploy")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """nmdeploy: from a trained PyTorch model to a sparse (2:4) INT8 TensorRT engine.

    Fine-tune to N:M sparsity (MaxQ, SR-STE, STE, ASP), export to ONNX, verify the 2:4
    layout, quantise to INT8 and build TensorRT engines for NVIDIA Ampere GPUs.
    """
    settings = ctx.ensure_object(dict)
    try:
        settings["debug"] = settings.get("debug", False) or env_flag(os.environ.get("NMDEPLOY_DEBUG"), "NMDEPLOY_DEBUG")
    except NMDeployError as exc:
        raise click.ClickException(str(exc)) from None


def _register() -> None:
    from nmdeploy.cli.build import build, finetune
    from nmdeploy.cli.calibrate import calibrate
    from nmdeploy.cli.engine import bench, engine
    from nmdeploy.cli.evaluate import evaluate
    from nmdeploy.cli.export import export
    from nmdeploy.cli.quantize import quantize
    from nmdeploy.cli.triton import triton
    from nmdeploy.cli.verify import verify

    for command in (build, finetune, export, verify, calibrate, quantize, evaluate, engine, bench, triton):
        command.params += _global_options()
        cli.add_command(command)


_register()


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    cli.main(args=argv if argv is not None else sys.argv[1:], prog_name="nmdeploy")

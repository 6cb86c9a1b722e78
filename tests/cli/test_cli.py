"""The nmdeploy command line: help without heavy imports, version, errors, global options."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from click.testing import CliRunner

import nmdeploy
from nmdeploy.cli import cli

BLOCKED = ("torch", "onnx", "onnxruntime", "tensorrt", "polygraphy")


def _run_blocked(args: list[str]) -> subprocess.CompletedProcess:
    """Run the CLI in a fresh interpreter where importing torch, onnx or tensorrt fails."""
    code = textwrap.dedent(
        f"""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {BLOCKED!r}:
                    raise ImportError("blocked for this test: " + name)
        sys.meta_path.insert(0, Block())
        from nmdeploy.cli import main
        main({args!r})
        """
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        *(
            [name, "--help"]
            for name in ("build", "finetune", "export", "verify", "calibrate", "quantize", "eval", "engine", "bench")
        ),
        ["--version"],
    ],
)
def test_help_and_version_need_no_torch(args):
    proc = _run_blocked(args)
    assert proc.returncode == 0, proc.stderr
    assert "Usage: nmdeploy" in proc.stdout or proc.stdout == f"nmdeploy, version {nmdeploy.__version__}\n"


def test_every_subcommand_has_help():
    runner = CliRunner()
    for name in cli.commands:
        result = runner.invoke(cli, [name, "--help"])
        assert result.exit_code == 0 and f"Usage: cli {name}" in result.output


def test_bad_pattern_is_one_line_and_exit_1(tmp_path):
    """A bad --pattern fails at once, before the model or the calibration data are read."""
    result = CliRunner().invoke(
        cli, ["quantize", str(tmp_path / "m.onnx"), "--calibration", "c.npz", "--pattern", "3:2"]
    )
    assert result.exit_code == 1
    assert result.output == 'Error: pattern "3:2" is invalid: need 0 < n < m <= 32, e.g. "2:4"\n'
    assert list(tmp_path.iterdir()) == []


def test_debug_shows_the_exception():
    result = CliRunner().invoke(cli, ["--debug", "finetune", "--method", "magic", "--out", "out"])
    assert result.exit_code == 1
    assert type(result.exception).__name__ == "ConfigError"


def test_bad_debug_environment_value():
    result = CliRunner().invoke(cli, ["verify", "model.onnx"], env={"NMDEPLOY_DEBUG": "yes"})
    assert result.exit_code == 1
    assert result.output == "Error: environment variable NMDEPLOY_DEBUG='yes' is not a boolean; use 1/0/true/false\n"

"""``nmdeploy engine`` / ``bench`` where TensorRT is absent: one line, exit 3, and a target bundle."""

from __future__ import annotations

import importlib.util

import pytest
from click.testing import CliRunner

from nmdeploy.cli import cli

NO_TRT = pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here")


def _run(*args: str):
    return CliRunner().invoke(cli, list(args))


@NO_TRT
def test_engine_without_tensorrt_writes_the_bundle(tmp_path, cnn_onnx):
    result = _run("engine", str(cnn_onnx), "-o", str(tmp_path / "cnn.plan"), "--batch", "1,4,16", "--dense-twin")
    bundle = tmp_path / "cnn-bundle"
    assert result.exit_code == 3
    assert result.output == (
        "Error: TensorRT is not importable here (No module named 'tensorrt'); pip install 'nmdeploy[trt]' (the tensorrt wheel) "
        "on an x86_64/SBSA server with an NVIDIA GPU, or use the TensorRT that JetPack ships on Jetson Orin. "
        f"Wrote the target bundle {bundle}/ (20 files); on the target GPU run: python3 {bundle}/build_engine.py\n"
    )
    assert (bundle / "build_engine.py").is_file() and not (tmp_path / "cnn.plan").exists()
    assert '"batch": [\n    1,\n    4,\n    16\n  ]' in (bundle / "bundle.json").read_text()
    assert (bundle / "verify.json").is_file()  # verified on the spot when --verify is not given
    custom = _run("engine", str(cnn_onnx), "-o", str(tmp_path / "x.plan"), "--bundle", str(tmp_path / "ship"))
    assert custom.exit_code == 3 and (tmp_path / "ship" / "build_engine.sh").is_file()


@pytest.mark.parametrize(
    "args, code, message",
    [
        (
            ["--batch", "1,32"],
            1,
            "Error: --batch '1,32' is invalid: give 3 comma-separated positive integers, e.g. 1,32,256\n",
        ),
        (["--batch", "8,4,16"], 1, "Error: batch sizes min/opt/max = 8/4/16: need 1 <= min <= opt <= max\n"),
        (
            ["--min-shapes", "x:1x1x28x28"],
            1,
            "Error: input 'x' needs all of --min-shapes, --opt-shapes and --max-shapes\n",
        ),
        (
            ["--opt-shapes", "y"],
            1,
            "Error: --opt-shapes 'y' is not NAME:DIMS with positive sizes, e.g. input:1x1x28x28\n",
        ),
        (["-o", "{tmp}/model.onnx"], 1, "Error: engine path {tmp}/model.onnx should end in .plan or .engine\n"),
    ],
)
def test_engine_bad_input_is_one_line_and_writes_nothing(tmp_path, cnn_onnx, args, code, message):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    full = ["engine", str(cnn_onnx), *(args if "-o" in args else [*args, "-o", str(tmp_path / "m.plan")])]
    result = _run(*full)
    assert (result.exit_code, result.output) == (code, message.replace("{tmp}", str(tmp_path)))
    assert list(tmp_path.iterdir()) == []


def test_engine_missing_model(tmp_path):
    result = _run("engine", str(tmp_path / "none.onnx"))
    assert (result.exit_code, result.output) == (2, f"Error: {tmp_path}/none.onnx: no such ONNX file\n")


@NO_TRT
def test_bench_without_tensorrt(tmp_path):
    (tmp_path / "a.plan").write_bytes(b"plan")
    result = _run("bench", str(tmp_path / "a.plan"))
    assert result.exit_code == 3 and result.output.startswith(
        "Error: TensorRT is not importable here (No module named 'tensorrt')"
    )
    assert len(result.output.splitlines()) == 1
    bad = _run("bench", str(tmp_path / "a.plan"), "--batch", "0")
    assert (bad.exit_code, bad.output) == (
        1,
        "Error: --batch '0' is invalid: give comma-separated positive integers, e.g. 1,32\n",
    )

"""`nmdeploy calibrate`, `quantize`, `eval` and `verify --trt-rules` through click's CliRunner."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from nmdeploy.cli import cli
from tests.quant.qdq_graphs import qdq_model


def _run(*args: str):
    return CliRunner().invoke(cli, ["-q", *args])


@pytest.fixture()
def source(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "images.npz"
    np.savez(path, x=rng.standard_normal((90, 1, 28, 28), dtype=np.float32), y=np.arange(90) % 10)
    return path


def test_calibrate_quantize_eval_verify(cnn_onnx, source, tmp_path):
    calib = tmp_path / "calib" / "set.npz"
    result = _run("calibrate", "--data", str(source), "-n", "40", "--seed", "3", "-o", str(calib))
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == (
        f"wrote {calib} (40 samples from {source}, seed 3, class-balanced over 10 classes; x 40x1x28x28 float32)"
    )
    manifest = json.loads(calib.with_suffix(".json").read_text())
    assert manifest["per_class"] == {str(c): 4 for c in range(10)} and manifest["seed"] == 3

    out = tmp_path / "m.int8.onnx"
    result = _run(
        "quantize",
        str(cnn_onnx),
        "-o",
        str(out),
        "--calibration",
        str(calib),
        "--method",
        "minmax",
        "--json",
        str(tmp_path / "q.json"),
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == f"wrote {out}: 10 layer(s) INT8 (minmax, per-channel weights, 40 calibration samples)"
    assert lines[1].startswith("lint PASSED: ") and "3 residual Add input(s) quantised" in lines[1]
    assert lines[2] == "2:4 PASSED on the int8 weights: 8 N:M layer(s) kept their zeros"
    assert lines[3].startswith(f"top-1 on 40 samples of {calib}: FP32 ")
    assert lines[4].startswith("cosine FP32 vs INT8, output linear: mean 0.99")
    report = json.loads((tmp_path / "q.json").read_text())
    assert report["schema"] == "nmdeploy.quantize/1" and report["lint"]["ok"] and report["verify"]["ok"]

    result = _run("eval", str(out), "--data", str(source), "--reference", str(cnn_onnx))
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith(f"{out}: top-1 ") and lines[0].endswith(f"on 90 samples of {source}")
    assert lines[2].startswith(f"cosine to {cnn_onnx} on output linear: mean 0.99")
    result = _run("eval", str(out), "--data", str(source), "--json", "-")
    payload = json.loads(result.output)
    assert payload["schema"] == "nmdeploy.eval/1" and payload["samples"] == 90 and 0 <= payload["top1"] <= 1

    result = _run("verify", "--trt-rules", str(out))
    assert result.exit_code == 0, result.output
    assert "trt-rules PASSED: 10 QuantizeLinear, 20 DequantizeLinear, 0 violation(s)" in result.output.splitlines()
    result = _run("verify", "--trt-rules", str(cnn_onnx))
    assert result.exit_code == 0 and (
        "trt-rules PASSED: 0 QuantizeLinear, 0 DequantizeLinear, 0 violation(s); no Q/DQ at all: an FP32 model "
        "(nmdeploy quantize makes the INT8 one)" in result.output.splitlines()
    )


def test_verify_trt_rules_fails_on_illegal_qdq(tmp_path):
    path = tmp_path / "bad.onnx"
    onnx.save(qdq_model(act_zp=3, weight_axis=1), str(path))
    result = _run("verify", "--trt-rules", str(path))
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert "Q/DQ rule broken at x_q: [zero-point] zero point 3 != 0: asymmetric; use symmetric quantization" in lines
    assert (
        "Q/DQ rule broken at w_dq: [per-axis] per-axis scales along axis 1; Conv weight needs the output-channel axis 0"
        in lines
    )
    assert "trt-rules FAILED: 2 QuantizeLinear, 4 DequantizeLinear, 3 violation(s)" in lines
    result = _run("verify", str(path))  # the 2:4 layout alone is fine
    assert result.exit_code == 0
    result = _run("verify", "--trt-rules", "--json", "-", str(path))
    payload = json.loads(result.output)
    assert payload["ok"] and not payload["trt_rules"]["ok"] and len(payload["trt_rules"]["violations"]) == 3


def test_quantize_bad_input_is_one_line_and_writes_nothing(cnn_onnx, tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.zeros((8, 3, 28, 28), np.float32))
    out = tmp_path / "q.onnx"
    result = _run("quantize", str(cnn_onnx), "-o", str(out), "--calibration", str(bad))
    assert result.exit_code == 2
    assert result.output == (
        f"Error: calibration data {str(bad)!r}: input 'x' has shape [8, 3, 28, 28], the model wants [N, 1, 28, 28] "
        "(dim 1: 3 != 1); use data made for this model\n"
    )
    assert not out.exists()
    result = _run("quantize", str(cnn_onnx), "--calibration", str(bad), "--method", "kl")
    assert (
        result.exit_code == 2
        and "Invalid value for '--method': 'kl' is not one of 'minmax', 'entropy', 'percentile'" in result.output
    )


def test_calibrate_needs_a_source_and_an_output(tmp_path):
    result = _run("calibrate", "--data", "x.npz")
    assert result.exit_code == 2
    assert result.output == "Error: give --data SPEC and -o FILE.npz (or --definition NAME.yaml)\n"
    (tmp_path / "d.yaml").write_text("data: nowhere.npz\ncount: 4\n")
    result = _run("calibrate", "--definition", str(tmp_path / "d.yaml"))
    assert (
        result.exit_code == 2
        and result.output
        == "Error: nowhere.npz: no such data file; give an .npz path, a built-in name (fashion-mnist) or module:callable\n"
    )


def test_quantize_calibrates_as_the_build_does_by_default(tmp_path, cnn_onnx):
    """Without --method, quantize uses the build's (and the library's) method: minmax, the best on our benchmark."""
    from nmdeploy.pipeline.recipe import Recipe

    calib = tmp_path / "c.npz"
    np.savez(calib, x=np.random.default_rng(0).normal(size=(16, 1, 28, 28)).astype(np.float32))
    result = _run("quantize", str(cnn_onnx), "-o", str(tmp_path / "q.onnx"), "--calibration", str(calib))
    assert result.exit_code == 0, result.output
    assert (
        result.output.splitlines()[0]
        == f"wrote {tmp_path / 'q.onnx'}: 10 layer(s) INT8 (minmax, per-channel weights, 16 calibration samples)"
    )
    assert Recipe().quantize.method == "minmax" and "[default: minmax]" in _run("quantize", "--help").output

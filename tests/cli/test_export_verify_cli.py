"""`nmdeploy export` and `nmdeploy verify` end to end: exit codes, one-line errors, JSON."""

from __future__ import annotations

import json

import onnx
import pytest
import torch
from click.testing import CliRunner
from onnx import helper

import nmdeploy
from nmdeploy.cli import cli
from tests.export.graphs import model, sparse_24


def _run(*args: str):
    return CliRunner().invoke(cli, list(args))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from nmdeploy.examples.fashion_mnist import FashionResNet

    torch.manual_seed(0)
    net = FashionResNet()
    sp = nmdeploy.sparsify(net, method="srste")
    folder = tmp_path_factory.mktemp("ckpt")
    torch.save({"model": net.state_dict(), "sparsity": sp.state_dict()}, folder / "sparse.pt")
    dense = FashionResNet()
    torch.save(dense.state_dict(), folder / "dense.pt")
    return folder


def test_export_then_verify(checkpoint, tmp_path):
    out = tmp_path / "sub" / "m.onnx"
    result = _run(
        "export",
        str(checkpoint / "sparse.pt"),
        "--model",
        "fashion-resnet",
        "--input-shape",
        "2x1x28x28",
        "-o",
        str(out),
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith(f"wrote {out} (opset ") and lines[-1] == f"next: nmdeploy verify {out}"
    assert lines[1].startswith("parity linear: max |onnxruntime - torch| = ")
    result = _run("verify", str(out), "--json", str(tmp_path / "r.json"))
    assert result.exit_code == 0, result.output
    assert "PASSED: 10 weight(s) checked, every required layer is 2:4" in result.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["ok"] and sum(layer["required"] for layer in report["layers"]) == 8


def test_dense_checkpoint_passes_by_default_and_fails_require_all(checkpoint, tmp_path):
    out = tmp_path / "d.onnx"
    assert (
        _run(
            "export",
            str(checkpoint / "dense.pt"),
            "--model",
            "fashion-resnet",
            "--input-shape",
            "1x1x28x28",
            "-o",
            str(out),
        ).exit_code
        == 0
    )
    assert _run("verify", str(out)).exit_code == 0
    result = _run("verify", str(out), "--require", "all")
    # 9, not 10: the stem has one input channel, so no group can hold more than one non-zero
    assert result.exit_code == 1 and "FAILED: 9 required layer(s) not 2:4" in result.output


def test_verify_violation_exit_1_and_json_stdout(tmp_path):
    w = sparse_24((8, 16), axis=1)
    w[3, 4:8] = 1.0
    path = tmp_path / "bad.onnx"
    onnx.save(
        model([helper.make_node("Gemm", ["x", "W"], ["y"], transB=1, name="fc")], {"W": w}, [("x", [2, 16])], ["y"]),
        str(path),
    )
    result = _run("verify", str(path), "--json", "-")
    assert result.exit_code == 1
    data = json.loads(result.output)
    assert data["ok"] is False and data["layers"][0]["first_violation"] == [3, 4]


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["verify", "{tmp}/missing.onnx"],
            "Error: {tmp}/missing.onnx: no such file; pass the path of an .onnx model\n",
        ),
        (
            ["verify", "{tmp}/junk.onnx"],
            "Error: {tmp}/junk.onnx is not a readable ONNX model (DecodeError); pass a complete .onnx file\n",
        ),
        (
            ["verify", "{tmp}/ok.onnx", "--pattern", "a:b"],
            """Error: pattern 'a:b' is invalid: write it as "N:M" with integers 0 < N < M <= 32, e.g. "2:4"\n""",
        ),
        (
            [
                "export",
                "{tmp}/missing.pt",
                "--model",
                "fashion-resnet",
                "--input-shape",
                "1x1x28x28",
                "-o",
                "{tmp}/o.onnx",
            ],
            "Error: {tmp}/missing.pt: no such checkpoint file\n",
        ),
        (
            [
                "export",
                "{tmp}/junk.onnx",
                "--model",
                "fashion-resnet",
                "--input-shape",
                "1x1x28x28",
                "-o",
                "{tmp}/o.onnx",
            ],
            None,
        ),
        (
            [
                "export",
                "{tmp}/dense.pt",
                "--model",
                "no.such:thing",
                "--input-shape",
                "1x1x28x28",
                "-o",
                "{tmp}/o.onnx",
            ],
            None,
        ),
        (
            ["export", "{tmp}/dense.pt", "--model", "fashion-resnet", "--input-shape", "1xax28", "-o", "{tmp}/o.onnx"],
            "Error: --input-shape '1xax28' is invalid: write positive sizes joined by 'x', e.g. 1x1x28x28\n",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, message, tmp_path, checkpoint):
    (tmp_path / "junk.onnx").write_text("not onnx")
    (tmp_path / "dense.pt").write_bytes((checkpoint / "dense.pt").read_bytes())
    onnx.save(model([helper.make_node("Relu", ["x"], ["y"])], {}, [("x", [1])], ["y"]), str(tmp_path / "ok.onnx"))
    result = _run(*[a.format(tmp=tmp_path) for a in args])
    assert result.exit_code == 2, result.output
    assert result.output.count("\n") == 1 and result.output.startswith("Error: ")
    if message is not None:
        assert result.output == message.format(tmp=tmp_path)
    assert not (tmp_path / "o.onnx").exists()


def test_verify_says_when_there_is_nothing_to_check(tmp_path):
    path = tmp_path / "relu.onnx"
    onnx.save(model([helper.make_node("Relu", ["x"], ["y"])], {}, [("x", [1])], ["y"]), str(path))
    result = _run("verify", str(path))
    assert result.exit_code == 0
    assert result.output.replace("\n", " ").startswith(
        f"{path}: no Conv/ConvTranspose/Gemm/MatMul with a constant weight"
    )

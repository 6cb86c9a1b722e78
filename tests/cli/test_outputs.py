"""Existing outputs: refused without --force, replaced whole with it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from nmdeploy.cli import cli


def test_an_existing_report_is_kept_without_force_and_replaced_with_it(tmp_path, cnn_onnx, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copyfile(cnn_onnx, "model.onnx")
    (tmp_path / "verify.json").write_text("an older report\n")
    refused = CliRunner().invoke(cli, ["verify", "model.onnx", "--json", "verify.json"])
    assert refused.exit_code == 1 and (tmp_path / "verify.json").read_text() == "an older report\n"
    forced = CliRunner().invoke(cli, ["verify", "model.onnx", "--json", "verify.json", "--force"])
    assert forced.exit_code == 0, forced.output
    report = json.loads((tmp_path / "verify.json").read_text())
    assert report["schema"] == "nmdeploy.verify/1" and report["ok"] is True
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", "verify.json"]  # no temporary file left


def _not_onnx(folder):
    (folder / "model.onnx").write_bytes(b"not a protobuf")
    return str(folder / "model.onnx")


@pytest.mark.parametrize(
    "argv, code, message",
    [
        (
            lambda f: [
                "export",
                "dense.pt",
                "--model",
                "nosuch_pkg.nets:Net",
                "--input-shape",
                "1x1x28x28",
                "-o",
                "new/deeper/m.onnx",
            ],
            2,
            "model spec 'nosuch_pkg.nets:Net' cannot be imported (No module named 'nosuch_pkg'); check the module path and name",
        ),
        (
            lambda f: ["quantize", _not_onnx(f), "--calibration", "c.npz", "-o", "new/deeper/m.int8.onnx"],
            2,
            "model.onnx is not a readable ONNX model (DecodeError); pass a complete .onnx file",
        ),
        (
            lambda f: ["engine", _not_onnx(f), "-o", "new/deeper/m.plan"],
            2,
            "model.onnx is not a readable ONNX model (DecodeError); pass the .onnx from nmdeploy quantize",
        ),
        (
            lambda f: ["calibrate", "--data", "missing.npz", "-o", "new/deeper/c.npz"],
            2,
            "missing.npz: no such data file; give an .npz path, a built-in name (fashion-mnist) or module:callable",
        ),
    ],
    ids=["export", "quantize", "engine", "calibrate"],
)
def test_a_rejected_input_creates_no_output_folder(tmp_path, monkeypatch, argv, code, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dense.pt").write_bytes(b"")
    args = argv(tmp_path)
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == code, result.output
    assert result.output.endswith(message + "\n") and len(result.output.splitlines()) == 1, result.output
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("where", ["before", "after"])
def test_global_options_work_before_and_after_the_subcommand(tmp_path, monkeypatch, where):
    monkeypatch.chdir(tmp_path)
    command = ["verify", Path(_not_onnx(tmp_path)).name]
    args = ["--debug", *command] if where == "before" else [*command, "--debug"]
    result = CliRunner().invoke(cli, args)
    assert type(result.exception).__name__ == "InputError"  # --debug: raised, not turned into one line
    for flag in ("-q", "--quiet", "-v", "-vv", "--verbose"):
        options = [flag, *command] if where == "before" else [*command, flag]
        result = CliRunner().invoke(cli, options)
        assert result.exit_code == 2, (flag, result.output)
        assert (
            result.output
            == "Error: model.onnx is not a readable ONNX model (DecodeError); pass a complete .onnx file\n"
        )

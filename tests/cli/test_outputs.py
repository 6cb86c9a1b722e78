"""Existing outputs: refused without --force, replaced whole with it."""

from __future__ import annotations

import json
import shutil

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

"""Every row of the errors table (docs/errors.md), run through the CLI: one line, its exit code, nothing left behind."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from nmdeploy.cli import cli
from tests.cli.error_cases import CASES, command, inject, readme_rows


@pytest.fixture(scope="module")
def fixtures(cnn_onnx, task_files) -> dict:
    return {"cnn_onnx": cnn_onnx, "train": task_files[0], "val": task_files[1]}


def _hashes(folder: Path) -> dict[Path, str]:
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()}


def _run(case, folder: Path, fixtures: dict, monkeypatch, *extra: str):
    monkeypatch.chdir(folder)
    if case.setup is not None:
        case.setup(folder, fixtures)
    inject(case, monkeypatch)
    before = {p for p in folder.rglob("*")}
    hashes = _hashes(folder)
    result = CliRunner().invoke(cli, [*extra, *case.argv], env=case.env, prog_name="nmdeploy")
    return result, before, hashes


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_gives_one_line_its_exit_code_and_leaves_nothing(case, tmp_path, fixtures, monkeypatch):
    result, before, hashes = _run(case, tmp_path, fixtures, monkeypatch)
    assert result.exit_code == case.code, (result.output, result.stderr, result.exception)
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    message = lines[0].removeprefix("Error: ")
    if os.environ.get("NMDEPLOY_RECORD_ERRORS"):  # python -m tests.cli.error_cases rewrites the table
        with open(os.environ["NMDEPLOY_RECORD_ERRORS"], "a") as fh:
            fh.write(json.dumps({case.id: message}) + "\n")
    else:
        assert readme_rows()[CASES.index(case)] == (command(case), case.code, message)
    for artifact in case.artifacts:
        assert not (tmp_path / artifact).exists(), artifact
    left = {p for p in tmp_path.rglob("*")} - before
    if case.id != "no-tensorrt":  # that one writes the target bundle on purpose
        assert not left, sorted(str(p.relative_to(tmp_path)) for p in left)  # no temporary or partial files either
    after = _hashes(tmp_path)
    changed = sorted(str(p.relative_to(tmp_path)) for p, digest in hashes.items() if after.get(p) != digest)
    assert not changed, changed  # every file that was there is there, byte for byte


def test_the_readme_table_lists_every_case_once():
    rows = readme_rows()
    assert len(CASES) >= 100 and len({c.id for c in CASES}) == len(CASES)
    assert [row[:2] for row in rows] == [(command(c), c.code) for c in CASES]


def test_debug_shows_the_traceback(tmp_path, fixtures, monkeypatch):
    case = next(c for c in CASES if c.id == "not-onnx")
    result, _, _ = _run(case, tmp_path, fixtures, monkeypatch, "--debug")
    assert result.exit_code == 1 and type(result.exception).__name__ == "InputError"  # raised, not turned into one line
    assert str(result.exception) == "model.onnx is not a readable ONNX model (DecodeError); pass a complete .onnx file"

"""The claim on every output (nmdeploy.outputs): what may be written, what never, and that it creates nothing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nmdeploy.errors import OutputError
from nmdeploy.outputs import Output, claim_outputs


def _listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture
def here(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "model.onnx").write_text("model\n")
    return tmp_path


def test_new_outputs_pass_and_nothing_is_created(here):
    claim_outputs([Path("new/deeper/a.json"), Output(Path("bundle"), folder=True), None, "-"], False, ["model.onnx"])
    assert _listing(here) == ["model.onnx"]


@pytest.mark.parametrize("force", [False, True])
def test_an_input_is_never_an_output(here, force):
    os.symlink("model.onnx", here / "link.onnx")
    for output in ("model.onnx", "./model.onnx", "link.onnx"):  # the same file under other names too
        with pytest.raises(OutputError, match=r"is also an input of this command; write the output to another path$"):
            claim_outputs([Path(output)], force, ["model.onnx"])
    with pytest.raises(
        OutputError, match=r"^\. holds model.onnx, an input of this command; write into another folder$"
    ):
        claim_outputs([Output(Path("."), folder=True)], force, ["model.onnx"])


def test_two_outputs_on_one_path_are_refused(here):
    with pytest.raises(OutputError, match=r"^x/../a.json is given for two outputs \(a.json too\)"):
        claim_outputs([Path("a.json"), Path("x/../a.json")], True)


def test_existing_files_need_force_and_a_rewritten_file_may_exist(here):
    (here / "report.json").write_text("old\n")
    with pytest.raises(OutputError, match=r"^report.json already exists; pass --force"):
        claim_outputs([Path("report.json")], False)
    claim_outputs([Path("report.json")], True)
    claim_outputs([Output(Path("report.json"), rewrites=True)], False)  # a timing cache: read, then saved
    assert (here / "report.json").read_text() == "old\n"


def test_force_replaces_a_folder_only_if_nmdeploy_made_it_or_it_was_named(here):
    for name, files in (("ours", ["bundle.json"]), ("theirs", ["notes.txt"]), ("build", ["manifest.json", "dense.pt"])):
        (here / name).mkdir()
        for file in files:
            (here / name / file).write_text("x\n")
    ours = Output(Path("ours"), folder=True, named=False, marker="bundle.json")
    theirs = Output(Path("theirs"), folder=True, named=False, marker="bundle.json")
    with pytest.raises(OutputError, match=r"^ours already exists; pass --force"):
        claim_outputs([ours], False)
    claim_outputs([ours], True)
    with pytest.raises(OutputError, match=r"^theirs exists and is not one nmdeploy wrote \(no bundle.json\)"):
        claim_outputs([theirs], True)
    claim_outputs([Output(Path("theirs"), folder=True, named=True, marker="bundle.json")], True)  # named exactly
    for named in (False, True):  # a build's folder, never
        with pytest.raises(
            OutputError, match=r"^build is an nmdeploy build folder; write this output into a folder of its own$"
        ):
            claim_outputs([Output(Path("build"), folder=True, named=named, marker="bundle.json")], True)


def test_kinds_must_match_and_unwritable_places_are_one_line(here):
    (here / "file").write_text("x\n")
    (here / "folder").mkdir()
    with pytest.raises(OutputError, match=r"^file is a file; give a folder for this output$"):
        claim_outputs([Output(Path("file"), folder=True)], True)
    with pytest.raises(OutputError, match=r"^folder is a folder; give a file name for the output$"):
        claim_outputs([Path("folder")], True)
    with pytest.raises(OutputError, match=r"^cannot write file/x.json: a part of the path is a file, not a folder"):
        claim_outputs([Path("file/x.json")], False)
    with pytest.raises(OutputError, match=r"^cannot write /proc/nmdeploy/x.json: .*; choose another output path"):
        claim_outputs([Path("/proc/nmdeploy/x.json")], False)
    assert _listing(here) == ["file", "folder", "model.onnx"]

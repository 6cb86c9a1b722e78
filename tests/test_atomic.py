"""The one writer every artifact goes through: all or nothing, synced, one-line errors."""

from __future__ import annotations

import errno
import os
import stat

import pytest

import nmdeploy._atomic as atomic
from nmdeploy.errors import OutputError


def _listing(folder):
    return sorted(p.name for p in folder.iterdir())


def test_write_atomic_syncs_the_file_and_the_folder(tmp_path, monkeypatch):
    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(stat.S_ISDIR(os.fstat(fd).st_mode)), real(fd)))
    atomic.write_atomic(tmp_path / "a" / "report.json", "{}\n")
    assert (tmp_path / "a" / "report.json").read_text() == "{}\n" and _listing(tmp_path / "a") == ["report.json"]
    assert synced == [False, True]  # the data, then the rename in its folder
    assert stat.S_IMODE((tmp_path / "a" / "report.json").stat().st_mode) == 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_full_disk_on_the_second_file_keeps_both_old_files_and_leaves_no_temporaries(tmp_path, monkeypatch):
    (tmp_path / "calib.npz").write_bytes(b"old npz")
    (tmp_path / "calib.json").write_text("old json")
    calls = {"n": 0}
    real = atomic._write_payload

    def full_on_second(fh, payload):
        calls["n"] += 1
        if calls["n"] == 2:
            fh.write(payload[:3])
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fh, payload)

    monkeypatch.setattr(atomic, "_write_payload", full_on_second)
    with pytest.raises(OutputError) as info:
        atomic.write_all_atomic([(tmp_path / "calib.npz", b"new npz"), (tmp_path / "calib.json", "new json")])
    assert str(info.value) == (
        f"cannot write {tmp_path / 'calib.json'}: the disk is full; free space (or choose another "
        "output folder) and re-run (nothing was written there)"
    )
    assert (tmp_path / "calib.npz").read_bytes() == b"old npz" and (tmp_path / "calib.json").read_text() == "old json"
    assert _listing(tmp_path) == ["calib.json", "calib.npz"]


def test_an_unknown_os_error_is_not_disguised(tmp_path, monkeypatch):
    def broken(fh, payload):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(atomic, "_write_payload", broken)
    with pytest.raises(OSError) as info:
        atomic.write_atomic(tmp_path / "x.bin", b"1")
    assert info.value.errno == errno.EIO and not isinstance(info.value, OutputError) and _listing(tmp_path) == []


def test_atomic_output_publishes_only_on_success(tmp_path):
    target = tmp_path / "model.onnx"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="check failed"):
        with atomic.atomic_output(target) as folder:
            (folder / "model.onnx").write_text("new")
            raise RuntimeError("check failed")
    assert target.read_text() == "old" and _listing(tmp_path) == ["model.onnx"]
    with atomic.atomic_output(target) as folder:
        (folder / "model.onnx").write_text("new")
        (folder / "model.onnx.data").write_text("weights")
    assert target.read_text() == "new" and _listing(tmp_path) == ["model.onnx", "model.onnx.data"]


def test_publish_folder_replaces_the_old_folder_whole_or_not_at_all(tmp_path, monkeypatch):
    dest = tmp_path / "bundle"
    dest.mkdir()
    (dest / "old.txt").write_text("old")
    stage = tmp_path / ".bundle-new"
    stage.mkdir()
    (stage / "new.txt").write_text("new")
    real = os.replace

    def refuse_the_stage(src, dst):
        if str(src) == str(stage):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(src, dst)

    monkeypatch.setattr(os, "replace", refuse_the_stage)
    with pytest.raises(OutputError, match="bundle: the disk is full"):
        atomic.publish_folder(stage, dest)
    assert _listing(dest) == ["old.txt"]  # put back
    monkeypatch.setattr(os, "replace", real)
    atomic.publish_folder(stage, dest)
    assert _listing(dest) == ["new.txt"] and _listing(tmp_path) == ["bundle"]


def test_check_writable_fails_up_front_on_a_folder_nobody_can_write(tmp_path):
    atomic.check_writable(tmp_path / "new" / "deeper" / "model.onnx")  # creates nothing, leaves no probe
    assert _listing(tmp_path) == []
    with pytest.raises(OutputError, match=r"^cannot write /sys/x/model.onnx: the folder is read-only or not writable"):
        atomic.check_writable("/sys/x/model.onnx")

"""nmdeploy as a user gets it: a wheel installed outside the checkout runs the built-in example.

The wheel is built from a copy of the sources (the checkout stays untouched) and installed
into a fresh virtual environment whose only other packages are the dependencies already
installed here (a ``.pth`` file points at them, so nothing is downloaded). Every command then
runs from an empty folder elsewhere: the checkout is not on ``sys.path``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.data.test_sources import needs_fashion_mnist

ROOT = Path(__file__).resolve().parents[1]


def _run(args: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The ``bin/`` folder of a fresh venv with nmdeploy installed from its wheel."""
    tmp = tmp_path_factory.mktemp("install")
    source = tmp / "src"
    source.mkdir()
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copyfile(ROOT / name, source / name)
    shutil.copytree(ROOT / "nmdeploy", source / "nmdeploy", ignore=shutil.ignore_patterns("__pycache__"))
    built = _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp / "dist"),
            str(source),
        ],
        tmp,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = (tmp / "dist").glob("nmdeploy-*.whl")
    venv = tmp / "venv"
    assert _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp).returncode == 0
    # the dependencies (torch, onnx, ...) from this environment; its .pth files (the editable nmdeploy) are not read
    site = Path(
        _run(
            [str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], tmp
        ).stdout.strip()
    )
    (site / "deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    done = _run(
        [
            str(venv / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-index",
            "--ignore-installed",
            "-q",
            str(wheel),
        ],
        tmp,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return venv / "bin"


def test_the_installed_package_is_the_wheel_and_carries_the_example(installed, tmp_path):
    code = (
        "import nmdeploy, nmdeploy.examples.fashion_mnist as f; "
        "print(nmdeploy.__file__); print(f.RECIPE.is_file(), f.CALIBRATION.is_file(), f.CALIBRATION_SET.is_file())"
    )
    shown = _run([str(installed / "python"), "-c", code], tmp_path)
    assert shown.returncode == 0, shown.stderr
    where, files = shown.stdout.splitlines()
    assert Path(where).is_relative_to(installed.parent) and not Path(where).is_relative_to(ROOT)
    assert files == "True True True"
    dumped = _run([str(installed / "nmdeploy"), "build", "--dump-recipe"], tmp_path)
    assert dumped.returncode == 0, dumped.stderr
    assert "model:\n  spec: fashion-resnet\n" in dumped.stdout and "  pattern: '2:4'\n" in dumped.stdout
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
@needs_fashion_mnist
def test_a_one_epoch_build_of_the_built_in_example_from_another_folder(installed, tmp_path):
    quick = [
        "dense.epochs=1",
        "finetune.epochs=1",
        "sparsity.end_epoch=0",
        "data.train_subset=4096",
        "data.val_subset=512",
        "quantize.count=64",
        "device=cpu",
    ]
    built = _run(
        [str(installed / "nmdeploy"), "-q", "build", *(a for item in quick for a in ("--set", item)), "--out", "out"],
        tmp_path,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    stages = manifest["stages"]
    assert [stages[s]["status"] for s in ("dense", "sparse", "export", "verify", "quantize")] == ["done"] * 5
    assert stages["engine"]["status"] in ("bundled", "done")
    assert manifest["accuracy"]["metric"] == "top-1" and 0.5 < manifest["accuracy"]["int8"] <= 1
    assert (tmp_path / "out" / "report.md").is_file() and sorted(p.name for p in tmp_path.iterdir()) == ["out"]

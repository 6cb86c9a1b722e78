"""A build from an image folder as users have one: mixed sizes and modes, a corrupt file, workers, augmentation."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from nmdeploy.cli import cli as main
from nmdeploy.errors import InputError
from nmdeploy.pipeline.build import build
from nmdeploy.pipeline.recipe import load_recipe


def _folder(root, per_class: int, seed: int):
    """10 classes of a bright square at a class-specific place, RGB and grayscale, 28 to 44 pixels."""
    rng = np.random.default_rng(seed)
    for label in range(10):
        folder = root / f"class{label}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            size = int(rng.integers(28, 45))
            picture = rng.integers(0, 60, (size, size), np.uint8)
            at = int(label * (size - 8) / 9)
            picture[at : at + 8, at : at + 8] = 250
            image = Image.fromarray(picture)
            (image.convert("RGB") if i % 3 == 0 else image).save(folder / f"{i}.{'jpg' if i % 2 else 'png'}")
    return root


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    _folder(root / "train", 24, 0)
    _folder(root / "val", 6, 1)
    (root / "train" / "class3" / "truncated.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a whole jpeg")
    return root


def _overrides(root, *extra):
    return [
        f"data.train={root}",
        f"data.val={root}",
        "data.image_size=28",
        "data.channels=1",
        "data.augment=true",
        "data.workers=2",
        "dense.epochs=1",
        "dense.batch_size=32",
        "finetune.epochs=1",
        "finetune.batch_size=32",
        "sparsity.end_epoch=0",
        "quantize.count=40",
        "device=cpu",
        *extra,
    ]


def test_a_build_reads_the_folder_lazily_skips_and_counts_the_corrupt_file(folders, tmp_path):
    lines = []
    with pytest.raises(
        InputError,
        match=r"train/class3/truncated.jpg is not a readable image .*skip such files with data.skip_bad: true \(--skip-bad\)",
    ):
        build(load_recipe(None, _overrides(folders)), tmp_path / "refused", say=lines.append)
    assert not (tmp_path / "refused" / "sparse.pt").exists()
    out = tmp_path / "out"
    result = build(load_recipe(None, _overrides(folders, "data.skip_bad=true")), out, say=lines.append)
    stages = result.manifest["stages"]
    for stage in ("dense", "sparse"):
        skipped = stages[stage]["metrics"]["data_skipped"]
        assert skipped == {"train": {"count": 1, "first": [str(folders / "train" / "class3" / "truncated.jpg")]}}
    assert stages["quantize"]["status"] == "done" and (out / "model.int8.onnx").is_file()
    assert any(line.startswith("data: skipped unreadable files: train 1 (first: ") for line in lines)
    runner = CliRunner()
    evaluated = runner.invoke(main, ["eval", str(out / "model.onnx"), "--data", str(folders), "--json", "-"])
    assert evaluated.exit_code == 0, evaluated.output
    report = json.loads(evaluated.output)
    assert report["samples"] == 60 and report["data"] == str(folders / "val")  # 28x28 gray from the model's input
    sized = runner.invoke(main, ["eval", str(out / "model.onnx"), "--data", str(folders), "--image-size", "32"])
    assert sized.exit_code == 2 and "(dim 2: 32 != 28); use data made for this model" in sized.output


def test_calibrate_reads_only_the_drawn_images(folders, tmp_path, monkeypatch):
    from nmdeploy.data import images

    opened = []
    original = images.ImageFolderSource.read

    def counting(self, index, rng=None):
        opened.append(index)
        return original(self, index, rng)

    monkeypatch.setattr(images.ImageFolderSource, "read", counting)
    result = CliRunner().invoke(
        main,
        ["calibrate", "--data", str(folders / "val"), "-n", "20", "-o", str(tmp_path / "c.npz"), "--image-size", "28",
         "--channels", "1", "--workers", "0"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "c.json").read_text())
    assert manifest["count"] == 20 and manifest["balanced"] and manifest["per_class"] == {str(c): 2 for c in range(10)}
    assert manifest["inputs"] == {"x": [20, 1, 28, 28]} and "centre crop 28x28" in manifest["preprocessing"]
    assert len(opened) == 20 and len(set(opened)) == 20  # of 60 files, the drawn 20 alone

"""Image folders as users have them: mixed sizes and modes, lazy decoding, transforms, bad files."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from nmdeploy.data import DataConfig, ImageFolderSource, open_data
from nmdeploy.data.source import BadSample
from nmdeploy.errors import ConfigError, InputError


def _save(path, array, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode).save(path)


def _mixed(root):
    """Two classes of RGB and grayscale images of four different sizes, and a stray text file."""
    _save(root / "cat" / "a.png", np.full((30, 40, 3), (200, 10, 10), np.uint8))
    _save(root / "cat" / "b.jpg", np.full((50, 20, 3), (10, 200, 10), np.uint8))
    _save(root / "dog" / "c.png", np.full((64, 64), 128, np.uint8))  # grayscale
    _save(root / "dog" / "deep" / "d.bmp", np.full((17, 33, 3), 90, np.uint8))  # in a sub-folder
    (root / "dog" / "notes.txt").write_text("not an image")
    return root


def test_mixed_sizes_and_modes_become_one_shape(tmp_path):
    source = open_data(str(_mixed(tmp_path / "imgs")), "train", DataConfig(image_size=16, channels=3))
    assert isinstance(source, ImageFolderSource)
    assert len(source) == 4 and source.classes == ["cat", "dog"]
    assert source.known_labels().tolist() == [0, 0, 1, 1]
    assert [source.path(i).name for i in range(4)] == ["a.png", "b.jpg", "c.png", "d.bmp"]
    batch = source.take(np.arange(4))
    assert batch.inputs["x"].shape == (4, 3, 16, 16) and batch.inputs["x"].dtype == np.float32
    assert batch.labels.tolist() == [0, 0, 1, 1]
    # uniform images stay uniform through resize and crop; grayscale is replicated to RGB
    np.testing.assert_allclose(batch.inputs["x"][0, :, 5, 5], np.array([200, 10, 10]) / 255, atol=1e-6)
    np.testing.assert_allclose(batch.inputs["x"][2], np.full((3, 16, 16), 128 / 255, np.float32), atol=1e-6)
    gray = open_data(str(tmp_path / "imgs"), "train", DataConfig(image_size=(8, 12), channels=1)).take([0])
    assert gray.inputs["x"].shape == (1, 1, 8, 12)
    expected = (200 * 299 + 10 * 587 + 10 * 114) / 1000 / 255  # Pillow's L = ITU-R 601-2 luma
    assert abs(float(gray.inputs["x"][0, 0, 4, 6]) - expected) < 1 / 255


def test_the_first_image_decides_channels_when_not_set(tmp_path):
    _save(tmp_path / "g" / "a" / "1.png", np.zeros((4, 4), np.uint8))
    _save(tmp_path / "g" / "a" / "2.png", np.zeros((4, 4, 3), np.uint8))
    source = open_data(str(tmp_path / "g"), "train")
    assert source.channels == 1 and source.take([0, 1]).inputs["x"].shape == (2, 1, 4, 4)


def test_images_of_other_sizes_need_an_image_size(tmp_path):
    root = _mixed(tmp_path / "imgs")
    source = open_data(str(root), "train")
    with pytest.raises(
        InputError, match=r"imgs/cat/b.jpg is 20x50 but the first image, cat/a.png, is 40x30; set data.image_size"
    ):
        source.take([0, 1])


def test_normalisation_is_exact(tmp_path):
    _save(tmp_path / "n" / "a" / "1.png", np.full((8, 8, 3), (255, 128, 0), np.uint8))
    config = DataConfig(image_size=8, mean=(0.5, 0.25, 0.0), std=(0.5, 0.25, 2.0))
    x = open_data(str(tmp_path / "n"), "train", config).take([0]).inputs["x"][0]
    np.testing.assert_allclose(x[:, 3, 3], [(1 - 0.5) / 0.5, (128 / 255 - 0.25) / 0.25, 0.0], rtol=1e-5)


def test_evaluation_keeps_the_centre_and_augmentation_depends_on_seed_epoch_index(tmp_path):
    left_red = np.zeros((40, 60, 3), np.uint8)
    left_red[:, :30, 0] = 255  # left half red, right half black
    _save(tmp_path / "f" / "a" / "1.png", left_red)
    evaluation = open_data(str(tmp_path / "f"), "val", DataConfig(image_size=16, augment=True), train=False)
    x = evaluation.take([0]).inputs["x"][0]
    assert not evaluation.random and x[0, :, :4].min() > 0.99 and x[0, :, -4:].max() < 0.01  # not flipped
    train = open_data(str(tmp_path / "f"), "train", DataConfig(image_size=16, augment=True), train=True)
    assert train.random

    def crop(*key):
        return train.read(0, np.random.default_rng(key))[0][0]

    np.testing.assert_array_equal(crop(0, 1, 0), crop(0, 1, 0))  # same (seed, epoch, index): same pixels
    crops = [crop(0, epoch, 0) for epoch in range(32)]
    flipped = sum(1 for c in crops if c[0, :, -1].mean() > c[0, :, 0].mean())
    assert 4 <= flipped <= 28  # horizontal flips, about half of the time
    _save(tmp_path / "noise" / "a" / "1.png", np.random.default_rng(0).integers(0, 255, (40, 60, 3), np.uint8))
    noise = open_data(str(tmp_path / "noise"), "train", DataConfig(image_size=16, augment=True), train=True)
    drawn = {noise.read(0, np.random.default_rng((0, epoch, 0)))[0][0].tobytes() for epoch in range(16)}
    assert len(drawn) == 16  # every epoch its own crop


def test_random_resized_crop_covers_8_to_100_percent(tmp_path):
    from nmdeploy.data.images import _random_crop

    rng = np.random.default_rng(0)
    for _ in range(500):
        left, top, right, bottom = _random_crop(300, 200, rng)
        assert 0 <= left < right <= 300 and 0 <= top < bottom <= 200
        area = (right - left) * (bottom - top) / (300 * 200)
        assert 0.07 <= area <= 1.0
        assert 3 / 4 - 0.05 <= (right - left) / (bottom - top) <= 4 / 3 + 0.05 or area > 0.9


def test_a_jpeg_is_decoded_at_a_reduced_scale_and_still_matches(tmp_path):
    rng = np.random.default_rng(0)
    big = np.kron(rng.integers(0, 255, (8, 8, 3)), np.ones((64, 64, 1))).astype(np.uint8)  # 512x512 of 64-px blocks
    _save(tmp_path / "j" / "a" / "1.jpg", big)
    _save(tmp_path / "p" / "a" / "1.png", big)
    jpeg = open_data(str(tmp_path / "j"), "val", DataConfig(image_size=32)).take([0]).inputs["x"][0]
    png = open_data(str(tmp_path / "p"), "val", DataConfig(image_size=32)).take([0]).inputs["x"][0]
    assert jpeg.shape == png.shape == (3, 32, 32)
    assert np.abs(jpeg - png).mean() < 0.05  # the DCT-scaled decode gives the same picture


def test_a_corrupt_file_is_one_line_naming_it_or_skipped_and_counted(tmp_path):
    root = _mixed(tmp_path / "imgs")
    (root / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    source = open_data(str(root), "train", DataConfig(image_size=8))
    broken = [source.path(i).name for i in range(len(source))].index("broken.png")
    with pytest.raises(
        BadSample,
        match=r"imgs/dog/broken.png is not a readable image \(.*\); remove it, or skip such files with data.skip_bad: true \(--skip-bad\)$",
    ):
        source.take([broken])
    skipping = open_data(str(root), "train", DataConfig(image_size=8, skip_bad=True))
    batch = skipping.take(np.arange(len(skipping)))
    assert len(batch) == len(skipping) - 1 and batch.skipped == (broken,)
    assert broken not in batch.index and len(batch.index) == len(batch)


def test_empty_folders_and_classes_are_refused(tmp_path):
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "x.png").write_bytes(b"")
    with pytest.raises(InputError, match=r"flat has no class sub-folders; an ImageFolder is DIR/<class>/<image files>"):
        open_data(str(tmp_path / "flat"))
    _save(tmp_path / "e" / "a" / "1.png", np.zeros((4, 4), np.uint8))
    (tmp_path / "e" / "b").mkdir()
    (tmp_path / "e" / "b" / "readme.md").write_text("no images")
    with pytest.raises(
        InputError,
        match=r"e/b holds no image files \(.png, .*\); every class folder is a label: add images or remove the folder",
    ):
        open_data(str(tmp_path / "e"))


def test_unicode_names_and_the_split_folder(tmp_path):
    _save(tmp_path / "u" / "train" / "café" / "ü 1.png", np.zeros((4, 4), np.uint8))
    _save(tmp_path / "u" / "val" / "café" / "ö.png", np.zeros((4, 4), np.uint8))
    train = open_data(str(tmp_path / "u"), "train")
    assert train.path(0) == tmp_path / "u" / "train" / "café" / "ü 1.png"
    assert open_data(str(tmp_path / "u"), "test").path(0).name == "ö.png"  # no test/: val/ is held out


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"image_size": 0}, r"data.image_size = 0 is invalid: one size >= 1 \(224\) or two \(\[224, 256\]\)"),
        ({"image_size": (1, 2, 3)}, r"data.image_size = \[1, 2, 3\] is invalid"),
        ({"channels": 2}, r"data.channels = 2 is invalid: use 1 or 3"),
        ({"augment": True}, r"data.augment = true needs data.image_size"),
        ({"mean": (0.5,)}, r"data.mean and std go together: give both or neither"),
        ({"mean": (0.5, 0.5), "std": (1.0,)}, r"data.mean has 2 values but std has 1; give as many"),
        ({"mean": (0.5,), "std": (0.0,)}, r"data.std = \[0.0\] is invalid: every value > 0"),
        (
            {"channels": 1, "mean": (0.1, 0.2, 0.3), "std": (1.0, 1.0, 1.0)},
            r"data.mean has 3 values for data.channels = 1",
        ),
        ({"workers": -1}, r"data.workers = -1 is invalid: 0 or more"),
    ],
)
def test_data_config_rejects_bad_values(values, message):
    with pytest.raises(ConfigError, match=message):
        DataConfig(**values)

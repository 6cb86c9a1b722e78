"""Data specs: .npz files, plug-ins, the Fashion-MNIST IDX reader and its errors."""

from __future__ import annotations

import gzip
import hashlib
import sys
from pathlib import Path

import numpy as np
import pytest

import nmdeploy.examples.fashion_mnist as fmnist_example
import nmdeploy.examples.fashion_mnist.data as fmnist
from nmdeploy.data import ArrayData, load_data
from nmdeploy.errors import InputError

INSTALLED = (fmnist.DATA_DIR / "t10k-images-idx3-ubyte.gz").is_file()
needs_fashion_mnist = pytest.mark.skipif(not INSTALLED, reason="apt-get install dataset-fashion-mnist (.ci/setup does)")


def _idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 8, array.ndim]) + np.array(array.shape, dtype=">u4").tobytes()
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


def test_idx_reader_round_trips(tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    _idx(tmp_path / "a.gz", images)
    assert np.array_equal(fmnist.read_idx(tmp_path / "a.gz"), images)
    (tmp_path / "bad.gz").write_bytes(gzip.compress(b"\x00\x00\x0d\x01\x00\x00\x00\x01abcd"))
    with pytest.raises(InputError, match="not an unsigned-byte IDX file"):
        fmnist.read_idx(tmp_path / "bad.gz")
    (tmp_path / "short.gz").write_bytes(gzip.compress(bytes([0, 0, 8, 1]) + np.array([5], ">u4").tobytes() + b"ab"))
    with pytest.raises(InputError, match=r"truncated \(2 values for shape \(5,\)\)"):
        fmnist.read_idx(tmp_path / "short.gz")


def test_fashion_mnist_loader_preprocesses_a_local_copy(tmp_path, monkeypatch):
    images = np.full((3, 28, 28), 255, np.uint8)
    _idx(tmp_path / "t10k-images-idx3-ubyte.gz", images)
    _idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.array([1, 2, 3], np.uint8))
    monkeypatch.setattr(fmnist, "DATA_DIR", tmp_path)
    data = load_data("fashion-mnist")  # a bare name: the test split by default
    assert (data.source, data.split) == ("fashion-mnist", "test")
    assert data.inputs["x"].shape == (3, 1, 28, 28) and data.inputs["x"].dtype == np.float32
    assert np.allclose(data.inputs["x"], (1 - fmnist.MEAN) / fmnist.STD)
    assert data.labels.tolist() == [1, 2, 3] and data.preprocessing == fmnist.PREPROCESSING
    with pytest.raises(
        InputError,
        match=r"Fashion-MNIST is not installed \(.*train-images-idx3-ubyte.gz is missing\); install it: apt-get install",
    ):
        load_data("fashion-mnist:train")
    with pytest.raises(InputError, match="Fashion-MNIST has no split 'val'; use 'train' or 'test'"):
        load_data("fashion-mnist:val")


@needs_fashion_mnist
def test_committed_calibration_set_regenerates_byte_identical(tmp_path):
    from nmdeploy.quant.calibset import make_calibration_set, read_definition, write_calibration_set

    d = read_definition(fmnist_example.CALIBRATION)
    subset, fields = make_calibration_set(load_data(d.data, "train"), d.count, d.seed)
    manifest = write_calibration_set(tmp_path / "again.npz", subset, fields)
    assert manifest.sha256 == hashlib.sha256(Path(d.output).read_bytes()).hexdigest()


def test_npz_specs(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 2), np.float32), y=np.array([0, 1, 0, 1]))
    data = load_data(str(tmp_path / "d.npz"))
    assert list(data.inputs) == ["x"] and data.labels.tolist() == [0, 1, 0, 1] and len(data) == 4
    np.savez(tmp_path / "bad.npz", x=np.zeros((4, 2)), y=np.zeros(3))
    with pytest.raises(InputError, match=r"arrays disagree on the sample count \{'x': 4, 'y': 3\}"):
        load_data(str(tmp_path / "bad.npz"))
    (tmp_path / "obj.npz").write_bytes(b"not a zip")
    with pytest.raises(InputError, match="obj.npz is not a readable .npz of arrays"):
        load_data(str(tmp_path / "obj.npz"))
    with pytest.raises(InputError, match="missing.npz: no such data file"):
        load_data(str(tmp_path / "missing.npz"))
    with pytest.raises(InputError, match="neither a file, a built-in"):
        load_data("nothing-here")


def test_plugin_specs(tmp_path, monkeypatch):
    (tmp_path / "mydata.py").write_text(
        "import numpy as np\n"
        "def pair(split):\n    return np.ones((5, 3), np.float32), np.arange(5)\n"
        "def named(split):\n    return {'a': np.ones((2, 1), np.float32), 'b': np.zeros((2, 1), np.float32), 'y': np.array([1, 0])}\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "mydata", raising=False)
    pair = load_data("mydata:pair")
    assert pair.inputs["x"].shape == (5, 3) and pair.labels.tolist() == [0, 1, 2, 3, 4]
    named = load_data("mydata:named")
    assert sorted(named.inputs) == ["a", "b"] and named.labels.tolist() == [1, 0]
    with pytest.raises(
        InputError, match=r"data spec 'mydata:nope' cannot be imported .*; check the module path and name"
    ):
        load_data("mydata:nope")


def test_array_data_needs_inputs():
    with pytest.raises(InputError, match="holds no input arrays"):
        ArrayData({}, None, "empty")


def test_dataset_plugins(tmp_path, monkeypatch):
    """A callable may return a map-style dataset, or a (train, val) pair of them."""
    (tmp_path / "mysets.py").write_text(
        "import torch\n"
        "class Squares(torch.utils.data.Dataset):\n"
        "    def __init__(self, n, offset=0):\n        self.n, self.offset = n, offset\n"
        "    def __len__(self):\n        return self.n\n"
        "    def __getitem__(self, i):\n        return torch.full((1, 2, 2), float(i + self.offset)), (i + self.offset) % 3\n"
        "def one(split):\n    return Squares(4)\n"
        "def both(split):\n    return Squares(4), Squares(2, offset=10)\n"
        "class Bare(Squares):\n    def __getitem__(self, i):\n        return torch.zeros(2)\n"
        "def bare(split):\n    return Bare(2)\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "mysets", raising=False)
    one = load_data("mysets:one", "train")
    assert (
        one.inputs["x"].shape == (4, 1, 2, 2) and one.inputs["x"][3].max() == 3 and one.labels.tolist() == [0, 1, 2, 0]
    )
    assert load_data("mysets:both", "train").labels.tolist() == [0, 1, 2, 0]
    val = load_data("mysets:both", "test")
    assert val.inputs["x"][:, 0, 0, 0].tolist() == [10.0, 11.0] and val.labels.tolist() == [1, 2]
    with pytest.raises(
        InputError,
        match=r"^data 'mysets:bare': dataset item 0 is not an \(input, label\) pair nor a dict with a 'label' key$",
    ):
        load_data("mysets:bare")


def test_image_folder_specs(tmp_path):
    from PIL import Image

    for split, count in (("train", 3), ("val", 2)):
        for label, cls in enumerate(("cat", "dog")):
            (tmp_path / "imgs" / split / cls).mkdir(parents=True)
            for i in range(count):
                Image.fromarray(np.full((4, 5), 10 * i + 100 * label, np.uint8)).save(
                    tmp_path / "imgs" / split / cls / f"{i}.png"
                )
    (tmp_path / "imgs" / "train" / "cat" / "notes.txt").write_text("not an image")
    train = load_data(str(tmp_path / "imgs"), "train")
    assert train.inputs["x"].shape == (6, 1, 4, 5) and train.inputs["x"].dtype == np.float32
    assert train.labels.tolist() == [0, 0, 0, 1, 1, 1] and np.isclose(train.inputs["x"][4].max(), 110 / 255)
    assert "classes: cat, dog" in train.preprocessing
    val = load_data(str(tmp_path / "imgs"), "test")  # no test/ folder: val/ is the held-out split
    assert len(val) == 4 and val.source.endswith("imgs/val")
    Image.fromarray(np.zeros((3, 3), np.uint8)).save(tmp_path / "imgs" / "val" / "dog" / "odd.png")
    with pytest.raises(
        InputError,
        match=r"imgs/val/dog/odd.png is 3x3 but the first image, cat/0.png, is 5x4; set data.image_size \(--image-size\) to resize",
    ):
        load_data(str(tmp_path / "imgs"), "test")
    (tmp_path / "flat").mkdir()
    with pytest.raises(InputError, match=r"flat has no class sub-folders; an ImageFolder is DIR/<class>/<image files>"):
        load_data(str(tmp_path / "flat"))

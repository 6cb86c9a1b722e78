"""Fashion-MNIST from the Debian package ``dataset-fashion-mnist`` (numpy only, no download).

The package installs the original gzip-compressed IDX files under
``/usr/share/datasets/fashion-mnist``. Images become float32 ``[N, 1, 28, 28]``, scaled to
[0, 1] and normalised with the training set's mean and standard deviation, the
preprocessing every model of the example is trained, calibrated and evaluated with.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from nmdeploy.errors import InputError

__all__ = ["CLASSES", "DATA_DIR", "MEAN", "PREPROCESSING", "STD", "load", "read_idx"]

DATA_DIR = Path(os.environ.get("NMDEPLOY_FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist"))
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
MEAN, STD = 0.2860, 0.3530  # of the 60k training images in [0, 1]
PREPROCESSING = f"uint8 / 255, then (x - {MEAN}) / {STD}; NCHW float32 [N, 1, 28, 28]"
_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
_INSTALL = "apt-get install -y dataset-fashion-mnist (as root), or set NMDEPLOY_FASHION_MNIST_DIR"


def read_idx(path: str | Path) -> np.ndarray:
    """Decode one gzip-compressed IDX file (unsigned-byte data) into an array of its shape.

    Hand-written because the format is 4 header bytes, big-endian sizes and raw bytes: no
    library is worth a dependency for that.
    """
    path = Path(path)
    raw = gzip.decompress(path.read_bytes())
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise InputError(f"{path} is not an unsigned-byte IDX file; reinstall with: {_INSTALL}")
    ndim = raw[3]
    sizes = tuple(int(s) for s in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(sizes)):
        raise InputError(f"{path} is truncated ({data.size} values for shape {sizes}); reinstall with: {_INSTALL}")
    return data.reshape(sizes)


def load(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """(images float32 [N, 1, 28, 28] preprocessed, labels int64 [N]) of ``split`` (train/test)."""
    if split not in _FILES:
        raise InputError(f"Fashion-MNIST has no split {split!r}; use 'train' or 'test'")
    images_file, labels_file = (DATA_DIR / name for name in _FILES[split])
    if not images_file.is_file() or not labels_file.is_file():
        raise InputError(f"Fashion-MNIST is not installed ({images_file} is missing); install it: {_INSTALL}")
    images = read_idx(images_file)
    labels = read_idx(labels_file).astype(np.int64)
    x = ((images.astype(np.float32) / 255.0 - MEAN) / STD)[:, None, :, :]
    return np.ascontiguousarray(x, dtype=np.float32), labels

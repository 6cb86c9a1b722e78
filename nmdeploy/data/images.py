"""Image folders as users have them: any sizes and modes, decoded one file per item with Pillow.

The layout is torchvision's ImageFolder: ``DIR/<class>/<image files>`` (sub-folders inside a
class folder are read too), sorted class names give the label order, and a sub-folder named
after the split (``train/``, ``val/``, ``test/``) is used when there is one. The transforms
are the usual ImageNet ones, hand-written because torchvision does not import with the
pinned torch build here (Pillow does the decoding and resampling):

* training with ``augment``: a random-resized crop (area 8-100 %, aspect 3/4-4/3) to
  ``image_size``, then a horizontal flip half of the time, drawn from the ``rng`` the loader
  derives from the seed, the epoch and the sample index, so any number of workers give the
  same images;
* otherwise, with ``image_size``: the shorter side resized to ``size / 0.875`` and the centre
  cropped (the 256 -> 224 of ImageNet evaluation); without it, images are kept as stored and
  must all have one size.

JPEGs are decoded at the smallest DCT scale that still covers the crop (``Image.draft``),
which is what makes a large folder fast to read. Pixels are scaled to [0, 1], then
``(x - mean) / std`` per channel when those are given. The file list is kept in a few numpy
arrays rather than a million Python strings, so worker processes share it.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from nmdeploy.data.config import DataConfig
from nmdeploy.data.source import BadSample, Sample, Source
from nmdeploy.errors import InputError, first_line

__all__ = ["IMAGE_SUFFIXES", "ImageFolderSource", "split_folder"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
_SPLIT_ALIASES = {"test": ("test", "val"), "val": ("val", "test"), "train": ("train",)}
_CROP = 0.875  # evaluation: resize to size / 0.875, keep the centre
_GRAY_MODES = ("1", "L", "LA", "I;16", "I;16B", "I;16L", "I", "F")


def split_folder(path: Path, split: str) -> Path:
    """``path/<split>`` (or its alias: test <-> val) when it exists, else ``path``."""
    for name in _SPLIT_ALIASES.get(split, (split,)):
        if (path / name).is_dir():
            return path / name
    return path


def _scan(root: Path) -> tuple[list[str], list[bytes], list[int]]:
    """(class names, file paths relative to root as bytes, labels), sorted like torchvision's ImageFolder."""
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise InputError(f"{root} has no class sub-folders; an ImageFolder is DIR/<class>/<image files>")
    files: list[bytes] = []
    labels: list[int] = []
    for label, cls in enumerate(classes):
        found = []
        for folder, dirs, names in os.walk(root / cls, followlinks=True):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            base = os.path.relpath(folder, root)
            found += [os.path.join(base, n) for n in names if os.path.splitext(n)[1].lower() in IMAGE_SUFFIXES]
        if not found:
            raise InputError(
                f"{root / cls} holds no image files ({', '.join(IMAGE_SUFFIXES)}); every class folder is a label: "
                "add images or remove the folder"
            )
        files += [os.fsencode(f) for f in sorted(found)]
        labels += [label] * len(found)
    return classes, files, labels


class ImageFolderSource(Source):
    """An ImageFolder read lazily; ``train`` picks the training transform (augmented when asked)."""

    def __init__(self, path: Path, split: str, config: DataConfig | None = None, train: bool = False) -> None:
        from PIL import Image

        config = config or DataConfig()
        root = split_folder(path, split)
        self.root = root
        self.source = str(root)
        self.split = split
        self.classes, files, labels = _scan(root)
        lengths = np.fromiter((len(f) for f in files), np.int64, len(files))
        self._offsets = np.concatenate([[0], np.cumsum(lengths)])
        self._blob = np.frombuffer(b"".join(files), np.uint8)
        self._labels = np.asarray(labels, np.int64)
        self.size = config.size
        self.augment = bool(config.augment and train)
        self.skip_bad = config.skip_bad
        first = self.path(0)
        try:
            with Image.open(first) as img:
                mode, stored = img.mode, img.size
        except Exception as exc:
            raise InputError(
                f"{first} is not a readable image ({first_line(exc)}); remove it from the folder"
            ) from None
        self.channels = config.channels or (1 if mode in _GRAY_MODES else 3)
        self._mode = "L" if self.channels == 1 else "RGB"
        self._stored = stored  # (width, height) every image must have when image_size is not set
        self._mean = None if config.mean is None else np.asarray(config.mean, np.float32).reshape(-1, 1, 1)
        self._std = None if config.std is None else np.asarray(config.std, np.float32).reshape(-1, 1, 1)
        if self._mean is not None and len(self._mean) not in (1, self.channels):
            raise InputError(
                f"data.mean has {len(self._mean)} values but {root} is read with {self.channels} channel(s); "
                "give one value per channel"
            )
        self.preprocessing = self._describe()

    @property
    def random(self) -> bool:  # type: ignore[override]
        return self.augment  # only an augmenting read draws from its rng

    def __len__(self) -> int:
        return len(self._labels)

    def path(self, index: int) -> Path:
        start, stop = self._offsets[index], self._offsets[index + 1]
        return self.root / os.fsdecode(self._blob[start:stop].tobytes())

    def item_name(self, index: int) -> str:
        return str(self.path(index))

    def known_labels(self) -> np.ndarray:
        return self._labels

    def read(self, index: int, rng: np.random.Generator | None = None) -> Sample:
        from PIL import Image

        path = self.path(index)
        try:
            with Image.open(path) as img:
                if self.size is None and img.size != self._stored:
                    raise InputError(
                        f"{path} is {img.size[0]}x{img.size[1]} but the first image, "
                        f"{self.path(0).relative_to(self.root)}, is {self._stored[0]}x{self._stored[1]}; "
                        "set data.image_size (--image-size) to resize the images to one size"
                    )
                picture = self._transform(img, rng)
        except InputError:
            raise
        except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, DecompressionBombError...
            raise BadSample(
                f"{path} is not a readable image ({type(exc).__name__}: {first_line(exc, 120)}); "
                "remove it, or skip such files with data.skip_bad: true (--skip-bad)"
            ) from None
        array = np.asarray(picture, dtype=np.float32) * np.float32(1 / 255)
        array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
        if self._mean is not None:
            array = (array - self._mean) / self._std
        return (np.ascontiguousarray(array, dtype=np.float32),), self._labels[index]

    # -- transforms -------------------------------------------------------------------------------

    def _transform(self, img, rng: np.random.Generator | None):
        from PIL import Image

        if self.size is None:
            return img.convert(self._mode)
        height, width = self.size
        w, h = img.size
        if self.augment and rng is not None:  # no rng: a plain read (a shape check), not a training sample
            box = _random_crop(w, h, rng)
            flip = bool(rng.random() < 0.5)
        else:
            scale = max(height / _CROP / h, width / _CROP / w)
            bw, bh = width / scale, height / scale
            box = ((w - bw) / 2, (h - bh) / 2, (w + bw) / 2, (h + bh) / 2)
            flip = False
        # Decode a JPEG at the smallest DCT scale that keeps the crop at least the output size.
        need = max(width / (box[2] - box[0]), height / (box[3] - box[1]))
        img.draft(self._mode, (max(1, math.ceil(w * need)), max(1, math.ceil(h * need))))
        if img.size != (w, h):
            sx, sy = img.size[0] / w, img.size[1] / h
            box = (box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy)
        out = img.convert(self._mode).resize((width, height), Image.Resampling.BILINEAR, box=box)
        return out.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if flip else out

    def _describe(self) -> str:
        mode = "grayscale" if self.channels == 1 else "RGB"
        if self.size is None:
            steps = f"{mode} as stored"
        else:
            h, w = self.size
            evaluation = f"shorter side to size / {_CROP} + centre crop {h}x{w}"
            steps = f"{mode}, " + (f"random-resized crop {h}x{w} + horizontal flip" if self.augment else evaluation)
        norm = (
            "" if self._mean is None else f", then (x - {self._mean.ravel().tolist()}) / {self._std.ravel().tolist()}"
        )
        shown = self.classes if len(self.classes) <= 20 else [*self.classes[:3], "...", self.classes[-1]]
        return f"image {steps}, / 255{norm} (classes: {', '.join(shown)})"


def _random_crop(w: int, h: int, rng: np.random.Generator) -> tuple[float, float, float, float]:
    """torchvision's RandomResizedCrop box: area 8-100 % of the image, aspect log-uniform in [3/4, 4/3]."""
    area = w * h
    for _ in range(10):
        target = area * rng.uniform(0.08, 1.0)
        aspect = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        cw = int(round(math.sqrt(target * aspect)))
        ch = int(round(math.sqrt(target / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            left = int(rng.integers(0, w - cw + 1))
            top = int(rng.integers(0, h - ch + 1))
            return (left, top, left + cw, top + ch)
    ratio = w / h  # fall back to the centre, clamped to the aspect range
    if ratio < 3 / 4:
        cw, ch = w, int(round(w / (3 / 4)))
    elif ratio > 4 / 3:
        ch, cw = h, int(round(h * (4 / 3)))
    else:
        cw, ch = w, h
    left, top = (w - cw) // 2, (h - ch) // 2
    return (left, top, left + cw, top + ch)

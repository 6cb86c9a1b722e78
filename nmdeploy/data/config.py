"""``DataConfig``: the training and validation data of a build, and how it is read. Standard library only."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from nmdeploy.config import check_types, setting
from nmdeploy.errors import ConfigError

__all__ = ["DataConfig", "MAX_WORKERS"]

MAX_WORKERS = 8  # the automatic worker count never goes past this (more rarely helps one GPU)


@dataclass(frozen=True)
class DataConfig:
    """Training and validation data SPECs (built-in[:split], .npz, ImageFolder dir, module:callable),
    how image folders are decoded, and how many processes read the data."""

    SECTION: ClassVar[str] = "data"

    train: str = setting(
        "fashion-mnist:train",
        "Training data SPEC: `fashion-mnist[:split]`, an `.npz` (`x`, `y`), an ImageFolder "
        "directory, or `package.module:callable`.",
    )
    val: str = setting("fashion-mnist:test", "Validation data SPEC (its accuracy is reported for every artifact).")
    train_subset: int = setting(0, "Use this many class-balanced training samples (seed 0); 0 = all.")
    val_subset: int = setting(0, "Same for validation; 0 = all.")
    image_size: int | tuple[int, ...] | None = setting(
        None,
        "Image folders: the size images are cropped to, `224` or `[H, W]`; null = as stored (then "
        "every image must have one size).",
    )
    channels: int | None = setting(
        None, "Image folders: 1 (grayscale) or 3 (RGB); null = what the first image has. Every image is converted."
    )
    augment: bool = setting(
        False,
        "Image folders: random-resized crop + horizontal flip for training; validation is always "
        "resized (shorter side to size / 0.875) and centre-cropped when `image_size` is set.",
    )
    mean: tuple[float, ...] | None = setting(
        None, "Image folders: per-channel mean subtracted after scaling to [0, 1], e.g. `[0.485, 0.456, 0.406]`."
    )
    std: tuple[float, ...] | None = setting(
        None, "Image folders: per-channel standard deviation divided by, e.g. `[0.229, 0.224, 0.225]`."
    )
    skip_bad: bool = setting(
        False,
        "Image folders: skip unreadable or corrupt files (counted in the manifest) instead of stopping at the first.",
    )
    tokenizer: str | None = setting(
        None,
        "Text files (`.jsonl`, `.csv`): the folder of the tokenizer (`hf:PATH` or a path); null = the `hf:` "
        "model's own folder.",
    )
    max_length: int = setting(
        128,
        "Text files: tokens per text at most; longer texts are truncated, each batch is padded to its longest text.",
    )
    workers: int | None = setting(
        None,
        f"DataLoader worker processes per training process; 0 = read in the main process; null = "
        f"0 for in-memory arrays, else one per CPU core left (at most {MAX_WORKERS}).",
    )

    def __post_init__(self) -> None:
        check_types(self, self.SECTION)
        for key in ("train_subset", "val_subset"):
            if getattr(self, key) < 0:
                raise ConfigError.setting(
                    self.SECTION, f"{key} = {getattr(self, key)}: use 0 (all) or a positive count"
                )
        size = self.image_size
        sizes = (size,) if isinstance(size, int) else size or ()
        if size is not None and (not 1 <= len(sizes) <= 2 or any(s < 1 for s in sizes)):
            raise ConfigError.setting(
                self.SECTION, f"image_size = {_show(size)} is invalid: one size >= 1 (224) or two ([224, 256])"
            )
        if self.channels is not None and self.channels not in (1, 3):
            raise ConfigError.setting(self.SECTION, f"channels = {self.channels} is invalid: use 1 or 3 (or null)")
        if self.augment and size is None:
            raise ConfigError.setting(self.SECTION, "augment = true needs {section}.image_size (the crop size)")
        for key in ("mean", "std"):
            values = getattr(self, key)
            if values is not None and len(values) not in (1, self.channels or len(values)):
                raise ConfigError.setting(
                    self.SECTION, f"{key} has {len(values)} values for {{section}}.channels = {self.channels}"
                )
            if values is not None and not values:
                raise ConfigError.setting(self.SECTION, f"{key} = [] is invalid: give one value per channel or null")
        if (self.mean is None) != (self.std is None):
            raise ConfigError.setting(self.SECTION, "mean and std go together: give both or neither", plural=True)
        if self.std is not None and any(not s > 0 for s in self.std):
            raise ConfigError.setting(self.SECTION, f"std = {_show(self.std)} is invalid: every value > 0")
        if self.mean is not None and self.std is not None and len(self.mean) != len(self.std):
            raise ConfigError.setting(
                self.SECTION, f"mean has {len(self.mean)} values but std has {len(self.std)}; give as many", plural=True
            )
        if self.max_length < 1:
            raise ConfigError.setting(self.SECTION, f"max_length = {self.max_length} is invalid: use 1 or more tokens")
        if self.workers is not None and self.workers < 0:
            raise ConfigError.setting(self.SECTION, f"workers = {self.workers} is invalid: 0 or more (or null: auto)")

    @property
    def size(self) -> tuple[int, int] | None:
        """``image_size`` as (height, width)."""
        if self.image_size is None:
            return None
        if isinstance(self.image_size, int):
            return self.image_size, self.image_size
        return (self.image_size[0], self.image_size[-1])


def _show(value: object) -> str:
    return str(list(value)) if isinstance(value, tuple) else str(value)

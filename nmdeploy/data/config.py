"""``DataConfig``: the training and validation data of a build. Standard library only."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from nmdeploy.config import check_types, setting
from nmdeploy.errors import ConfigError

__all__ = ["DataConfig"]


@dataclass(frozen=True)
class DataConfig:
    """Training and validation data SPECs (built-in[:split], .npz, ImageFolder dir, module:callable)."""

    SECTION: ClassVar[str] = "data"

    train: str = setting(
        "fashion-mnist:train",
        "Training data SPEC: `fashion-mnist[:split]`, an `.npz` (`x`, `y`), an ImageFolder "
        "directory, or `package.module:callable`.",
    )
    val: str = setting("fashion-mnist:test", "Validation data SPEC (its accuracy is reported for every artifact).")
    train_subset: int = setting(0, "Use this many class-balanced training samples (seed 0); 0 = all.")
    val_subset: int = setting(0, "Same for validation; 0 = all.")

    def __post_init__(self) -> None:
        check_types(self, self.SECTION)
        for key in ("train_subset", "val_subset"):
            if getattr(self, key) < 0:
                raise ConfigError.setting(
                    self.SECTION, f"{key} = {getattr(self, key)}: use 0 (all) or a positive count"
                )

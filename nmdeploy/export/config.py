"""The model a build works on (``ModelConfig``) and how it is exported to ONNX (``ExportConfig``).

Standard library only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from nmdeploy.config import check_types, setting
from nmdeploy.errors import ConfigError

__all__ = ["ExportConfig", "ModelConfig"]


@dataclass(frozen=True)
class ModelConfig:
    """The network and where its dense weights come from."""

    SECTION: ClassVar[str] = "model"

    spec: str = setting(
        "fashion-resnet",
        "Built-in model name (`fashion-resnet`) or `package.module:callable` returning an `nn.Module`.",
    )
    checkpoint: str | None = setting(
        None,
        'Pretrained dense weights (a state_dict or `{"model": ...}`, loaded with `weights_only=True`); '
        "when set, dense pre-training is skipped.",
    )
    pretrained: bool = setting(
        False,
        "The model spec returns trained weights itself (e.g. a packaged transformer): dense pre-training is skipped.",
    )
    input_shape: tuple[int, ...] = setting(
        (1, 1, 28, 28),
        "One input batch `[batch, ...]`; the data must match it past the batch dim. Dim 0 stays dynamic in the ONNX.",
    )

    def __post_init__(self) -> None:
        check_types(self, self.SECTION)
        if len(self.input_shape) < 2 or any(d < 1 for d in self.input_shape):
            raise ConfigError.setting(
                self.SECTION,
                f"input_shape = {list(self.input_shape)}: give [batch, ...] with every size >= 1, e.g. [1, 1, 28, 28]",
            )


@dataclass(frozen=True)
class ExportConfig:
    """ONNX export and its parity check against PyTorch (``nmdeploy.export_onnx``)."""

    SECTION: ClassVar[str] = "export"

    opset: int | None = setting(None, "ONNX opset, 13 or newer (none: the exporter's default).")
    dynamic_batch: bool = setting(True, "Make dim 0 of every ONNX input symbolic.")
    atol: float = setting(1e-4, "Parity check: an output may differ from PyTorch by `atol + rtol * max|output|`.")
    rtol: float = setting(1e-3, "Parity check: the relative part of that tolerance.")

    def __post_init__(self) -> None:
        check_types(self, self.SECTION)
        for key in ("atol", "rtol"):
            if not getattr(self, key) >= 0:
                raise ConfigError.setting(self.SECTION, f"{key} = {getattr(self, key)}: use a number >= 0")

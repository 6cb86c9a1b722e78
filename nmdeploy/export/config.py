"""The model a build works on (``ModelConfig``) and how it is exported to ONNX (``ExportConfig``).

Standard library only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from nmdeploy._hf import HF_TASKS, is_hf_spec
from nmdeploy.config import check_types, setting
from nmdeploy.errors import ConfigError

__all__ = ["ExportConfig", "ModelConfig"]


@dataclass(frozen=True)
class ModelConfig:
    """The network and where its dense weights come from."""

    SECTION: ClassVar[str] = "model"

    spec: str = setting(
        "fashion-resnet",
        "Built-in model name (`fashion-resnet`), `hf:PATH` (a local `transformers` folder with `config.json` and "
        "weights, loaded offline; or `package/folder` inside an installed package) or `package.module:callable` "
        "returning an `nn.Module`.",
    )
    hf_task: str | None = setting(
        None,
        "`hf:` models: `feature-extraction` (a pooled embedding), `sequence-classification` or "
        "`image-classification` (logits); null = what `config.json`'s architectures name.",
        choices=HF_TASKS,
    )
    hf_config: dict[str, bool | int | float | str] | None = setting(
        None,
        "`hf:` models: `config.json` values to override when loading, e.g. `{hidden_dropout_prob: 0.0}` "
        "(dropout off for distillation).",
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
    input_shape: tuple[int, ...] | None = setting(
        None,
        "The first input's shape `[batch, ...]`; the data must match it past the batch dim and the other "
        "dynamic dims. null = the shape of the first validation sample.",
    )

    def __post_init__(self) -> None:
        check_types(self, self.SECTION)
        if self.hf_task is not None and self.hf_task not in HF_TASKS:
            raise ConfigError.setting(
                self.SECTION,
                f"hf_task = {self.hf_task!r} is not a task nmdeploy serves; use one of {', '.join(HF_TASKS)}",
            )
        if self.hf_config is not None and not is_hf_spec(self.spec):
            raise ConfigError.setting(
                self.SECTION, f"hf_config is for hf:PATH models; {{section}}.spec is {self.spec!r}: remove hf_config"
            )
        if self.hf_task is not None and not is_hf_spec(self.spec):
            raise ConfigError.setting(
                self.SECTION, f"hf_task is for hf:PATH models; {{section}}.spec is {self.spec!r}: remove hf_task"
            )
        if self.input_shape is not None and (len(self.input_shape) < 2 or any(d < 1 for d in self.input_shape)):
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
    dynamic_axes: dict[str, tuple[int, ...]] | None = setting(
        None,
        "Input name -> its dynamic dims, e.g. `{input_ids: [0, 1]}`; dim 0 is named `batch`, dim 1 `sequence`, "
        "dim k `dimk`, shared by every input that has it. null = dim 0 of every input (with `dynamic_batch`) "
        "and dim 1 of every integer [batch, tokens] input.",
    )
    atol: float = setting(1e-4, "Parity check: an output may differ from PyTorch by `atol + rtol * max|output|`.")
    rtol: float = setting(1e-3, "Parity check: the relative part of that tolerance.")

    def __post_init__(self) -> None:
        check_types(self, self.SECTION)
        for name, dims in (self.dynamic_axes or {}).items():
            if any(d < 0 for d in dims) or len(set(dims)) != len(dims):
                raise ConfigError.setting(
                    self.SECTION, f"dynamic_axes: {name}: {list(dims)} must list distinct dims >= 0, e.g. [0, 1]"
                )
        for key in ("atol", "rtol"):
            if not getattr(self, key) >= 0:
                raise ConfigError.setting(self.SECTION, f"{key} = {getattr(self, key)}: use a number >= 0")

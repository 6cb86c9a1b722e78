"""Training settings (``TrainConfig``) and what training optimises (``TaskConfig``).

A recipe uses ``TrainConfig`` twice, for dense pre-training (``dense``) and for the N:M
fine-tune (``finetune``); its errors name the section ``train`` and a recipe re-words them
with its own section name. Standard library only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from nmdeploy.config import check_types, setting
from nmdeploy.errors import ConfigError

__all__ = ["AMP", "OPTIMIZERS", "TaskConfig", "TrainConfig"]

OPTIMIZERS = ("sgd", "adamw")
AMP = ("bf16", "fp16", "off")


@dataclass(frozen=True)
class TrainConfig:
    """How to train. ``lr`` is the peak rate: a linear warm-up to it, then a cosine to 0."""

    SECTION: ClassVar[str] = "train"

    epochs: int = setting(4, "Epochs.")
    batch_size: int = setting(128, "Global batch size (split over processes under torchrun).")
    optimizer: str = setting("sgd", "`sgd` or `adamw`.")
    lr: float = setting(0.05, "Peak learning rate: linear warm-up to it, cosine to 0.")
    momentum: float = setting(0.9, "SGD momentum.")
    nesterov: bool = setting(True, "Nesterov momentum (SGD).")
    weight_decay: float = setting(5e-4, "Weight decay, never on norm weights and biases.")
    warmup_epochs: float = setting(0.0, "Warm-up length (may be fractional).")
    label_smoothing: float = setting(0.0, "Cross-entropy label smoothing.")
    grad_clip: float = setting(0.0, "Max gradient norm; 0 = off.")
    amp: str | bool = setting(
        "bf16",
        "Mixed precision on CUDA: `bf16` (bfloat16 autocast), `fp16` (float16 autocast with a "
        "GradScaler) or `off`; ignored on CPU. `true`/`false` mean `bf16`/`off`.",
        choices=AMP,
    )
    channels_last: bool = setting(False, "Channels-last memory format for 4-D inputs and the model on CUDA.")
    steps_per_epoch: int = setting(
        0,
        "Optimizer steps per epoch; 0 = one full pass over the data. Fixes the length of an epoch on "
        "a huge set (each epoch draws its own samples); needed for a stream.",
    )
    grad_accum: int = setting(
        1,
        "Split each batch into this many micro-batches run one after another, for memory: the "
        "optimizer still sees `batch_size` samples per step.",
    )
    seed: int = setting(0, "Seed of the data order (and of the initial weights for `dense`).")

    def __post_init__(self) -> None:
        if isinstance(self.amp, bool):  # the older true/false form
            object.__setattr__(self, "amp", "bf16" if self.amp else "off")
        checks = {
            "epochs": (int, self.epochs >= 0 if isinstance(self.epochs, int) else False, ">= 0"),
            "batch_size": (int, self.batch_size >= 1 if isinstance(self.batch_size, int) else False, ">= 1"),
            "seed": (int, self.seed >= 0 if isinstance(self.seed, int) else False, ">= 0"),
            "steps_per_epoch": (
                int,
                self.steps_per_epoch >= 0 if isinstance(self.steps_per_epoch, int) else False,
                ">= 0",
            ),
            "grad_accum": (int, self.grad_accum >= 1 if isinstance(self.grad_accum, int) else False, ">= 1"),
        }
        for key, (kind, ok, rule) in checks.items():
            value = getattr(self, key)
            if not isinstance(value, kind) or isinstance(value, bool) or not ok:
                raise _error(f"{key} = {value!r} is invalid: an integer {rule}".rstrip())
        for key in ("lr", "momentum", "weight_decay", "warmup_epochs", "label_smoothing", "grad_clip"):
            value = getattr(self, key)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not value >= 0:  # NaN too
                raise _error(f"{key} = {value!r} is invalid: a number >= 0")
        if self.lr <= 0:
            raise _error(f"lr = {self.lr!r} is invalid: a number > 0, e.g. 0.05")
        if self.optimizer not in OPTIMIZERS:
            raise _error(f"optimizer = {self.optimizer!r} is invalid: use one of {', '.join(OPTIMIZERS)}")
        if self.label_smoothing >= 1:
            raise _error(f"label_smoothing = {self.label_smoothing!r} is invalid: use a value in [0, 1)")
        if self.warmup_epochs >= self.epochs and (self.epochs > 0 or self.warmup_epochs > 0):
            raise _error(f"warmup_epochs = {self.warmup_epochs!r} must be below {{section}}.epochs = {self.epochs}")
        for key in ("nesterov", "channels_last"):
            if not isinstance(getattr(self, key), bool):
                raise _error(f"{key} = {getattr(self, key)!r} is invalid: true or false")
        if self.amp not in AMP:
            raise _error(f"amp = {self.amp!r} is invalid: use one of {', '.join(AMP)}")
        if self.grad_accum > self.batch_size:
            raise _error(
                f"grad_accum = {self.grad_accum} is invalid: at most {{section}}.batch_size = {self.batch_size}"
            )
        check_types(self, self.SECTION)  # what the checks above let through: infinities, integers past int64


def _error(detail: str) -> ConfigError:
    return ConfigError.setting(TrainConfig.SECTION, detail)


@dataclass(frozen=True)
class TaskConfig:
    """What training optimises and every stage reports (``nmdeploy.train.tasks``)."""

    SECTION: ClassVar[str] = "task"

    spec: str = setting(
        "classification",
        "`classification` (cross-entropy, top-1), `distillation` (match the dense model's outputs: "
        "1 − cosine + MSE; scored by cosine), or `package.module:callable` returning a task.",
    )
    mse_weight: float = setting(1.0, "Distillation: weight of the MSE term.")
    distill: str | bool = setting(
        "auto",
        "Classification fine-tune: also learn the dense model's softened logits (KL divergence, "
        "mixed with the label loss). `auto` = on wherever a build has a dense model to learn from; "
        "`true`, `false`.",
    )
    distill_weight: float = setting(
        0.5, "Share of the distillation term in the loss: (1 − w)·label loss + w·T²·KL; in (0, 1]."
    )
    distill_temperature: float = setting(4.0, "T: the softmax temperature of both models' logits; > 0.")

    def __post_init__(self) -> None:
        check_types(self, self.SECTION)
        if self.mse_weight < 0:
            raise ConfigError.setting(self.SECTION, f"mse_weight = {self.mse_weight}: use a number >= 0")
        if isinstance(self.distill, str) and self.distill != "auto":
            raise ConfigError.setting(self.SECTION, f"distill = {self.distill!r} is invalid: use auto, true or false")
        if not 0 < self.distill_weight <= 1:
            raise ConfigError.setting(
                self.SECTION,
                f"distill_weight = {self.distill_weight} is invalid: a share in (0, 1], e.g. 0.5 "
                "(turn distillation off with task.distill: false)",
            )
        if self.distill_temperature <= 0:
            raise ConfigError.setting(
                self.SECTION, f"distill_temperature = {self.distill_temperature} is invalid: a number > 0, e.g. 4"
            )

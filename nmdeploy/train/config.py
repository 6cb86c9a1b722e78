"""Fine-tuning settings: one frozen dataclass, checked when it is built."""

from __future__ import annotations

from dataclasses import dataclass

from nmdeploy.errors import ConfigError

__all__ = ["TrainConfig"]

OPTIMIZERS = ("sgd", "adamw")


@dataclass(frozen=True)
class TrainConfig:
    """How to fine-tune. ``lr`` is the peak rate: a linear warm-up to it, then a cosine to 0."""

    epochs: int = 4
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4  # never on norm weights and biases (1-D parameters)
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    grad_clip: float = 0.0  # max gradient norm; 0 = off
    amp: bool = True  # bfloat16 autocast, on CUDA only
    seed: int = 0

    def __post_init__(self) -> None:
        checks = {
            "epochs": (int, self.epochs >= 1 if isinstance(self.epochs, int) else False, ">= 1"),
            "batch_size": (int, self.batch_size >= 1 if isinstance(self.batch_size, int) else False, ">= 1"),
            "seed": (int, True, ""),
        }
        for key, (kind, ok, rule) in checks.items():
            value = getattr(self, key)
            if not isinstance(value, kind) or isinstance(value, bool) or not ok:
                raise ConfigError(f"train.{key} = {value!r} is invalid: an integer {rule}".rstrip())
        for key in ("lr", "momentum", "weight_decay", "warmup_epochs", "label_smoothing", "grad_clip"):
            value = getattr(self, key)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"train.{key} = {value!r} is invalid: a number >= 0")
        if self.lr <= 0:
            raise ConfigError(f"train.lr = {self.lr!r} is invalid: a number > 0, e.g. 0.05")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"train.optimizer = {self.optimizer!r} is invalid: use one of {', '.join(OPTIMIZERS)}")
        if self.label_smoothing >= 1:
            raise ConfigError(f"train.label_smoothing = {self.label_smoothing!r} is invalid: use a value in [0, 1)")
        if self.warmup_epochs >= self.epochs:
            raise ConfigError(f"train.warmup_epochs = {self.warmup_epochs!r} must be below train.epochs = {self.epochs}")
        for key in ("nesterov", "amp"):
            if not isinstance(getattr(self, key), bool):
                raise ConfigError(f"train.{key} = {getattr(self, key)!r} is invalid: true or false")

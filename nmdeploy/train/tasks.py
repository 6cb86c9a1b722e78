"""What the fine-tune optimises and reports: classification, distillation, or a plug-in.

A task turns a batch of model outputs and targets into a loss and a score (higher is better).
``classification`` trains on integer labels with cross-entropy and scores top-1. ``distillation``
trains a student to reproduce a teacher's outputs (e.g. sentence embeddings), with loss
``(1 - cosine) + mse_weight * MSE``, and scores the mean cosine to the teacher. The trainer
asks :meth:`Task.targets` for every batch (the teacher runs on the batch, in eval mode). A plug-in is
``package.module:callable`` returning an object with the same methods.

:class:`Distill` is knowledge distillation on top of a task (Hinton et al., 2015): the student's
loss becomes ``(1 - weight) * task loss + weight * T² * KL(teacher ‖ student)`` on logits softened
by the temperature ``T``; the dense model before sparsification is the teacher. It is what
``task.distill`` turns on for a classification fine-tune.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn
from torch.nn import functional as F

from nmdeploy.errors import ConfigError, InputError
from nmdeploy.train.config import TaskConfig

__all__ = [
    "BUILTIN_TASKS",
    "Classification",
    "Distill",
    "Distillation",
    "Task",
    "load_task",
    "make_task",
    "run_batched",
]


class Task(Protocol):
    name: str
    metric: str  # what score() measures, for reports ("top-1", "cosine")

    def targets(
        self, teacher: nn.Module | None, inputs: Sequence[torch.Tensor], labels: torch.Tensor | None
    ) -> torch.Tensor:
        """The training targets for ``inputs`` (labels, or what ``teacher`` outputs)."""

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor, label_smoothing: float) -> torch.Tensor: ...

    def score_sum(self, outputs: torch.Tensor, targets: torch.Tensor) -> float:
        """Sum of the per-sample scores of a batch (the caller divides by the sample count)."""


def run_batched(model: nn.Module, inputs: Sequence[torch.Tensor], batch_size: int = 512) -> torch.Tensor:
    """``model`` outputs for all of ``inputs`` (eval mode, no gradients), on the model's device, concatenated on CPU."""
    device = next(model.parameters()).device
    if model.training:
        model.eval()
    chunks = []
    with torch.no_grad():
        for start in range(0, len(inputs[0]), batch_size):
            chunks.append(model(*(t[start : start + batch_size].to(device) for t in inputs)).float().cpu())
    return torch.cat(chunks) if chunks else torch.empty(0)


@dataclass(frozen=True)
class Classification:
    name: str = "classification"
    metric: str = "top-1"

    def targets(
        self, teacher: nn.Module | None, inputs: Sequence[torch.Tensor], labels: torch.Tensor | None
    ) -> torch.Tensor:
        if labels is None:
            raise InputError("the classification task needs integer labels (y) in the data")
        return labels.long()

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor, label_smoothing: float) -> torch.Tensor:
        return F.cross_entropy(outputs.float(), targets, label_smoothing=label_smoothing)

    def score_sum(self, outputs: torch.Tensor, targets: torch.Tensor) -> float:
        return float((outputs.argmax(1) == targets).sum())


@dataclass(frozen=True)
class Distillation:
    """Match the teacher's outputs: ``(1 - cosine) + mse_weight * MSE``, scored by mean cosine."""

    mse_weight: float = 1.0
    name: str = "distillation"
    metric: str = "cosine"

    def targets(
        self, teacher: nn.Module | None, inputs: Sequence[torch.Tensor], labels: torch.Tensor | None
    ) -> torch.Tensor:
        if teacher is None:
            if labels is not None and labels.is_floating_point():
                return labels  # the teacher's outputs, computed beforehand
            raise ConfigError("the distillation task needs a teacher model (the dense model)")
        return run_batched(teacher, inputs)

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor, label_smoothing: float) -> torch.Tensor:
        outputs = outputs.float().flatten(1)
        targets = targets.flatten(1)
        cosine = F.cosine_similarity(outputs, targets, dim=1).mean()
        return (1 - cosine) + self.mse_weight * F.mse_loss(outputs, targets)

    def score_sum(self, outputs: torch.Tensor, targets: torch.Tensor) -> float:
        return float(F.cosine_similarity(outputs.float().flatten(1), targets.flatten(1), dim=1).sum())


@dataclass(frozen=True)
class Distill:
    """Distillation of softened logits, mixed with the task's own loss.

    ``T²`` keeps the term's gradients the size of the label loss's whatever the temperature (the
    softened probabilities' gradients shrink as ``1 / T²``). The teacher's logits carry what the
    dense model learnt about how classes resemble each other, which a label alone does not;
    that is what a sparse student loses first.
    """

    weight: float = 0.5
    temperature: float = 4.0

    def __post_init__(self) -> None:
        if not 0 < self.weight <= 1:
            raise ConfigError(f"distill weight = {self.weight} is invalid: a share in (0, 1]")
        if not self.temperature > 0:
            raise ConfigError(f"distill temperature = {self.temperature} is invalid: a number > 0")

    def divergence(self, outputs: torch.Tensor, teacher_outputs: torch.Tensor) -> torch.Tensor:
        """``T² · KL(softmax(teacher / T) ‖ softmax(student / T))``, the batch mean over the last axis."""
        t = self.temperature
        student = F.log_softmax(outputs.float().flatten(0, -2) / t, dim=-1)
        teacher = F.log_softmax(teacher_outputs.float().flatten(0, -2) / t, dim=-1)
        return F.kl_div(student, teacher, reduction="batchmean", log_target=True) * (t * t)

    def mix(self, task_loss: torch.Tensor, outputs: torch.Tensor, teacher_outputs: torch.Tensor) -> torch.Tensor:
        """The training loss: the task's loss and the divergence, weighted."""
        kd = self.divergence(outputs, teacher_outputs)
        return kd if self.weight == 1 else (1 - self.weight) * task_loss + self.weight * kd


BUILTIN_TASKS: dict[str, Any] = {"classification": Classification, "distillation": Distillation}


def load_task(spec: str) -> Task:
    """A built-in task name or ``package.module:callable`` returning a task object."""
    if spec in BUILTIN_TASKS:
        return BUILTIN_TASKS[spec]()
    if ":" not in spec:
        raise ConfigError(
            f"task {spec!r} is neither a built-in ({', '.join(BUILTIN_TASKS)}) nor package.module:callable"
        )
    from nmdeploy._imports import call_target

    task = call_target(spec, spec, "task")
    missing = [m for m in ("targets", "loss", "score_sum") if not callable(getattr(task, m, None))]
    if missing or not isinstance(getattr(task, "metric", None), str):
        raise InputError(
            f"task spec {spec!r} returned {type(task).__name__}, which lacks {', '.join(missing) or 'metric'}; "
            "see nmdeploy.train.tasks.Task"
        )
    return task


def make_distill(config: TaskConfig) -> Distill | None:
    """The logit distillation ``config`` asks of a fine-tune, or None.

    ``auto`` means on for the built-in classification task, the one whose outputs are logits;
    a recipe checks beforehand that ``true`` comes with that task.
    """
    on = config.spec == "classification" if config.distill == "auto" else config.distill
    return Distill(config.distill_weight, config.distill_temperature) if on else None


def make_task(config: TaskConfig) -> Task:
    """The task a ``TaskConfig`` names, with its settings (``mse_weight`` for distillation)."""
    if config.spec == "distillation":
        return Distillation(config.mse_weight)
    return load_task(config.spec)

"""Fine-tuning: the loop, its settings, the tasks it optimises and resumable checkpoints.

Names resolve lazily so that reading a recipe (which needs only :class:`TrainConfig`) does
not import torch.
"""

from __future__ import annotations

from nmdeploy._lazy import lazy_getattr

_LAZY = {
    "TrainConfig": "nmdeploy.train.config",
    "EpochMetrics": "nmdeploy.train.loop",
    "TrainResult": "nmdeploy.train.loop",
    "TrainingInterrupted": "nmdeploy.errors",
    "fit": "nmdeploy.train.loop",
    "top1_accuracy": "nmdeploy.train.loop",
    "evaluate": "nmdeploy.train.loop",
    "Task": "nmdeploy.train.tasks",
    "Classification": "nmdeploy.train.tasks",
    "Distill": "nmdeploy.train.tasks",
    "Distillation": "nmdeploy.train.tasks",
    "load_task": "nmdeploy.train.tasks",
    "make_task": "nmdeploy.train.tasks",
    "TaskConfig": "nmdeploy.train.config",
}

__all__ = list(_LAZY)
__getattr__ = lazy_getattr("nmdeploy.train", _LAZY, globals())

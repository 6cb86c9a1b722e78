"""Classification fine-tuning: the loop, its settings and resumable checkpoints.

Names resolve lazily so that reading a recipe (which needs only :class:`TrainConfig`) does
not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "TrainConfig": "nmdeploy.train.config",
    "EpochMetrics": "nmdeploy.train.loop",
    "TrainResult": "nmdeploy.train.loop",
    "TrainingInterrupted": "nmdeploy.train.loop",
    "fit": "nmdeploy.train.loop",
    "top1_accuracy": "nmdeploy.train.loop",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'nmdeploy.train' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)

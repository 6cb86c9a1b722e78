"""Classification fine-tuning: the loop, its settings and resumable checkpoints."""

from nmdeploy.train.config import TrainConfig
from nmdeploy.train.loop import EpochMetrics, TrainResult, fit

__all__ = ["EpochMetrics", "TrainConfig", "TrainResult", "fit"]

"""Plug-ins for the streaming benchmark: a synthetic image dataset of any length, made per item, and a small CNN.

``benchmarks.synthetic:data`` is a data SPEC: 3x64x64 float32 samples of 10 classes, each made
from its index alone (a class template plus noise), so a million items cost no memory; the
length comes from ``NMDEPLOY_SYNTHETIC_ITEMS`` (default 10,000) for the train split and is
1,000 for validation. ``benchmarks.synthetic:model`` is the CNN it trains.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch import nn

CLASSES = 10
SHAPE = (3, 64, 64)


class SyntheticImages(torch.utils.data.Dataset):
    """``length`` samples; sample ``i`` is template ``i % 10`` plus noise drawn from ``(seed, i)``."""

    def __init__(self, length: int, seed: int) -> None:
        self.length = length
        self.seed = seed
        self.templates = np.random.default_rng(12345).standard_normal((CLASSES, *SHAPE), dtype=np.float32)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        if not 0 <= index < self.length:
            raise IndexError(index)
        label = index % CLASSES
        noise = np.random.default_rng((self.seed, index)).standard_normal(SHAPE, dtype=np.float32)
        return self.templates[label] + 2 * noise, label


def data(split: str) -> SyntheticImages:
    if split == "train":
        return SyntheticImages(int(os.environ.get("NMDEPLOY_SYNTHETIC_ITEMS", "10000")), 0)
    return SyntheticImages(1000, 1)


def model() -> nn.Module:
    """Conv widths that are multiples of 16, so 2:4 applies to every layer but the first and last."""

    def block(cin: int, cout: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(cin, cout, 3, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())

    return nn.Sequential(
        block(3, 32), block(32, 64), block(64, 64), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, CLASSES)
    )

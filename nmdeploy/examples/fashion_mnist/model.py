"""A small ResNet for 28x28 grayscale images, with every channel count a multiple of 16.

Multiples of 16 keep each 3x3 and 1x1 conv eligible for 2:4 (and for ASP's 8/16 shape rule);
the stem (one input channel) and the classifier stay dense, as in the papers.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["FashionResNet", "BasicBlock"]


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity (or 1x1 conv-BN) shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class FashionResNet(nn.Module):
    """Stride-2 stem, one residual block per width (stride 1, 2, 2), global pool, classifier.

    ``widths=(16, 32, 64)`` has about 78k parameters; ``(32, 64, 128)`` about 304k.
    """

    def __init__(self, widths: tuple[int, ...] = (16, 32, 64), num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, 2, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU()
        )
        blocks = []
        previous = widths[0]
        for i, width in enumerate(widths):
            blocks.append(BasicBlock(previous, width, stride=1 if i == 0 else 2))
            previous = width
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(previous, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.blocks(self.stem(x))), 1))

"""Small exported FP32 models (a residual 2:4 CNN and a 2:4 MLP) and data that fits them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import nmdeploy
from nmdeploy.data import ArrayData


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _export(net: nn.Module, sample: torch.Tensor, path) -> None:
    torch.manual_seed(0)
    nmdeploy.sparsify(net, "2:4", method="asp")
    nmdeploy.export_onnx(net.eval(), sample, path)


@pytest.fixture(scope="session")
def cnn_onnx(tmp_path_factory):
    from nmdeploy.examples.fashion_mnist import FashionResNet

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("cnn") / "cnn.onnx"
    net = FashionResNet()
    with torch.no_grad():  # non-trivial BatchNorm statistics, so folding gives varied scales
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
    _export(net, torch.randn(2, 1, 28, 28), path)
    return path


@pytest.fixture(scope="session")
def mlp_onnx(tmp_path_factory):
    path = tmp_path_factory.mktemp("mlp") / "mlp.onnx"
    torch.manual_seed(0)
    _export(MLP(), torch.randn(2, 32), path)
    return path


def images(n: int = 64, seed: int = 0) -> ArrayData:
    rng = np.random.default_rng(seed)
    return ArrayData({"x": rng.standard_normal((n, 1, 28, 28), dtype=np.float32)}, rng.integers(0, 10, n), "images")


def vectors(n: int = 64, seed: int = 0) -> ArrayData:
    rng = np.random.default_rng(seed)
    return ArrayData({"x": rng.standard_normal((n, 32), dtype=np.float32)}, rng.integers(0, 5, n), "vectors")

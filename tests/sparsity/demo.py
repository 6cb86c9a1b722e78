"""Test fixtures: the library's sparsify loop end to end on synthetic data, in seconds on a CPU.

Train dense, sparsify, fine-tune, finalize: the test that every method actually learns, and
a small CNN with its task for the loop and DDP tests. The task: 10 classes, each a fixed
random 3x8x8 template; a sample is its class template plus Gaussian noise.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from nmdeploy.sparsity import SparsityReport, finalize, is_nm_sparse, parse_pattern, sparsify

__all__ = ["DemoResult", "DemoNet", "make_task", "run_demo", "train_dense"]


class DemoNet(nn.Module):
    """Stem conv, two 3x3 convs and a two-layer classifier; channel counts multiples of 16."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.conv1 = nn.Sequential(nn.Conv2d(16, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU())
        self.conv2 = nn.Sequential(nn.Conv2d(32, 32, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU())
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(32 * 16, 64), nn.ReLU(), nn.Linear(64, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv2(self.conv1(self.stem(x))))


def make_task(seed: int = 0, train: int = 2048, test: int = 512, noise: float = 3.0):
    """(x_train, y_train, x_test, y_test): noisy copies of 10 fixed random templates."""
    gen = torch.Generator().manual_seed(seed)
    templates = torch.randn(10, 3, 8, 8, generator=gen)

    def draw(count: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.randint(0, 10, (count,), generator=gen)
        return templates[labels] + noise * torch.randn(count, 3, 8, 8, generator=gen), labels

    return (*draw(train), *draw(test))


@dataclass(frozen=True)
class DemoResult:
    method: str
    pattern: str
    dense_accuracy: float
    sparse_accuracy: float
    report: SparsityReport
    exact_nm: bool  # every sparsified weight is exactly N:M after finalize()


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def _train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    batch: int,
    gen: torch.Generator,
) -> None:
    model.train()
    for idx in torch.randperm(len(x), generator=gen).split(batch):
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
        optimizer.step()


def train_dense(
    dense_epochs: int = 3, seed: int = 0, on_epoch: Callable[[str, int], None] | None = None
) -> tuple[nn.Module, float]:
    """Train the dense starting point; returns (model, test accuracy)."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    x, y, x_test, y_test = make_task(seed)
    model = DemoNet()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    for epoch in range(dense_epochs):
        _train_epoch(model, optimizer, x, y, 64, gen)
        if on_epoch:
            on_epoch("dense", epoch)
    return model, accuracy(model, x_test, y_test)


def run_demo(
    method: str = "maxq",
    pattern: str = "2:4",
    epochs: int = 4,
    dense_epochs: int = 3,
    seed: int = 0,
    on_epoch: Callable[[str, int], None] | None = None,
    dense: tuple[nn.Module, float] | None = None,
) -> DemoResult:
    """Fine-tune a dense DemoNet N:M sparse with ``method`` and finalize it.

    ``dense``: a (model, accuracy) pair from :func:`train_dense` to start from (it is not
    modified); trained here otherwise. MaxQ's schedule ramps over the first half of the
    fine-tuning epochs. ``on_epoch(phase, epoch)`` is called after every epoch (the CLI
    drives a progress bar with it).
    """
    nm = parse_pattern(pattern)
    dense_model, dense_accuracy = dense or train_dense(dense_epochs, seed, on_epoch)
    torch.manual_seed(seed + 1)
    gen = torch.Generator().manual_seed(seed + 1)
    x, y, x_test, y_test = make_task(seed)
    model = copy.deepcopy(dense_model)
    sp = sparsify(model, pattern=pattern, method=method, start_epoch=0, end_epoch=epochs // 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9, weight_decay=1e-4)
    for epoch in range(epochs):
        sp.set_epoch(epoch)
        _train_epoch(model, optimizer, x, y, 64, gen)
        if on_epoch:
            on_epoch(method, epoch)
    sp.set_epoch(epochs)
    report = sp.report()
    finalize(model)
    exact = method == "dense" or all(
        is_nm_sparse(getattr(t.module, t.param_name), nm.n, nm.m) for t in sp.targets if t.eligible
    )
    return DemoResult(method, str(nm), dense_accuracy, accuracy(model, x_test, y_test), report, exact)

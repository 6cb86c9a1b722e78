"""A tiny build: the example ResNet on synthetic 28x28 data in .npz files, one or two epochs per stage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


def write_task(folder: Path, train: int = 1024, val: int = 256, seed: int = 0) -> tuple[Path, Path]:
    """Noisy copies of 10 fixed random 28x28 templates: learnable in one epoch."""
    rng = np.random.default_rng(seed)
    templates = rng.normal(size=(10, 1, 28, 28)).astype(np.float32)
    paths = []
    for name, count in (("train", train), ("val", val)):
        labels = rng.integers(0, 10, size=count)
        x = templates[labels] + 1.0 * rng.normal(size=(count, 1, 28, 28)).astype(np.float32)
        path = folder / f"{name}.npz"
        np.savez(path, x=x.astype(np.float32), y=labels.astype(np.int64))
        paths.append(path)
    return paths[0], paths[1]


def tiny_overrides(train: Path, val: Path) -> list[str]:
    return [
        f"data.train={train}",
        f"data.val={val}",
        "dense.epochs=1",
        "dense.batch_size=64",
        "finetune.epochs=2",
        "finetune.batch_size=64",
        "sparsity.end_epoch=1",
        "quantize.count=64",
        "device=cpu",
    ]


@pytest.fixture(scope="session")
def task_files(tmp_path_factory) -> tuple[Path, Path]:
    return write_task(tmp_path_factory.mktemp("task"))

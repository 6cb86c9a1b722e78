"""What the trainer reads and how a model is scored on it: any data as a source, streamed evaluation.

:func:`as_data` takes what :func:`nmdeploy.train.fit` and :func:`evaluate` accept: tensors
``(inputs, targets)`` (the in-memory form), a source from :func:`nmdeploy.data.open_data`,
or a dataset object (map-style or iterable) of ``(input, label)`` pairs. :func:`evaluate`
streams it through a DataLoader in order, so a validation set never has to fit in memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from nmdeploy.data.loader import Batch, eval_loader, iterate, resolve_workers
from nmdeploy.data.plugins import DatasetSource, is_dataset, is_stream
from nmdeploy.data.source import ArrayData, Source, Stream
from nmdeploy.errors import InputError
from nmdeploy.train.tasks import Classification, Task

__all__ = ["as_data", "check_labels", "distributed", "evaluate", "top1_accuracy"]

Inputs = torch.Tensor | Sequence[torch.Tensor]


def _as_inputs(inputs: Inputs) -> tuple[torch.Tensor, ...]:
    return (inputs,) if isinstance(inputs, torch.Tensor) else tuple(inputs)


def as_data(data: Any, what: str, split: str) -> Source | Stream:
    """``data`` as a source: ``(inputs, targets)`` tensors are wrapped (no copy), sources kept, datasets indexed."""
    if isinstance(data, (Source, Stream)):
        return data
    if isinstance(data, tuple) and len(data) == 2 and isinstance(data[1], torch.Tensor):
        inputs, targets = _as_inputs(data[0]), data[1]
        if len(targets) == 0 or any(len(t) != len(targets) for t in inputs):
            counts = ", ".join(str(len(t)) for t in inputs)
            raise InputError(
                f"{what} has {counts} inputs and {len(targets)} targets; give as many targets as inputs, at least one"
            )
        names = ["x"] if len(inputs) == 1 else [f"x{i}" for i in range(len(inputs))]
        arrays = {n: t.detach().cpu().numpy() for n, t in zip(names, inputs)}
        return ArrayData(arrays, targets.detach().cpu().numpy(), what, split)
    if is_dataset(data):
        return DatasetSource(data, what, split)
    if is_stream(data):
        from nmdeploy.data.streams import as_stream

        return as_stream(data, what, split)
    raise InputError(
        f"{what} is a {type(data).__name__}; give (inputs, targets) tensors, a dataset of (input, label) pairs "
        "or a source from nmdeploy.data.open_data"
    )


def check_labels(task: Task, outputs: torch.Tensor, batch: Batch, source: Source | Stream, what: str) -> None:
    """For classification: integer labels within the model's outputs, else one line naming the sample."""
    if not isinstance(task, Classification):
        return
    labels = batch.labels
    if labels is None:
        raise InputError(f"{what} {source.source!r} has no labels; classification needs integer class labels")
    if labels.is_floating_point() or labels.ndim != 1:
        raise InputError(
            f"{what} {source.source!r}: labels are {str(labels.dtype).removeprefix('torch.')} of shape "
            f"{list(labels.shape[1:])} per sample; classification needs one integer class label per sample"
        )
    classes = outputs.shape[-1]
    bad = (labels < 0) | (labels >= classes)
    if bool(bad.any()):
        row = int(torch.nonzero(bad)[0])
        value = int(labels[row])
        name = source.item_name(batch.index[row]) if batch.index else f"a sample of batch {row}"
        raise InputError(
            f"{what} {source.source!r}: {name} has label {value} but the model has {classes} outputs; "
            f"give labels 0..{classes - 1} or a model with more outputs"
        )


def _score_batches(
    model: nn.Module,
    batches: Any,
    task: Task,
    teacher: nn.Module | None,
    source: Source | Stream,
    what: str,
) -> tuple[float, int]:
    """(sum of the task's per-sample scores, samples) of ``model`` over ``batches`` (eval mode, no gradients)."""
    device = next(model.parameters()).device
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for batch in batches:
            if not len(batch):
                continue
            moved = batch.to(device)
            outputs = model(*moved.inputs).float().cpu()
            check_labels(task, outputs, batch, source, what)
            targets = task.targets(teacher, moved.inputs, batch.labels)
            total += task.score_sum(outputs, targets.cpu())
            count += len(batch)
    return total, count


def evaluate(
    model: nn.Module,
    data: Any,
    targets: torch.Tensor | None = None,
    task: Task | None = None,
    batch_size: int = 512,
    *,
    teacher: nn.Module | None = None,
    workers: int | None = 0,
    shard: bool = False,
    what: str = "evaluation data",
) -> float:
    """Mean task score of ``model`` on ``data`` (eval mode, no gradients); top-1 by default.

    ``data`` is a source or dataset (see :func:`as_data`), or input tensors with their
    ``targets``. ``teacher`` gives the targets of a distillation task. ``shard``: under
    ``torchrun``, each process scores its share and the sums are added up (every process
    must call it).
    """
    task = task or Classification()
    source = as_data(data if targets is None else (data, targets), what, "test")
    rank, world = distributed() if shard else (0, 1)
    device = next(model.parameters()).device
    loader = eval_loader(
        source, batch_size, resolve_workers(workers, source), device.type == "cuda", rank=rank, world=world
    )
    batches = iterate(loader, source, f"the {what}")
    total, count = _score_batches(model, batches, task, teacher, source, what)
    if world > 1:
        sums = torch.tensor([total, float(count)], dtype=torch.float64)
        torch.distributed.all_reduce(sums)
        total, count = float(sums[0]), int(sums[1])
    return total / max(1, count)


def top1_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512) -> float:
    """Share of ``x`` whose arg-max logit is ``y`` (model in eval mode, no gradients)."""
    return evaluate(model, x, y, Classification(), batch_size)


def distributed() -> tuple[int, int]:
    """(rank, world size) under torchrun / an initialised process group, else (0, 1)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1

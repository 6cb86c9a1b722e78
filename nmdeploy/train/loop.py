"""The classification fine-tune loop: resumable, deterministic on CPU, sparsity-aware.

Each epoch: ``sparsifier.set_epoch(epoch)`` (MaxQ's schedule), one pass over the training set
in an order drawn from ``seed`` and the epoch number alone, evaluation, then an atomic
checkpoint. Because the order, the global RNG and every optimizer/schedule/sparsifier state
are restored from that checkpoint, running the same call again after an interruption ends
with bit-identical weights on CPU (the test suite checks it).

SIGINT (Ctrl-C) and SIGTERM (``kill``, a scheduler's pre-emption) are caught while training:
the step under way finishes, a checkpoint of that exact point (mid-epoch included: the
epoch's order is re-drawn from the seed and the done batches are skipped on resume) is
written, and :class:`TrainingInterrupted` is raised with exit code 130 or 143. A second
Ctrl-C stops at once and keeps only the last checkpoint. A ``KeyboardInterrupt`` raised some
other way (signal handlers can only be set in the main thread) keeps the last completed epoch.

Under ``torchrun`` (an initialised ``torch.distributed`` process group) the model runs in
DistributedDataParallel: every process draws the same order and takes every world-th sample
of each global batch of ``batch_size``; rank 0 writes the checkpoints. Masks are buffers and
weights stay identical, so every rank holds the same masks.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nmdeploy.errors import InputError, TrainingInterrupted, first_line
from nmdeploy.train.checkpoint import load_training_state, save_training_state
from nmdeploy.train.config import TrainConfig
from nmdeploy.train.tasks import Classification, Task, run_batched

__all__ = ["EpochMetrics", "TrainResult", "evaluate", "fit", "top1_accuracy"]


class _StopRequest:
    """Set by the signal handlers; the loop polls it after every optimizer step."""

    def __init__(self) -> None:
        self.signum: int | None = None


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[_StopRequest]:
    """Turn SIGINT/SIGTERM into a request to stop at the next step boundary (main thread only)."""
    stop = _StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def request(signum: int, frame: Any) -> None:
        if stop.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        stop.signum = signum

    previous = {s: signal.signal(s, request) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)  # None: set outside Python


def _requested(stop: _StopRequest, world: int) -> int:
    """The signal to stop on (0: none); under DDP every rank agrees, so all stop at the same step."""
    if world <= 1:
        return stop.signum or 0
    flag = torch.tensor([float(stop.signum or 0)])
    torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
    return int(flag.item())


@dataclass(frozen=True)
class EpochMetrics:
    epoch: int  # 1-based: the epoch just completed
    train_loss: float
    train_score: float  # the task's score (top-1 for classification) on the batches as trained
    val_score: float | None
    lr: float  # at the end of the epoch
    seconds: float


@dataclass(frozen=True)
class TrainResult:
    history: tuple[EpochMetrics, ...]
    resumed_from: int  # epochs already done when this call started (0 = fresh)
    metric: str = "top-1"  # what the scores measure
    resumed_step: int = 0  # optimizer steps of epoch resumed_from + 1 already done (mid-epoch resume)


def _optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    rest = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=config.lr)
    return torch.optim.SGD(
        groups, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov and config.momentum > 0
    )


def _schedule(
    optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    total = config.epochs * steps_per_epoch
    warmup = int(round(config.warmup_epochs * steps_per_epoch))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


Inputs = torch.Tensor | Sequence[torch.Tensor]


def _as_inputs(inputs: Inputs) -> tuple[torch.Tensor, ...]:
    return (inputs,) if isinstance(inputs, torch.Tensor) else tuple(inputs)


def evaluate(
    model: nn.Module, inputs: Inputs, targets: torch.Tensor, task: Task | None = None, batch_size: int = 512
) -> float:
    """Mean task score of ``model`` on ``inputs`` (eval mode, no gradients); top-1 by default."""
    task = task or Classification()
    inputs = _as_inputs(inputs)
    outputs = run_batched(model, inputs, batch_size)
    return task.score_sum(outputs, targets) / max(1, len(targets))


def top1_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512) -> float:
    """Share of ``x`` whose arg-max logit is ``y`` (model in eval mode, no gradients)."""
    return evaluate(model, x, y, Classification(), batch_size)


def fit(
    model: nn.Module,
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor] | None,
    config: TrainConfig,
    sparsifier: Any = None,
    checkpoint: str | Path | None = None,
    on_epoch: Callable[[EpochMetrics], None] | None = None,
    on_step: Callable[[int, int], None] | None = None,
    task: Task | None = None,
) -> TrainResult:
    """Fine-tune ``model`` on ``train`` = (inputs, targets); resume from ``checkpoint``.

    ``inputs`` is a tensor or a tuple of tensors (one per model argument, samples on dim 0);
    ``targets`` what ``task`` trains towards (integer labels for the default classification).
    ``sparsifier``: the handle :func:`nmdeploy.sparsify` returned for ``model`` (or None).
    ``on_step(done, total)`` (optimizer steps over the whole run, resumed ones included) and
    ``on_epoch(metrics)`` drive progress displays.
    """
    task = task or Classification()
    inputs, y = _as_inputs(train[0]), train[1]
    if len(y) == 0 or any(len(t) != len(y) for t in inputs):
        counts = ", ".join(str(len(t)) for t in inputs)
        raise InputError(
            f"training data has {counts} inputs and {len(y)} targets; give as many targets as inputs, at least one"
        )
    x = inputs[0]
    device = next(model.parameters()).device
    rank, world = _distributed()
    steps = math.ceil(len(x) / config.batch_size)
    if world > 1 and len(x) % config.batch_size and len(x) % config.batch_size < world:
        steps -= 1  # a last batch smaller than the number of processes would leave a rank without data
    net: nn.Module = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        # Parameters and buffers (nmdeploy's masks included) start from rank 0's and stay in step.
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = _optimizer(model, config)
    schedule = _schedule(optimizer, config, steps)
    history: list[EpochMetrics] = []
    start, skip, partial = 0, 0, (0.0, 0.0)
    path = Path(checkpoint) if checkpoint is not None else None
    if path is not None and path.is_file():
        start, history, skip, partial = _resume(path, model, optimizer, schedule, sparsifier, config)
    resumed = (start, skip)

    def save(epoch_done: int, step: int = 0, sums: tuple[float, float] = (0.0, 0.0)) -> None:
        if path is not None and rank == 0:
            save_training_state(
                path,
                {
                    "epoch": epoch_done,
                    "step": step,
                    "partial": list(sums),
                    "config": asdict(config),
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "schedule": schedule.state_dict(),
                    "sparsifier": sparsifier.state_dict() if sparsifier is not None else None,
                    "rng": torch.get_rng_state(),
                    "history": [asdict(m) for m in history],
                },
            )
        if world > 1:
            torch.distributed.barrier()  # nobody reads a checkpoint rank 0 is still writing

    where = f"{path}" if path is not None else "nowhere (no checkpoint path was given)"

    def _epoch(epoch: int, skip: int, partial: tuple[float, float]) -> EpochMetrics:
        began = time.perf_counter()
        if sparsifier is not None:
            sparsifier.set_epoch(epoch)
        model.train()
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(config.seed * 1_000_003 + epoch))
        loss_sum, correct = partial
        try:
            for step, batch in enumerate(order.split(config.batch_size)[:steps]):
                if step < skip:
                    continue  # done before the interruption this run resumes from
                index = batch[rank::world]  # each process takes its share of the global batch
                batch_inputs, labels = [t[index].to(device) for t in inputs], y[index].to(device)
                optimizer.zero_grad(set_to_none=True)
                with autocast:
                    logits = net(*batch_inputs)
                    loss = task.loss(logits, labels, config.label_smoothing)
                loss.backward()
                if config.grad_clip:
                    nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                optimizer.step()
                schedule.step()
                loss_sum += float(loss.detach()) * len(index)
                correct += task.score_sum(logits.detach().float(), labels)
                if on_step is not None:
                    on_step(epoch * steps + step + 1, config.epochs * steps)
                signum = _requested(stop, world)
                if signum and step + 1 < steps:
                    save(epoch, step + 1, (loss_sum, correct))
                    raise TrainingInterrupted(
                        f"stopped by {signal.Signals(signum).name} in epoch {epoch + 1} after step {step + 1} of {steps}; "
                        f"that point is saved in {where}",
                        signum,
                    )
        except KeyboardInterrupt:
            raise TrainingInterrupted(
                f"interrupted in epoch {epoch + 1}; {epoch} completed epoch(s) are saved in {where}"
            ) from None
        if world > 1:  # DDP syncs buffers at each forward; do it once more so every rank ends equal
            for buffer in model.buffers():
                torch.distributed.broadcast(buffer, src=0)
        val_score = evaluate(model, val[0], val[1], task) if val is not None else None
        seen = sum(len(b[rank::world]) for b in order.split(config.batch_size)[:steps])
        return EpochMetrics(
            epoch + 1,
            loss_sum / seen,
            correct / seen,
            val_score,
            optimizer.param_groups[0]["lr"],
            time.perf_counter() - began,
        )

    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if config.amp and device.type == "cuda"
        else contextlib.nullcontext()
    )
    with _stop_on_signals() as stop:
        for epoch in range(start, config.epochs):
            metrics = _epoch(epoch, skip, partial)
            skip, partial = 0, (0.0, 0.0)
            history.append(metrics)
            save(epoch + 1)
            if on_epoch is not None:
                on_epoch(metrics)
            signum = _requested(stop, world)
            if signum:  # after the last epoch too: the caller must not go on to its next step
                raise TrainingInterrupted(
                    f"stopped by {signal.Signals(signum).name} after epoch {epoch + 1} of {config.epochs}; "
                    f"it is saved in {where}",
                    signum,
                )
    return TrainResult(tuple(history), resumed[0], task.metric, resumed[1])


def _distributed() -> tuple[int, int]:
    """(rank, world size) under torchrun / an initialised process group, else (0, 1)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _resume(
    path: Path, model: nn.Module, optimizer: Any, schedule: Any, sparsifier: Any, config: TrainConfig
) -> tuple[int, list[EpochMetrics], int, tuple[float, float]]:
    state = load_training_state(path)
    saved = state.get("config", {})
    changed = sorted(k for k, v in asdict(config).items() if saved.get(k) != v)
    if changed:
        key = changed[0]
        raise InputError(
            f"{path} was written with other training settings ({key}: {saved.get(key)!r} there, {getattr(config, key)!r} now); "
            "delete it to start over or restore the settings to resume"
        )
    if (state["sparsifier"] is None) != (sparsifier is None):
        raise InputError(
            f"{path} was written {'with' if state['sparsifier'] is not None else 'without'} sparsity; use the same recipe to resume"
        )
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise InputError(f"{path} does not fit the model: {first_line(exc)}") from None
    optimizer.load_state_dict(state["optimizer"])
    schedule.load_state_dict(state["schedule"])
    if sparsifier is not None:
        sparsifier.load_state_dict(state["sparsifier"])
    torch.set_rng_state(state["rng"])
    loss_sum, correct = state.get("partial", (0.0, 0.0))
    return (
        int(state["epoch"]),
        [EpochMetrics(**m) for m in state["history"]],
        int(state.get("step", 0)),
        (float(loss_sum), float(correct)),
    )

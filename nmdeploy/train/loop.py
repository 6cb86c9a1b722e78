"""The fine-tune loop: streamed, resumable, deterministic on CPU, sparsity-aware.

Each epoch: ``sparsifier.set_epoch(epoch)`` (MaxQ's schedule), one pass over the training set
(or ``steps_per_epoch`` optimizer steps) in an order drawn from ``seed`` and the epoch number
alone, read through a DataLoader (:mod:`nmdeploy.data.loader`), evaluation, then an atomic
checkpoint. Each optimizer step runs ``grad_accum`` micro-batches, under autocast on CUDA
(``amp``; fp16 with a GradScaler), and adds the SR decay of SR-STE and MaxQ once, after
unscaling, so that it is the same update as in fp32. Because the order, the global RNG and every optimizer/schedule/sparsifier state
are restored from that checkpoint, running the same call again after an interruption ends
with bit-identical weights on CPU (the test suite checks it).

SIGINT (Ctrl-C) and SIGTERM (``kill``, a scheduler's pre-emption) are caught while training:
the step under way finishes, a checkpoint of that exact point (mid-epoch included: the
epoch's order is re-drawn from the seed and the done batches are skipped on resume) is
written, and :class:`TrainingInterrupted` is raised with exit code 130 or 143. A second
Ctrl-C stops at once and keeps only the last checkpoint. A ``KeyboardInterrupt`` raised some
other way (signal handlers can only be set in the main thread) keeps the last completed epoch.

Under ``torchrun`` (an initialised ``torch.distributed`` process group) the model runs in
DistributedDataParallel: every process draws the same order and reads only every world-th
sample of each global batch of ``batch_size``; rank 0 writes the checkpoints. Masks are buffers and
weights stay identical, so every rank holds the same masks.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nmdeploy.data.loader import Batch, EpochBatches, iterate, resolve_workers, train_loader
from nmdeploy.data.source import Stream
from nmdeploy.data.streams import stream_loader
from nmdeploy.errors import InputError, TrainingInterrupted, first_line
from nmdeploy.train.checkpoint import load_training_state, save_training_state
from nmdeploy.train.config import TrainConfig
from nmdeploy.train.scoring import as_data, check_labels, distributed, evaluate, top1_accuracy
from nmdeploy.train.tasks import Classification, Distill, Task

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


def fit(
    model: nn.Module,
    train: Any,
    val: Any,
    config: TrainConfig,
    sparsifier: Any = None,
    checkpoint: str | Path | None = None,
    on_epoch: Callable[[EpochMetrics], None] | None = None,
    on_step: Callable[[int, int], None] | None = None,
    task: Task | None = None,
    *,
    teacher: nn.Module | None = None,
    distill: Distill | None = None,
    workers: int | None = None,
    names: tuple[str, str] = ("training data", "validation data"),
) -> TrainResult:
    """Fine-tune ``model`` on ``train``, score it on ``val`` after every epoch; resume from ``checkpoint``.

    ``train`` and ``val`` are sources (:func:`nmdeploy.data.open_data`), datasets of
    ``(input, label)`` pairs, or ``(inputs, targets)`` tensors (see :func:`scoring.as_data`);
    ``val`` may be None. ``task`` says what the outputs train towards (classification by
    default); ``teacher`` gives a distillation task its targets, batch by batch. ``distill``
    mixes the divergence from ``teacher``'s logits into the task's loss on every training batch
    (the teacher runs frozen, in eval mode; evaluation still scores the task alone).
    ``sparsifier``: the handle :func:`nmdeploy.sparsify` returned for ``model`` (or None).
    ``workers``: DataLoader worker processes (None: automatic). ``on_step(done, total)``
    (optimizer steps over the whole run, resumed ones included) and ``on_epoch(metrics)``
    drive progress displays; ``names`` word the errors about the two data sets.
    """
    task = task or Classification()
    if distill is not None:
        _check_teacher(teacher, model)
    source = as_data(train, names[0], "train")
    val_source = None if val is None else as_data(val, names[1], "test")
    device = next(model.parameters()).device
    rank, world = distributed()
    accum = config.grad_accum
    if config.batch_size < world * accum:
        raise InputError(
            f"batch_size = {config.batch_size} cannot be split over {world} process(es) x grad_accum = {accum} "
            "micro-batches; raise batch_size or lower grad_accum"
        )
    stream = isinstance(source, Stream)
    if stream:
        if not config.steps_per_epoch:
            raise InputError(
                f"the {names[0]} {source.source!r} is a stream with no length; set steps_per_epoch "
                "(the optimizer steps of one epoch)"
            )
        steps = config.steps_per_epoch
    elif len(source) < config.batch_size:
        raise InputError(
            f"the {names[0]} {source.source!r} has {len(source)} samples, fewer than one batch of "
            f"batch_size = {config.batch_size}; lower batch_size or give more data"
        )
    readers = resolve_workers(workers, source)
    cuda = device.type == "cuda"  # pinned batches, autocast, channels-last
    if not stream:
        sampler = EpochBatches(
            len(source), config.batch_size, config.seed, config.steps_per_epoch or None, rank, world, accum
        )
        steps = sampler.steps
        loader = train_loader(source, sampler, readers, cuda, config.seed)
    channels_last = config.channels_last and cuda
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if distill is not None:  # the teacher reads the batches as the student does: same device and layout
        teacher.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)  # type: ignore[union-attr]
    net: nn.Module = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        # Parameters and buffers (nmdeploy's masks included) start from rank 0's and stay in step.
        net = DistributedDataParallel(model, device_ids=[device.index] if cuda else None)
    optimizer = _optimizer(model, config)
    schedule = _schedule(optimizer, config, steps)
    amp = config.amp != "off" and cuda
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16 if config.amp == "bf16" else torch.float16)
        if amp
        else contextlib.nullcontext()
    )
    scaler = torch.amp.GradScaler("cuda") if amp and config.amp == "fp16" else None
    history: list[EpochMetrics] = []
    start, skip, partial = 0, 0, (0.0, 0.0)
    path = Path(checkpoint) if checkpoint is not None else None
    if path is not None and path.is_file():
        start, history, skip, partial = _resume(path, model, optimizer, schedule, sparsifier, config, scaler, distill)
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
                    "distill": asdict(distill) if distill is not None else None,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "schedule": schedule.state_dict(),
                    "scaler": scaler.state_dict() if scaler is not None else None,
                    "sparsifier": sparsifier.state_dict() if sparsifier is not None else None,
                    "rng": torch.get_rng_state(),
                    "history": [asdict(m) for m in history],
                },
            )
        if world > 1:
            torch.distributed.barrier()  # nobody reads a checkpoint rank 0 is still writing

    where = f"{path}" if path is not None else "nowhere (no checkpoint path was given)"

    def step_once(micro: list[Batch], sums: list[float]) -> None:
        """One optimizer step over the micro-batches of one global batch (this process's share)."""
        optimizer.zero_grad(set_to_none=True)
        share = sum(len(b) for b in micro)
        live = [b for b in micro if len(b)]
        for j, batch in enumerate(live):
            moved = batch.to(device, channels_last)
            targets = task.targets(teacher, moved.inputs, moved.labels).to(device)
            last = j == len(live) - 1
            with net.no_sync() if world > 1 and not last else contextlib.nullcontext():
                with autocast:
                    outputs = net(*moved.inputs)
                    check_labels(task, outputs, batch, source, names[0])
                    loss = task.loss(outputs, targets, config.label_smoothing)
                    if distill is not None:
                        with torch.no_grad():
                            taught = teacher(*moved.inputs)  # type: ignore[misc]
                        loss = distill.mix(loss, outputs, taught)
                part = loss if len(micro) == 1 else loss * (len(batch) / share)  # the mean over the share
                (scaler.scale(part) if scaler is not None else part).backward()
            sums[0] += float(loss.detach()) * len(batch)
            sums[1] += task.score_sum(outputs.detach().float(), targets)
        if scaler is not None:
            scaler.unscale_(optimizer)
        if sparsifier is not None:
            sparsifier.apply_decay()  # once per step, on the unscaled gradient
        if config.grad_clip:
            nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        schedule.step()

    def _epoch(epoch: int, skip: int, partial: tuple[float, float]) -> EpochMetrics:
        began = time.perf_counter()
        if sparsifier is not None:
            sparsifier.set_epoch(epoch)
        model.train()
        if stream:
            stream_batches = stream_loader(
                source, config.batch_size, steps, rank, world, accum, skip, readers, cuda, config.seed
            )
            batches = iterate(stream_batches, source, f"the {names[0]}")
        else:
            sampler.set_epoch(epoch, skip)
            batches = iterate(loader, source, f"the {names[0]}")
        sums = list(partial)
        step = skip
        micro: list[Batch] = []
        try:
            for batch in batches:
                micro.append(batch)
                if len(micro) < accum:
                    continue
                step_once(micro, sums)
                micro = []
                step += 1
                if on_step is not None:
                    on_step(epoch * steps + step, config.epochs * steps)
                signum = _requested(stop, world)
                if signum and step < steps:
                    save(epoch, step, (sums[0], sums[1]))
                    raise TrainingInterrupted(
                        f"stopped by {signal.Signals(signum).name} in epoch {epoch + 1} after step {step} of {steps}; "
                        f"that point is saved in {where}",
                        signum,
                    )
        except KeyboardInterrupt:
            raise TrainingInterrupted(
                f"interrupted in epoch {epoch + 1}; {epoch} completed epoch(s) are saved in {where}"
            ) from None
        val_score = None
        if val_source is not None:  # each process scores its share of the validation set
            val_score = evaluate(
                model, val_source, task=task, teacher=teacher, workers=workers, shard=True, what=names[1]
            )
        if world > 1:  # DDP syncs buffers at each forward; do it once more so every rank ends equal
            for buffer in model.buffers():  # (also masks an evaluation forward refreshed on some ranks only)
                torch.distributed.broadcast(buffer, src=0)
        seen = steps * len(range(rank, config.batch_size, world)) if stream else sampler.samples()
        return EpochMetrics(
            epoch + 1,
            sums[0] / seen,
            sums[1] / seen,
            val_score,
            optimizer.param_groups[0]["lr"],
            time.perf_counter() - began,
        )

    if sparsifier is not None:
        sparsifier.defer_decay(True)  # the SR term once per step, after unscaling (docs/design/methods.md §2)
    try:
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
    finally:
        if sparsifier is not None:
            sparsifier.defer_decay(False)
    return TrainResult(tuple(history), resumed[0], task.metric, resumed[1])


def _check_teacher(teacher: nn.Module | None, model: nn.Module) -> None:
    """Distillation needs a teacher, in eval mode, that is not the student itself."""
    if teacher is None:
        raise InputError(
            "task.distill needs the dense model as teacher, and none is available: pass teacher= "
            "(the model before sparsify()), or turn distillation off (task.distill: false)"
        )
    if teacher is model:
        raise InputError("task.distill: the teacher is the model being trained; pass a frozen copy of the dense model")
    teacher.eval()  # its outputs are taken under no_grad, so it needs no requires_grad changes (a copy stays trainable)


def _resume(
    path: Path,
    model: nn.Module,
    optimizer: Any,
    schedule: Any,
    sparsifier: Any,
    config: TrainConfig,
    scaler: Any,
    distill: Distill | None,
) -> tuple[int, list[EpochMetrics], int, tuple[float, float]]:
    state = load_training_state(path)
    saved = {**state.get("config", {}), "distill": state.get("distill")}
    current = {**asdict(config), "distill": asdict(distill) if distill is not None else None}
    changed = sorted(k for k, v in current.items() if saved.get(k) != v)
    if changed:
        key = changed[0]
        raise InputError(
            f"{path} was written with other training settings ({key}: {saved.get(key)!r} there, {current[key]!r} now); "
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
    if scaler is not None and state.get("scaler") is not None:
        scaler.load_state_dict(state["scaler"])
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

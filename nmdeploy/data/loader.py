"""Sources behind ``torch.utils.data.DataLoader``: training epochs, evaluation passes, chunks for ONNX.

Training reads through :class:`EpochBatches`, a batch sampler that draws each epoch's order
from the seed and the epoch alone (``torch.randperm``), cuts it into global batches of
``batch_size``, gives each process of a ``torchrun`` job its share of every batch
(``batch[rank::world]``, so a rank reads only its own samples), splits that share into
``grad_accum`` micro-batches, and starts a resumed epoch at its next step without reading
the done ones. Keys are ``(epoch, index)``: an augmenting source draws each sample's crop
from ``(seed, epoch, index)``, so worker processes, however many, produce the same batches.

Nothing raised in a worker crosses the process boundary as a traceback: a bad sample comes
back as a :class:`Failure` with its one-line message, and the main process raises it. A
worker that dies is one line too (:func:`iterate`). Workers ignore SIGINT/SIGTERM: the
training loop decides when to stop, and finishes the step it is in.
"""

from __future__ import annotations

import math
import os
import random
import signal
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from nmdeploy.data.config import MAX_WORKERS
from nmdeploy.data.source import ArrayData, Source, Stream
from nmdeploy.errors import InputError, NMDeployError, describe, first_line

__all__ = [
    "Batch",
    "EpochBatches",
    "Failure",
    "eval_loader",
    "head",
    "iterate",
    "identity",
    "make_loader",
    "concat",
    "read_chunks",
    "read_items",
    "resolve_workers",
    "train_loader",
]


@dataclass(frozen=True)
class Failure:
    """A batch that could not be read: the one-line reason, raised in the main process."""

    message: str


@dataclass(frozen=True)
class Batch:
    """One (micro-)batch as tensors: inputs in the model's argument order, labels, where the rows came from."""

    inputs: tuple[torch.Tensor, ...]
    labels: torch.Tensor | None
    index: tuple[int, ...]
    skipped: tuple[int, ...] = ()

    def __len__(self) -> int:
        return len(self.inputs[0])

    def pin_memory(self) -> Batch:  # DataLoader(pin_memory=True) calls this in its pinning thread
        labels = None if self.labels is None else self.labels.pin_memory()
        return Batch(tuple(t.pin_memory() for t in self.inputs), labels, self.index, self.skipped)

    def to(self, device: torch.device, channels_last: bool = False) -> Batch:
        """On ``device`` (asynchronously from pinned memory); 4-D float inputs channels-last when asked."""
        asynchronous = device.type == "cuda"
        moved = []
        for t in self.inputs:
            t = t.to(device, non_blocking=asynchronous)
            if channels_last and t.ndim == 4 and t.is_floating_point():
                t = t.contiguous(memory_format=torch.channels_last)
            moved.append(t)
        labels = None if self.labels is None else self.labels.to(device, non_blocking=asynchronous)
        return Batch(tuple(moved), labels, self.index, self.skipped)


def _view(array: np.ndarray, dtype: Any = None) -> torch.Tensor:
    """``array`` (as ``dtype``) as a tensor with torch's own strides.

    numpy gives a size-1 dim (one channel) stride 1, which torch reads as channels-last and
    which then picks other convolution kernels; a view of the flat buffer has the standard
    strides, at no copy.
    """
    return torch.from_numpy(np.ascontiguousarray(array, dtype=dtype).reshape(-1)).view(array.shape)


def _tensor(array: np.ndarray) -> torch.Tensor:
    """Integer arrays (token ids, classes) as int64, everything else as float32."""
    return _view(array, np.int64 if np.issubdtype(array.dtype, np.integer) else np.float32)


def to_batch(data: ArrayData | Failure) -> Batch | Failure:
    """A batch of arrays as tensors (the DataLoader's collate function; runs in the worker)."""
    if isinstance(data, Failure):
        return data
    labels = None if data.labels is None else _label_tensor(data.labels)
    return Batch(tuple(_tensor(a) for a in data.inputs.values()), labels, data.index, data.skipped)


def _label_tensor(labels: np.ndarray) -> torch.Tensor:
    """Class labels as int64; other targets (a teacher's outputs) in their own dtype."""
    return _view(labels, np.int64 if np.issubdtype(labels.dtype, np.integer) else None)


def identity(data: Any) -> Any:
    """The collate function of reads that stay arrays (the ONNX side, calibration) and of pre-collated streams."""
    return data


class _Keyed(torch.utils.data.Dataset):
    """A source as a map-style dataset whose keys are indices or ``(epoch, index)`` pairs.

    ``__getitems__`` reads a whole batch at once (arrays are fancy-indexed, not stacked one by
    one) and returns a :class:`Failure` instead of raising.
    """

    def __init__(self, source: Source, seed: int) -> None:
        self.source = source
        self.seed = seed

    def __len__(self) -> int:
        return len(self.source)

    def __getitems__(self, keys: Sequence[Any]) -> ArrayData | Failure:
        try:
            if keys and isinstance(keys[0], tuple):
                indices = [k[1] for k in keys]
                rngs = [np.random.default_rng((self.seed, k[0], k[1])) for k in keys] if self.source.random else None
            else:
                indices, rngs = list(keys), None
            return self.source.read_batch(indices, rngs)
        except NMDeployError as exc:
            return Failure(first_line(exc, 400))
        except Exception as exc:  # a bug, or memory: still one line in the main process
            return Failure(f"data {self.source.source!r}: reading samples raised {describe(exc)}")

    def __getitem__(self, key: Any) -> ArrayData | Failure:
        return self.__getitems__([key])


def _seed_worker(worker: int) -> None:
    """Seed numpy and random per worker (torch seeds itself), and leave stopping to the main process."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)


def resolve_workers(workers: int | None, source: Source | Stream) -> int:
    """``workers`` as given, or, when None (``data.workers: null``), none for arrays and one per CPU
    core this process can spare (``LOCAL_WORLD_SIZE`` processes share the machine under torchrun)."""
    if workers is not None:
        return workers
    if source.in_memory:
        return 0
    processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(MAX_WORKERS, cpus // max(1, processes) - 1))


def make_loader(dataset: Any, sampler: Any, workers: int, pin: bool, seed: int, collate: Any, persistent: bool):
    """The one DataLoader of every reader: seeded workers that ignore stop signals, its own generator."""
    return torch.utils.data.DataLoader(
        dataset,
        batch_sampler=sampler,
        batch_size=None if sampler is None else 1,
        num_workers=workers,
        collate_fn=collate,
        pin_memory=pin,
        worker_init_fn=_seed_worker if workers else None,
        persistent_workers=persistent and workers > 0,
        generator=torch.Generator().manual_seed(seed % 2**63),  # the global RNG stays untouched
    )


def iterate(loader: Any, source: Source | Stream, what: str) -> Iterator[Any]:
    """The loader's batches; a :class:`Failure` or a dead worker becomes one :class:`InputError` line.

    Samples a source skipped (``data.skip_bad``) are added to its ``bad`` set. Every batch must
    hold samples of the shapes and dtype kinds of the first (a batch is consistent in itself:
    :meth:`Source.read_batch` checks it where it is read).
    """
    batches = iter(loader)
    first: list | None = None
    while True:
        try:
            item = next(batches)
        except StopIteration:
            return
        except NMDeployError:
            raise
        except Exception as exc:  # a worker died (killed, out of memory) or the loader itself failed
            raise InputError(
                f"reading {what} failed: {first_line(exc, 160)}; set data.workers: 0 to read it in this process"
            ) from exc
        for part in item if isinstance(item, list) else (item,):  # a stream's step comes as a list
            if isinstance(part, Failure):
                raise InputError(part.message)
            if part.skipped:
                bad = getattr(source, "bad", None)
                if bad is None:
                    bad = set()
                    source.bad = bad
                bad.update(part.skipped)
            if len(part):
                shapes = _shapes(part, source.dynamic_dims)
                if first is None:
                    first = shapes
                elif shapes != first:
                    _mismatch(source, part, shapes, first)
            yield part


def _shapes(part: Batch | ArrayData, dynamic: tuple[int, ...] = ()) -> list[tuple[tuple[int, ...], str]]:
    """Each input's sample shape and kind; the ``dynamic`` dims (a text batch's length) count as any size."""
    arrays = part.inputs if isinstance(part, Batch) else list(part.inputs.values())
    return [
        (tuple(-1 if d in dynamic else n for d, n in enumerate(a.shape) if d > 0), "f" if _floating(a) else "i")
        for a in arrays
    ]


def _floating(array: Any) -> bool:
    return array.is_floating_point() if isinstance(array, torch.Tensor) else array.dtype.kind in "fc"


def _mismatch(source: Any, part: Any, shapes: list, first: list) -> None:
    kinds = {"f": "float", "i": "integer"}
    where = source.item_name(part.index[0]) if part.index else "a sample"
    if len(shapes) != len(first):
        raise InputError(
            f"data {source.source!r}: {where} has {len(shapes)} inputs but the samples before it have "
            f"{len(first)}; give every sample the same inputs"
        )
    (shape, kind), (want, want_kind) = next((a, b) for a, b in zip(shapes, first) if a != b)
    raise InputError(
        f"data {source.source!r}: {where} has shape {list(shape)} ({kinds[kind]}) but samples must be "
        f"{list(want)} ({kinds[want_kind]}); give every sample that shape"
    )


# -- training -----------------------------------------------------------------------------------------


class EpochBatches:
    """The batch sampler of training (see the module docstring); ``set_epoch`` before each pass."""

    def __init__(
        self,
        size: int,
        batch_size: int,
        seed: int,
        steps: int | None = None,
        rank: int = 0,
        world: int = 1,
        accum: int = 1,
    ) -> None:
        """``steps`` per epoch, every batch full (a ``steps_per_epoch``); None: one pass, whose last
        batch may be short (:meth:`full_pass`)."""
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.full = steps is None
        self.steps = self.full_pass(size, batch_size, world, accum) if steps is None else steps
        self.rank, self.world, self.accum = rank, world, accum
        self.epoch, self.skip = 0, 0

    @staticmethod
    def full_pass(size: int, batch_size: int, world: int = 1, accum: int = 1) -> int:
        """Optimizer steps of one pass over ``size`` samples; a last batch too small to give every
        process ``accum`` samples is dropped."""
        steps = math.ceil(size / batch_size)
        if size % batch_size and (size % batch_size) // world < accum:
            steps -= 1
        return steps

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip

    def order(self, epoch: int) -> torch.Tensor:
        """The epoch's sample order: ``randperm`` from (seed, epoch), more of them when the epoch is longer than the data."""
        need = self.size if self.full else self.steps * self.batch_size
        seed = (self.seed * 1_000_003 + epoch) % 2**64
        seeds = [seed] + [(seed * 0x9E3779B97F4A7C15 + k) % 2**64 for k in range(1, math.ceil(need / self.size))]
        parts = [torch.randperm(self.size, generator=torch.Generator().manual_seed(s)) for s in seeds]
        return torch.cat(parts) if len(parts) > 1 else parts[0]

    def shares(self, epoch: int) -> Iterator[list[np.ndarray]]:
        """For each step of the epoch, this process's micro-batches of sample indices."""
        order = self.order(epoch)
        for step in range(self.steps):
            batch = order[step * self.batch_size : (step + 1) * self.batch_size]
            share = batch[self.rank :: self.world].numpy()
            yield np.array_split(share, self.accum)

    def samples(self) -> int:
        """The samples this process reads in one epoch (worked out, not drawn: no permutation needed)."""
        sizes = [self.batch_size] * self.steps
        if self.full and self.steps:
            sizes[-1] = min(self.batch_size, self.size - (self.steps - 1) * self.batch_size)
        return sum(len(range(self.rank, size, self.world)) for size in sizes)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for step, micro in enumerate(self.shares(self.epoch)):
            if step < self.skip:
                continue  # done before the interruption this run resumes from: never read
            for part in micro:
                yield [(self.epoch, int(i)) for i in part]

    def __len__(self) -> int:
        return (self.steps - self.skip) * self.accum


def train_loader(
    source: Source, sampler: EpochBatches, workers: int, pin: bool, seed: int
) -> torch.utils.data.DataLoader:
    """The training DataLoader over ``source``, driven by ``sampler`` (persistent workers)."""
    return make_loader(_Keyed(source, seed), sampler, workers, pin, seed, to_batch, persistent=True)


# -- evaluation and reading -----------------------------------------------------------------------------


def _chunks(count: int, batch_size: int, rank: int = 0, world: int = 1) -> list[list[int]]:
    """Batches of ``batch_size`` over this rank's samples ``rank, rank + world, ...``, in order."""
    mine = range(rank, count, world)
    return [list(mine[s : s + batch_size]) for s in range(0, len(mine), batch_size)]


def eval_loader(
    source: Source | Stream,
    batch_size: int,
    workers: int,
    pin: bool = False,
    arrays: bool = False,
    rank: int = 0,
    world: int = 1,
):
    """One pass over ``source`` in order, in batches of ``batch_size`` (tensors, or arrays with ``arrays``);
    with ``world`` > 1 only this ``rank``'s share (every world-th sample; for a stream, every world-th batch) is read."""
    collate = identity if arrays else to_batch
    if isinstance(source, Stream):
        from nmdeploy.data.streams import stream_loader

        return stream_loader(source, batch_size, None, 0, 1, 1, 0, workers, pin, 0, arrays, rank, world)
    chunks = _chunks(len(source), batch_size, rank, world)
    return make_loader(_Keyed(source, 0), chunks, workers, pin, 0, collate, False)


def read_chunks(
    source: Source | Stream, batch_size: int, workers: int = 0, what: str = "the data"
) -> Iterator[ArrayData]:
    """``source`` in consecutive chunks of arrays (what the ONNX-side stages feed onnxruntime)."""
    if isinstance(source, ArrayData):  # in memory: slices, no loader
        for start in range(0, len(source), batch_size):
            yield source.take(np.arange(start, min(start + batch_size, len(source))))
        return
    yield from iterate(eval_loader(source, batch_size, workers, arrays=True), source, what)


def read_items(source: Source, indices: np.ndarray, workers: int = 0, what: str = "the data") -> ArrayData:
    """The samples at ``indices``, in that order, as arrays (a calibration draw), read by ``workers``."""
    if isinstance(source, ArrayData):
        return source.take(indices)
    order = [int(i) for i in indices]
    loader = make_loader(_Keyed(source, 0), [order[s : s + 64] for s in range(0, len(order), 64)],
                     workers, False, 0, identity, False)  # fmt: skip
    parts = list(iterate(loader, source, what))
    return concat(parts, source)


def head(data: Source | Stream, count: int, what: str) -> ArrayData:
    """The first ``count`` samples of any source, as arrays (shape checks, an export's sample batch);
    ``what`` names the data in the error an empty one gets."""
    if isinstance(data, Stream):
        from nmdeploy.data.streams import read_stream

        return read_stream(data, count, what)
    if len(data) == 0:
        raise InputError(f"{what} is empty; it needs at least one sample")
    return data.take(np.arange(min(count, len(data))))


def _padded(arrays: list[np.ndarray], source: Source | Stream, name: str) -> np.ndarray:
    """``arrays`` joined along dim 0; batches of text (padded each to its own longest) are padded to the longest
    of all first, with the source's pad value for that input (0 where it names none)."""
    longest = tuple(max(a.shape[d] for a in arrays) for d in range(1, arrays[0].ndim))
    if source.dynamic_dims and any(a.shape[1:] != longest for a in arrays):
        value = source.pad_values.get(name, 0)
        arrays = [
            np.pad(a, [(0, 0)] + [(0, n - s) for n, s in zip(longest, a.shape[1:])], constant_values=value)
            for a in arrays
        ]
    return np.concatenate(arrays)


def concat(parts: list[ArrayData], source: Source | Stream) -> ArrayData:
    """Batches read from ``source`` as one :class:`ArrayData`."""
    if not parts:
        raise InputError(f"data {source.source!r} is empty; it needs at least one sample")
    inputs = {name: _padded([p.inputs[name] for p in parts], source, name) for name in parts[0].inputs}
    labelled = [p.labels for p in parts if p.labels is not None]
    labels = np.concatenate(labelled) if len(labelled) == len(parts) else None
    skipped = tuple(i for p in parts for i in p.skipped)
    index = tuple(i for p in parts for i in p.index)
    return ArrayData(inputs, labels, source.source, source.split, source.preprocessing, skipped, index)

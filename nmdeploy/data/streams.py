"""Streams (a plug-in's ``IterableDataset``) behind a DataLoader: cut into global batches, shared by ranks.

A stream has no length and no index, so it cannot be sampled: every epoch iterates it from
the start and cuts it into global batches of ``batch_size``; rank r keeps ``batch[r::world]``,
and worker w of n builds the steps w, w + n, ... (the loader takes them in that order). A
resumed epoch reads past the steps already done (a stream cannot skip) without returning
them. Every worker and process iterates the whole stream; one that shards itself is better
read with ``data.workers: 0``.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch

from nmdeploy.data.loader import Failure, concat, identity, iterate, make_loader, to_batch
from nmdeploy.data.plugins import input_names
from nmdeploy.data.source import ArrayData, Stream, signature
from nmdeploy.errors import InputError, NMDeployError, describe, first_line

__all__ = ["as_stream", "read_stream", "stream_loader"]


def as_stream(value: Any, spec: str, split: str, config: Any = None) -> Stream:
    """A plug-in's iterable dataset as a :class:`Stream` (its first item gives the input names; records
    with a ``text`` are tokenised per batch, :class:`~nmdeploy.data.text.TextStream`)."""
    try:
        first = next(iter(value))
    except StopIteration:
        raise InputError(f"data {spec!r}: the stream is empty") from None
    except NMDeployError:
        raise
    except Exception as exc:
        raise InputError(f"data {spec!r}: iterating its dataset raised {describe(exc)}") from exc
    if isinstance(first, Mapping) and isinstance(first.get("text"), str):
        from nmdeploy.data.text import TextStream

        return TextStream(value, spec, split, config)
    return Stream(value, spec, split, input_names(first))


class _StreamBatches(torch.utils.data.IterableDataset):
    """A stream cut into global batches (see the module docstring)."""

    def __init__(self, stream: Stream, batch_size: int, steps: int | None, rank: int, world: int, accum: int,
                 skip: int, collate: Any, eval_rank: int = 0, eval_world: int = 1) -> None:  # fmt: skip
        self.stream, self.batch_size, self.steps = stream, batch_size, steps
        self.rank, self.world, self.accum, self.skip, self.collate = rank, world, accum, skip, collate
        self.eval_rank, self.eval_world = eval_rank, eval_world

    def __iter__(self) -> Iterator[Any]:
        info = torch.utils.data.get_worker_info()
        workers, worker = (1, 0) if info is None else (info.num_workers, info.id)
        source = self.stream.batch_reader()
        samples = self.stream.iterate()
        expect = None
        for step in itertools.count() if self.steps is None else range(self.steps):
            try:
                items = list(itertools.islice(samples, self.batch_size))
            except NMDeployError as exc:
                yield Failure(first_line(exc, 400))
                return
            except Exception as exc:
                yield Failure(f"data {self.stream.source!r}: iterating its dataset raised {describe(exc)}")
                return
            if not items:
                if self.steps is not None:
                    yield Failure(self._short(step * self.batch_size))
                return
            if self.steps is not None and len(items) < self.batch_size:
                yield Failure(self._short(step * self.batch_size + len(items)))
                return
            if expect is None and not self.stream.dynamic_dims:  # text is checked as it is tokenised
                expect = signature(items[0][0])
            done = step - self.skip  # a resumed epoch reads (it must) but does not return the done steps
            if done < 0 or done % self.eval_world != self.eval_rank:
                continue
            if (done // self.eval_world) % workers != worker:
                continue  # the loader takes the steps from its workers in turn: 0, 1, ..., 0, 1, ...
            share = items[self.rank :: self.world]
            micro = []
            for part in np.array_split(np.arange(len(share)), self.accum):
                source.items = [share[i] for i in part]
                source.positions = [step * self.batch_size + self.rank + self.world * int(i) for i in part]
                try:
                    data = source.read_batch(range(len(part)), None, expect)
                except NMDeployError as exc:
                    yield Failure(first_line(exc, 400))
                    return
                micro.append(self.collate(data.renumbered(dict(enumerate(source.positions)))))
            yield micro  # one step's micro-batches together, so they stay in order

    def _short(self, count: int) -> str:
        return (
            f"data {self.stream.source!r}: the stream ended after {count} samples, but an epoch of "
            f"{self.steps} steps of {self.batch_size} needs {self.steps * self.batch_size}; lower steps_per_epoch"
        )


def stream_loader(stream: Stream, batch_size: int, steps: int | None, rank: int, world: int, accum: int,
                  skip: int, workers: int, pin: bool, seed: int, arrays: bool = False,
                  eval_rank: int = 0, eval_world: int = 1):  # fmt: skip
    """A DataLoader over a stream (training when ``steps`` is set, one whole pass when None;
    ``eval_rank`` of ``eval_world`` then keeps every eval_world-th batch)."""
    collate = identity if arrays else to_batch
    dataset = _StreamBatches(stream, batch_size, steps, rank, world, accum, skip, collate, eval_rank, eval_world)
    return make_loader(dataset, None, workers, pin, seed, identity, persistent=False)


def read_stream(stream: Stream, count: int | None, what: str = "the data") -> ArrayData:
    """The first ``count`` samples of a stream (all of it when None), as arrays."""
    parts: list[ArrayData] = []
    total = 0
    for part in iterate(stream_loader(stream, 256, None, 0, 1, 1, 0, 0, False, 0, arrays=True), stream, what):
        parts.append(part)
        total += len(part)
        if count is not None and total >= count:
            break
    data = concat(parts, stream)
    return data if count is None or len(data) <= count else data.take(np.arange(count))

"""The loaders: epoch batches and their shards, workers, one-line failures, streams, reading only what is used."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nmdeploy.data import ArrayData, DataConfig, open_data
from nmdeploy.data.loader import (
    EpochBatches,
    eval_loader,
    iterate,
    read_chunks,
    read_items,
    train_loader,
)
from nmdeploy.data.plugins import DatasetSource
from nmdeploy.data.source import Stream
from nmdeploy.data.streams import stream_loader
from nmdeploy.errors import InputError


@settings(max_examples=200, deadline=None)
@given(
    size=st.integers(1, 300),
    batch=st.integers(1, 64),
    world=st.integers(1, 4),
    accum=st.integers(1, 4),
    extra=st.integers(0, 3),
    epoch=st.integers(0, 5),
    skip=st.integers(0, 3),
)
def test_every_step_is_split_exactly_over_ranks_and_micro_batches(size, batch, world, accum, extra, epoch, skip):
    if batch < world * accum:
        return
    steps = EpochBatches.full_pass(size, batch, world, accum) if not extra else extra
    if steps == 0:
        return
    samplers = [EpochBatches(size, batch, 7, extra or None, rank, world, accum) for rank in range(world)]
    assert samplers[0].steps == steps
    order = samplers[0].order(epoch)
    assert len(order) >= steps * batch if extra else len(order) == size
    per_rank = [list(s.shares(epoch)) for s in samplers]
    for step in range(steps):
        expected = order[step * batch : (step + 1) * batch].tolist()
        got = [int(i) for r in range(world) for part in per_rank[r][step] for i in part]
        assert sorted(got) == sorted(expected)  # the ranks' shares make up the global batch, no sample twice
        sizes = [sum(len(p) for p in per_rank[r][step]) for r in range(world)]
        assert max(sizes) - min(sizes) <= 1 and min(sizes) >= accum  # every micro-batch of every rank has data
    for r in range(world):
        assert samplers[r].samples() == sum(len(p) for step in per_rank[r] for p in step)
    sampler = samplers[-1]
    sampler.set_epoch(epoch, min(skip, steps))
    keys = [k for micro in sampler for k in micro]
    done = {int(i) for step in per_rank[-1][: min(skip, steps)] for part in step for i in part}
    later = [int(i) for step in per_rank[-1][min(skip, steps) :] for part in step for i in part]
    assert [i for _, i in keys] == later and all(e == epoch for e, _ in keys)
    assert len(sampler) == (steps - min(skip, steps)) * accum
    if not extra:  # one pass: a sample of a done step is never read again in the epoch
        assert not done & set(later)


def test_one_epoch_is_the_permutation_the_trainer_always_drew():
    """Same seed, same epoch: the same order as ``randperm(seed * 1_000_003 + epoch)``."""
    sampler = EpochBatches(1000, 128, 3)
    expected = torch.randperm(1000, generator=torch.Generator().manual_seed(3 * 1_000_003 + 2))
    assert torch.equal(sampler.order(2), expected) and sampler.steps == 8
    assert (
        EpochBatches.full_pass(1025, 128) == 9 and EpochBatches.full_pass(1025, 128, world=2) == 8
    )  # 1 left: not for 2
    long = EpochBatches(10, 4, 0, steps=7)  # 28 samples from a set of 10: three permutations
    order = long.order(0)
    assert len(order) == 30 and all(sorted(order[k : k + 10].tolist()) == list(range(10)) for k in (0, 10, 20))


class Recorded(torch.utils.data.Dataset):
    """A plug-in dataset that records each index it is asked for (in this process)."""

    def __init__(self, n=40, shape=(2, 3)):
        self.n, self.shape, self.read = n, shape, []

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        self.read.append(i)
        return torch.full(self.shape, float(i)), i % 4


def test_training_reads_only_this_ranks_samples_and_skips_done_steps_unread():
    dataset = Recorded(40)
    source = DatasetSource(dataset, "rec", "train")
    sampler = EpochBatches(40, 8, 0, steps=5, rank=1, world=2)
    loader = train_loader(source, sampler, workers=0, pin=False, seed=0)
    dataset.read.clear()  # the first sample was read once for the shapes
    sampler.set_epoch(1, skip=2)
    batches = list(iterate(loader, source, "rec"))
    mine = [int(i) for step in list(sampler.shares(1))[2:] for part in step for i in part]
    assert dataset.read == mine and len(batches) == 3
    assert [b.index for b in batches] == [tuple(mine[k : k + 4]) for k in (0, 4, 8)]
    assert torch.equal(batches[0].inputs[0][:, 0, 0], torch.tensor(mine[:4], dtype=torch.float32))
    assert batches[0].labels.tolist() == [i % 4 for i in mine[:4]]


def _image_folder(root, count=12):
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(count):
        folder = root / f"c{i % 3}"
        folder.mkdir(parents=True, exist_ok=True)
        size = (20 + 3 * i, 16 + 2 * i)
        Image.fromarray(rng.integers(0, 255, (*size[::-1], 3), np.uint8)).save(folder / f"{i}.jpg")
    return root


def test_augmented_batches_are_the_same_whatever_the_worker_count(tmp_path):
    config = DataConfig(image_size=8, augment=True)
    source = open_data(str(_image_folder(tmp_path / "imgs")), "train", config, train=True)
    runs = []
    for workers in (0, 1, 2):
        sampler = EpochBatches(len(source), 4, 5, steps=3)
        loader = train_loader(source, sampler, workers=workers, pin=False, seed=5)
        epochs = []
        for epoch in (0, 1):
            sampler.set_epoch(epoch)
            epochs.append(torch.cat([b.inputs[0] for b in iterate(loader, source, "imgs")]))
        runs.append(epochs)
        del loader
    for epochs in runs[1:]:
        assert all(torch.equal(a, b) for a, b in zip(runs[0], epochs))
    assert not torch.equal(runs[0][0], runs[0][1])  # another epoch, other crops


class Misshapen(Recorded):
    def __getitem__(self, i):
        return (torch.zeros(3, 3) if i == 13 else torch.zeros(self.shape)), 0


@pytest.mark.parametrize("workers", [0, 2])
def test_a_bad_sample_in_the_middle_is_one_line_naming_it(workers):
    source = DatasetSource(Misshapen(40), "mis", "train")
    loader = eval_loader(source, 8, workers)
    with pytest.raises(
        InputError,
        match=r"^data 'mis': item 13 has shape \[3, 3\] \(float32\) but samples must be \[2, 3\] \(float\); give every sample that shape$",
    ):
        list(iterate(loader, source, "the data"))


class Raising(Recorded):
    def __getitem__(self, i):
        if i == 21:
            raise KeyError("missing row")
        return super().__getitem__(i)


@pytest.mark.parametrize("workers", [0, 2])
def test_a_dataset_that_raises_is_one_line(workers):
    source = DatasetSource(Raising(40), "raise", "train")
    with pytest.raises(InputError, match=r"^data 'raise': dataset item 21 raised KeyError: 'missing row'$"):
        list(read_chunks(source, 8, workers))


class Killer(Recorded):
    def __getitem__(self, i):
        if i == 30 and torch.utils.data.get_worker_info() is not None:
            os.kill(os.getpid(), signal.SIGKILL)
        return super().__getitem__(i)


def test_a_worker_that_dies_is_one_line():
    source = DatasetSource(Killer(40), "kill", "train")
    with pytest.raises(
        InputError,
        match=r"^reading the data failed: DataLoader worker \(pid.*; set data.workers: 0 to read it in this process$",
    ):
        list(read_chunks(source, 8, workers=1))


def test_reading_items_reads_those_alone(tmp_path):
    dataset = Recorded(1000)
    source = DatasetSource(dataset, "rec", "train")
    dataset.read.clear()
    picked = read_items(source, np.array([500, 3, 999]), workers=0)
    assert dataset.read == [500, 3, 999] and picked.inputs["x"][:, 0, 0].tolist() == [500.0, 3.0, 999.0]
    arrays = ArrayData({"x": np.arange(10.0)[:, None]}, np.arange(10), "a")
    assert read_items(arrays, np.array([7, 2])).inputs["x"].ravel().tolist() == [7.0, 2.0]


class Counting(torch.utils.data.IterableDataset):
    def __init__(self, n):
        self.n = n

    def __iter__(self):
        for i in range(self.n):
            yield {"ids": np.full(3, i, np.int64)}, i % 2


def test_a_stream_is_cut_into_global_batches_shared_by_ranks():
    stream = Stream(Counting(100), "count", "train", ("ids",))
    seen = []
    for rank in (0, 1):
        loader = stream_loader(stream, 10, steps=3, rank=rank, world=2, accum=1, skip=1, workers=0, pin=False, seed=0)
        seen.append([b.index for b in iterate(loader, stream, "count")])
    assert seen[0] == [(10, 12, 14, 16, 18), (20, 22, 24, 26, 28)]  # step 0 was done: read, not returned
    assert seen[1] == [(11, 13, 15, 17, 19), (21, 23, 25, 27, 29)]
    loader = stream_loader(stream, 10, steps=3, rank=0, world=1, accum=1, skip=0, workers=2, pin=False, seed=0)
    batches = list(iterate(loader, stream, "count"))
    assert [b.index[0] for b in batches] == [0, 10, 20]  # two workers, still in order
    assert batches[1].inputs[0].dtype == torch.int64 and batches[1].inputs[0][0].tolist() == [10, 10, 10]
    whole = list(iterate(eval_loader(stream, 32, 0), stream, "count"))
    assert [len(b) for b in whole] == [32, 32, 32, 4]
    short = stream_loader(stream, 40, steps=3, rank=0, world=1, accum=1, skip=0, workers=0, pin=False, seed=0)
    with pytest.raises(
        InputError,
        match=r"the stream ended after 100 samples, but an epoch of 3 steps of 40 needs 120; lower steps_per_epoch",
    ):
        list(iterate(short, stream, "count"))


class Rows(torch.utils.data.Dataset):
    """Items as a Hugging Face dataset gives them: one dict per row, the label under "label"."""

    def __len__(self):
        return 6

    def __getitem__(self, i):
        return {"input_ids": np.full(4, i, np.int64), "attention_mask": np.ones(4, np.int64), "label": i % 2}


def test_dict_rows_with_a_label_key_are_samples_of_named_inputs():
    source = DatasetSource(Rows(), "rows", "train")
    assert source.names == ("input_ids", "attention_mask")
    batch = next(iterate(eval_loader(source, 4, 0), source, "rows"))
    assert [t.dtype for t in batch.inputs] == [torch.int64, torch.int64]
    assert batch.inputs[0][:, 0].tolist() == [0, 1, 2, 3] and batch.labels.tolist() == [0, 1, 0, 1]
    chunk = next(read_chunks(source, 6))
    assert list(chunk.inputs) == ["input_ids", "attention_mask"] and chunk.labels.tolist() == [0, 1, 0, 1, 0, 1]

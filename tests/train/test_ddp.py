"""Two gloo processes on CPU: DistributedDataParallel fine-tuning keeps ranks (and masks) identical."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import nmdeploy
from nmdeploy.train import TrainConfig, fit
from tests.sparsity.demo import DemoNet, make_task
from tests.train.test_streaming import Logged


def _worker(rank: int, world: int, init: str, folder: str) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        torch.manual_seed(rank)  # different starting weights: DDP must take rank 0's
        x, y, xt, yt = make_task(0, train=256, test=128)
        model = DemoNet()
        sp = nmdeploy.sparsify(model, "2:4", method="maxq", start_epoch=0, end_epoch=1)
        result = fit(model, (x, y), (xt, yt), TrainConfig(epochs=3, batch_size=64), sp, f"{folder}/ckpt.pt")
        losses = [m.train_loss for m in result.history]
        torch.save({"state": model.state_dict(), "losses": losses}, f"{folder}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_process_ddp_keeps_ranks_identical(tmp_path):
    init = f"file://{tmp_path / 'rendezvous'}"
    mp.spawn(_worker, args=(2, init, str(tmp_path)), nprocs=2, join=True)
    a, b = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert a["state"].keys() == b["state"].keys()
    masks = [k for k in a["state"] if "mask" in k]
    assert masks, list(a["state"])[:10]
    for key in a["state"]:
        assert torch.equal(a["state"][key], b["state"][key]), key
    assert a["losses"][-1] < a["losses"][0] and b["losses"][-1] < b["losses"][0]  # both halves learn
    assert (tmp_path / "ckpt.pt").is_file()


def _shard_worker(rank: int, world: int, init: str, folder: str) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        x, y, xt, yt = make_task(0, train=200, test=64)
        torch.manual_seed(0)
        model = DemoNet()
        train = Logged(x, y)
        epochs = []

        def mark(metrics):
            epochs.append(list(train.read))
            train.read.clear()

        fit(model, train, (xt, yt), TrainConfig(epochs=2, batch_size=40), on_epoch=mark, workers=0)
        torch.save({"epochs": epochs}, f"{folder}/read{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_under_torchrun_each_rank_reads_only_its_shard(tmp_path):
    """Disjoint shards that together are exactly each epoch's samples; the global batch stays batch_size."""
    init = f"file://{tmp_path / 'rendezvous'}"
    mp.spawn(_shard_worker, args=(2, init, str(tmp_path)), nprocs=2, join=True)
    reads = [torch.load(tmp_path / f"read{r}.pt", weights_only=True)["epochs"] for r in (0, 1)]
    for epoch in range(2):
        first = [reads[r][epoch][1 if epoch == 0 else 0 :] for r in (0, 1)]  # epoch 1 starts with sample 0: the names
        assert not set(first[0]) & set(first[1])
        assert sorted(first[0] + first[1]) == list(range(200))
        order = torch.randperm(200, generator=torch.Generator().manual_seed(epoch)).tolist()
        assert first[0] == [i for step in range(5) for i in order[step * 40 : (step + 1) * 40][0::2]]

"""Training on data read on demand: worker invariance, resume without re-reading, bounded epochs,
gradient accumulation, the SR decay under a GradScaler, and every bad input as one line."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import nmdeploy
from nmdeploy.data import DataConfig, open_data
from nmdeploy.errors import InputError, TrainingInterrupted
from nmdeploy.train import TrainConfig, fit
from nmdeploy.train.checkpoint import load_training_state
from tests.sparsity.demo import DemoNet, make_task


class Logged(torch.utils.data.Dataset):
    """The demo task as a plug-in dataset that records every index it reads."""

    def __init__(self, x, y):
        self.x, self.y, self.read = x, y, []

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        self.read.append(int(i))
        return self.x[i], int(self.y[i])


def _equal(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def _net(method=None):
    torch.manual_seed(0)
    model = DemoNet()
    sp = nmdeploy.sparsify(model, "2:4", method=method, start_epoch=0, end_epoch=1) if method else None
    return model, sp


def test_a_dataset_trains_to_the_same_weights_as_the_tensors_it_holds():
    x, y, xt, yt = make_task(0, train=256, test=64)
    config = TrainConfig(epochs=2, batch_size=32)
    tensors, sp1 = _net("maxq")
    fit(tensors, (x, y), (xt, yt), config, sp1)
    dataset, sp2 = _net("maxq")
    result = fit(dataset, Logged(x, y), Logged(xt, yt), config, sp2, workers=0)
    _equal(tensors, dataset)
    assert result.history[-1].val_score > 0.3  # 10 classes: chance is 0.1


def _folder(root, count=48):
    from PIL import Image

    rng = np.random.default_rng(1)
    for i in range(count):
        label = i % 2
        folder = root / f"class{label}"
        folder.mkdir(parents=True, exist_ok=True)
        picture = rng.integers(0, 80, (12 + i % 5, 14 + i % 3, 3), np.uint8)
        picture[..., label] += 150  # red or green
        Image.fromarray(picture).save(folder / f"{i}.png")
    return root


class SmallCNN(nn.Sequential):
    def __init__(self):
        super().__init__(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))


def test_the_same_seed_gives_the_same_weights_whatever_the_worker_count(tmp_path):
    root = _folder(tmp_path / "imgs")
    data = DataConfig(image_size=8, augment=True)
    config = TrainConfig(epochs=2, batch_size=8, lr=0.05)
    models = []
    for workers in (0, 2):
        torch.manual_seed(0)
        model = SmallCNN()
        fit(model, open_data(str(root), "train", data, train=True), None, config, workers=workers)
        models.append(model)
    _equal(*models)


def test_resume_mid_epoch_skips_the_done_steps_without_reading_them(tmp_path):
    x, y, _, _ = make_task(0, train=256, test=64)
    config = TrainConfig(epochs=2, batch_size=32)
    reference, ref_sp = _net("srste")
    fit(reference, (x, y), None, config, ref_sp)
    model, sp = _net("srste")
    calls = {"n": 0}

    class Stop(Exception):
        pass

    def stop_after_11(done, total):
        calls["n"] += 1
        if calls["n"] == 11:  # 8 steps per epoch: three steps into the second
            import os
            import signal

            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(TrainingInterrupted, match=r"stopped by SIGTERM in epoch 2 after step 3 of 8"):
        fit(model, Logged(x, y), None, config, sp, tmp_path / "c.pt", on_step=stop_after_11, workers=0)
    model, sp = _net("srste")
    dataset = Logged(x, y)
    result = fit(model, dataset, None, config, sp, tmp_path / "c.pt", workers=0)
    order = torch.randperm(256, generator=torch.Generator().manual_seed(1)).tolist()  # epoch 2's order (seed 0)
    assert result.resumed_step == 3 and dataset.read[0] == 0  # sample 0 once: the input names
    assert dataset.read[1:] == order[3 * 32 :]  # nothing of the three done steps is read again
    _equal(reference, model)


def test_steps_per_epoch_bounds_an_epoch_on_a_large_set():
    x, y, _, _ = make_task(0, train=512, test=64)
    dataset = Logged(x, y)
    model, _ = _net()
    steps = []
    result = fit(
        model,
        dataset,
        None,
        TrainConfig(epochs=3, batch_size=16, steps_per_epoch=5),
        on_step=lambda done, total: steps.append((done, total)),
        workers=0,
    )
    assert steps[-1] == (15, 15) and len(dataset.read) == 1 + 3 * 5 * 16
    assert len(set(dataset.read[1:17])) == 16 and result.history[-1].lr == pytest.approx(0.0, abs=1e-12)
    assert len(set(dataset.read[1:])) > 5 * 16  # each epoch draws its own samples


class Linear(nn.Sequential):
    def __init__(self):
        super().__init__(nn.Flatten(), nn.Linear(3 * 8 * 8, 16), nn.ReLU(), nn.Linear(16, 10))


@pytest.mark.parametrize("method", [None, "srste", "maxq"])
def test_gradient_accumulation_gives_the_update_of_the_whole_batch(method):
    """k micro-batches per step: the same weights as one batch (no batch norm), the SR decay added once."""
    x, y, _, _ = make_task(0, train=192, test=32)
    models = []
    for accum in (1, 4):
        torch.manual_seed(0)
        model = Linear()
        sp = nmdeploy.sparsify(model, "2:4", method=method, start_epoch=0, end_epoch=1, exclude=()) if method else None
        fit(model, (x, y), None, TrainConfig(epochs=2, batch_size=32, grad_accum=accum, weight_decay=0.0), sp)
        models.append(model)
    for key, value in models[0].state_dict().items():
        torch.testing.assert_close(models[1].state_dict()[key], value, rtol=1e-5, atol=1e-6)


def sr_decay_states(method: str, device: str) -> list[dict[str, torch.Tensor]]:
    """Three SGD steps of a 2:4 model, in fp32 and under a GradScaler (SR decay deferred), on ``device``:
    the two final states (the GPU twin calls this with "cuda")."""
    x, y, _, _ = make_task(0, train=64, test=8)
    x, y = x.to(device), y.to(device)
    states = []
    for scaled in (False, True):
        torch.manual_seed(0)
        model = Linear().to(device)
        sp = nmdeploy.sparsify(model, "2:4", method=method, end_epoch=1, exclude=(), options={"decay": 0.05})
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        scaler = torch.amp.GradScaler(device, init_scale=2.0**14) if scaled else None
        if scaled:
            sp.defer_decay()
        for step in range(3):
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(x[step * 16 : (step + 1) * 16]), y[step * 16 : (step + 1) * 16])
            if scaler is None:
                loss.backward()
                optimizer.step()
            else:
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
                sp.apply_decay()
                scaler.step(optimizer)
                scaler.update()
        states.append({k: v.clone() for k, v in model.state_dict().items()})
    return states


@pytest.mark.parametrize("method", ["srste", "maxq"])
def test_the_sr_decay_under_a_grad_scaler_is_the_fp32_update(method):
    """Deferred, the SR term is added after unscaling: the step equals the one without a scaler, bit for bit."""
    fp32, scaled = sr_decay_states(method, "cpu")
    for key in fp32:
        assert torch.equal(fp32[key], scaled[key]), key


def test_without_deferral_the_scaler_weakens_the_decay():
    """What the deferral fixes: in backward, the SR term is not scaled and so shrinks by the scale."""
    x, y, _, _ = make_task(0, train=16, test=8)
    grads = []
    for scale in (1.0, 2.0**10):
        torch.manual_seed(0)
        model = Linear()
        nmdeploy.sparsify(model, "2:4", method="srste", exclude=(), options={"decay": 0.5})
        loss = nn.functional.cross_entropy(model(x), y) * scale
        loss.backward()
        grads.append(model[1].parametrizations.weight.original.grad / scale)
    assert not torch.allclose(grads[0], grads[1])


class BadLabel(Logged):
    def __getitem__(self, i):
        sample, label = super().__getitem__(i)
        return sample, (12 if i == 77 else label)


class BadShape(Logged):
    def __getitem__(self, i):
        sample, label = super().__getitem__(i)
        return (sample[:, :4] if i == 150 else sample), label


def test_bad_samples_mid_epoch_are_one_line_and_keep_the_last_checkpoint(tmp_path):
    x, y, _, _ = make_task(0, train=256, test=64)
    config = TrainConfig(epochs=2, batch_size=32)

    def run(dataset, path):
        model, sp = _net("maxq")
        return fit(model, dataset, None, config, sp, path)

    with pytest.raises(
        InputError,
        match=r"^training data 'training data': item 77 has label 12 but the model has 10 outputs; give labels 0\.\.9 or a model with more outputs$",
    ):
        run(BadLabel(x, y), tmp_path / "a.pt")
    with pytest.raises(
        InputError,
        match=r"^data 'training data': item 150 has shape \[3, 4, 8\] \(float32\) but samples must be \[3, 8, 8\] \(float\); give every sample that shape$",
    ):
        run(BadShape(x, y), tmp_path / "b.pt")
    with pytest.raises(
        InputError,
        match=r"the training data 'training data' has 16 samples, fewer than one batch of batch_size = 32; lower batch_size or give more data",
    ):
        run(Logged(x[:16], y[:16]), tmp_path / "c.pt")


def test_a_bad_sample_in_the_second_epoch_keeps_the_first_epochs_checkpoint(tmp_path):
    x, y, _, _ = make_task(0, train=128, test=32)

    class LaterBad(Logged):
        def __getitem__(self, i):
            sample, label = super().__getitem__(i)
            return sample, (19 if len(self.read) > 129 else label)  # fine for the whole first epoch

    model, sp = _net("maxq")
    with pytest.raises(InputError, match=r"has label 19 but the model has 10 outputs"):
        fit(model, LaterBad(x, y), None, TrainConfig(epochs=2, batch_size=32), sp, tmp_path / "k.pt")
    state = load_training_state(tmp_path / "k.pt")
    assert state["epoch"] == 1 and state["step"] == 0


class Stream(torch.utils.data.IterableDataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __iter__(self):
        for i in range(len(self.y)):
            yield self.x[i], int(self.y[i])


def test_a_stream_trains_with_steps_per_epoch_and_needs_them():
    x, y, xt, yt = make_task(0, train=256, test=64)
    model, _ = _net()
    result = fit(model, Stream(x, y), Stream(xt, yt), TrainConfig(epochs=2, batch_size=32, steps_per_epoch=8))
    assert len(result.history) == 2 and result.history[-1].val_score > 0.25
    with pytest.raises(
        InputError, match=r"the training data 'training data' is a stream with no length; set steps_per_epoch"
    ):
        fit(model, Stream(x, y), None, TrainConfig(epochs=1, batch_size=32))

"""Training habits of a real GPU, on a real GPU (skipped elsewhere): autocast, the GradScaler and
the SR decay, channels-last, pinned memory and workers feeding CUDA."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import nmdeploy
from nmdeploy.data import ArrayData
from nmdeploy.data.loader import EpochBatches, iterate, train_loader
from nmdeploy.train import TrainConfig, fit
from nmdeploy.train.checkpoint import load_training_state
from tests.sparsity.demo import DemoNet, make_task
from tests.train.test_streaming import sr_decay_states

pytestmark = pytest.mark.gpu
CUDA = torch.device("cuda")


def _model(method="maxq"):
    torch.manual_seed(0)
    model = DemoNet().to(CUDA)
    sp = nmdeploy.sparsify(model, "2:4", method=method, start_epoch=0, end_epoch=1)
    return model, sp


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_autocast_trains_in_its_dtype_and_learns(amp):
    x, y, xt, yt = make_task(0, train=1024, test=256)
    model, sp = _model()
    seen = []
    model.conv1[0].register_forward_hook(lambda m, a, out: seen.append(out.dtype))
    result = fit(model, (x, y), (xt, yt), TrainConfig(epochs=3, batch_size=64, amp=amp), sp)
    assert seen[0] == (torch.bfloat16 if amp == "bf16" else torch.float16)
    assert result.history[-1].val_score > 0.6 and result.history[-1].train_loss < result.history[0].train_loss
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize("method", ["srste", "maxq"])
def test_the_sr_decay_under_a_cuda_grad_scaler_is_the_fp32_update(method):
    """A power-of-two loss scale is exact: deferred, the SR term gives the unscaled update bit for bit."""
    fp32, scaled = sr_decay_states(method, "cuda")
    for key in fp32:
        assert torch.equal(fp32[key], scaled[key]), key


def test_fp16_resumes_with_its_scaler_state(tmp_path):
    x, y, _, _ = make_task(0, train=512, test=64)
    model, sp = _model()
    config = TrainConfig(epochs=2, batch_size=64, amp="fp16")
    fit(model, (x, y), None, config, sp, tmp_path / "c.pt", on_epoch=lambda m: None)
    state = load_training_state(tmp_path / "c.pt")
    assert state["scaler"] is not None and state["scaler"]["scale"] > 0


def test_channels_last_reaches_the_model_and_its_inputs():
    x, y, _, _ = make_task(0, train=256, test=64)
    model, sp = _model()
    layouts = []
    model.stem.register_forward_pre_hook(
        lambda m, a: layouts.append(a[0].is_contiguous(memory_format=torch.channels_last))
    )
    fit(model, (x, y), None, TrainConfig(epochs=1, batch_size=64, channels_last=True), sp)
    assert layouts and all(layouts)
    weight = model.conv1[0].parametrizations.weight.original
    assert weight.is_contiguous(memory_format=torch.channels_last)


def test_batches_come_pinned_from_workers_and_train_on_cuda():
    x, y, xt, yt = make_task(0, train=512, test=128)
    source = ArrayData({"x": x.numpy()}, y.numpy(), "demo")
    sampler = EpochBatches(len(source), 64, 0)
    loader = train_loader(source, sampler, workers=2, pin=True, seed=0)
    batch = next(iterate(loader, source, "demo"))
    assert batch.inputs[0].is_pinned() and batch.labels.is_pinned()
    model, sp = _model()
    result = fit(model, source, (xt, yt), TrainConfig(epochs=2, batch_size=64), sp, workers=2)
    assert result.history[-1].val_score > 0.5
    assert np.isfinite(result.history[-1].train_loss)


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_distillation_moves_the_teacher_to_the_students_device_and_layout(amp):
    from nmdeploy.train import Distill

    x, y, xt, yt = make_task(0, train=1024, test=256)
    torch.manual_seed(0)
    teacher = DemoNet()  # on the CPU: fit puts it beside the student
    fit(teacher, (x, y), None, TrainConfig(epochs=2, batch_size=64))
    model, sp = _model("srste")
    config = TrainConfig(epochs=2, batch_size=64, amp=amp, channels_last=True)
    result = fit(model, (x, y), (xt, yt), config, sp, teacher=teacher, distill=Distill(0.5, 4.0))
    assert next(teacher.parameters()).device.type == "cuda" and not teacher.training
    assert teacher.conv1[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert result.history[-1].val_score > 0.5 and all(torch.isfinite(p).all() for p in model.parameters())


def test_channel_permutation_on_the_gpu_keeps_the_function():
    from nmdeploy.examples.fashion_mnist.model import FashionResNet
    from nmdeploy.sparsity import permute_channels, select_layers

    torch.manual_seed(0)
    model = FashionResNet().to(CUDA).eval()
    x = torch.randn(8, 1, 28, 28, device=CUDA)
    with torch.no_grad():
        before = model(x)
    sp = nmdeploy.sparsify(model, "2:4", "asp", permute=True, example_inputs=x.cpu())
    assert len(sp.permutation.permuted) == 3
    torch.manual_seed(0)
    reference = FashionResNet().to(CUDA).eval()  # the same weights, permuted with no mask after
    layers = [(t.name, t.module.weight) for t in select_layers(reference, 4) if t.eligible]
    permute_channels(reference, layers, 2, 4, (x,))
    with torch.no_grad():
        assert float((reference(x) - before).abs().max()) <= 1e-4 * max(1.0, float(before.abs().max()))

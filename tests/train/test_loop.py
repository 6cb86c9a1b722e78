"""The fine-tune loop: it learns, resumes to bit-identical weights, and refuses mismatched state."""

from __future__ import annotations

import os
import signal

import pytest
import torch
from torch import nn

import nmdeploy
from nmdeploy.errors import ConfigError, InputError, TrainingInterrupted
from nmdeploy.train import TrainConfig, fit
from tests.sparsity.demo import DemoNet, make_task

CONFIG = TrainConfig(epochs=3, batch_size=64, lr=0.05, warmup_epochs=0.5, label_smoothing=0.1, grad_clip=5.0)


def _task():
    x, y, xt, yt = make_task(0, train=512, test=256)
    return (x, y), (xt, yt)


def _model(method: str | None):
    torch.manual_seed(0)
    model = DemoNet()
    sp = nmdeploy.sparsify(model, "2:4", method=method, start_epoch=0, end_epoch=2) if method else None
    return model, sp


def test_fit_learns_and_reports_each_epoch():
    train, val = _task()
    model, _ = _model(None)
    seen = []
    result = fit(model, train, val, CONFIG, on_epoch=seen.append)
    assert [m.epoch for m in result.history] == [1, 2, 3] and seen == list(result.history)
    assert result.history[-1].val_score > 0.5 and result.history[-1].train_loss < result.history[0].train_loss
    assert result.history[-1].lr == pytest.approx(0.0, abs=1e-9)  # the cosine ends at 0


@pytest.mark.parametrize("method", [None, "maxq"])
def test_interrupted_then_resumed_equals_uninterrupted(tmp_path, method):
    train, val = _task()
    reference, ref_sp = _model(method)
    fit(reference, train, val, CONFIG, ref_sp, tmp_path / "a.pt")

    model, sp = _model(method)
    calls = {"n": 0}

    def stop_in_epoch_2(done, total):
        calls["n"] += 1
        if calls["n"] == total // CONFIG.epochs + 3:  # a few steps into the second epoch
            raise KeyboardInterrupt

    with pytest.raises(
        TrainingInterrupted,
        match=r"interrupted in epoch 2; 1 completed epoch\(s\) are saved in .*b.pt: run the same command again to resume",
    ):
        fit(model, train, val, CONFIG, sp, tmp_path / "b.pt", on_step=stop_in_epoch_2)
    model, sp = _model(method)  # a fresh process: new model, same settings
    result = fit(model, train, val, CONFIG, sp, tmp_path / "b.pt")
    assert result.resumed_from == 1 and [m.epoch for m in result.history] == [1, 2, 3]
    ref_state, state = reference.state_dict(), model.state_dict()
    assert ref_state.keys() == state.keys()
    for key in ref_state:
        assert torch.equal(ref_state[key], state[key]), key
    if method:
        assert sp.state_dict() == ref_sp.state_dict()
    again = fit(model, train, val, CONFIG, sp, tmp_path / "b.pt")  # finished: nothing to redo
    assert again.resumed_from == 3 and len(again.history) == 3


@pytest.mark.parametrize(("signum", "code", "method"), [(signal.SIGTERM, 143, "maxq"), (signal.SIGINT, 130, "srste")])
def test_a_real_signal_mid_epoch_saves_that_step_and_resumes_bit_identically(tmp_path, signum, code, method):
    """The process signals itself in the middle of epoch 2: the step finishes, that point is saved, exit code 128+n."""
    train, val = _task()
    reference, ref_sp = _model(method)
    fit(reference, train, val, CONFIG, ref_sp, tmp_path / "a.pt")
    per_epoch = -(-len(train[1]) // CONFIG.batch_size)
    model, sp = _model(method)

    def signal_at_step_3_of_epoch_2(done, total):
        if done == per_epoch + 3:
            os.kill(os.getpid(), signum)  # delivered to the handler fit installed, as a kill or Ctrl-C would be

    previous = signal.getsignal(signum)
    with pytest.raises(TrainingInterrupted) as info:
        fit(model, train, val, CONFIG, sp, tmp_path / "b.pt", on_step=signal_at_step_3_of_epoch_2)
    assert signal.getsignal(signum) is previous  # the handlers are put back
    assert info.value.exit_code == code and info.value.resumable
    assert str(info.value) == (
        f"stopped by {signal.Signals(signum).name} in epoch 2 after step 3 of {per_epoch}; that point is "
        f"saved in {tmp_path / 'b.pt'}: run the same command again to resume"
    )
    saved = torch.load(tmp_path / "b.pt", weights_only=True)
    assert (saved["epoch"], saved["step"]) == (1, 3)
    model, sp = _model(method)  # a fresh process: new model, same settings
    steps = []
    result = fit(model, train, val, CONFIG, sp, tmp_path / "b.pt", on_step=lambda done, total: steps.append(done))
    assert (result.resumed_from, result.resumed_step) == (1, 3) and steps[0] == per_epoch + 4
    ref_state, state = reference.state_dict(), model.state_dict()
    assert ref_state.keys() == state.keys() and all(torch.equal(ref_state[k], state[k]) for k in ref_state)
    assert sp.state_dict() == ref_sp.state_dict()
    assert [m.epoch for m in result.history] == [1, 2, 3]


def test_a_signal_in_the_last_step_of_an_epoch_stops_after_saving_that_epoch(tmp_path):
    train, val = _task()
    per_epoch = -(-len(train[1]) // CONFIG.batch_size)
    model, sp = _model(None)

    def signal_at_the_end_of_epoch_1(done, total):
        if done == per_epoch:
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(
        TrainingInterrupted, match=r"^stopped by SIGTERM after epoch 1 of 3; it is saved in .*c.pt: run the same"
    ):
        fit(model, train, val, CONFIG, sp, tmp_path / "c.pt", on_step=signal_at_the_end_of_epoch_1)
    saved = torch.load(tmp_path / "c.pt", weights_only=True)
    assert (saved["epoch"], saved["step"]) == (1, 0)


def test_resume_refuses_other_settings_or_models(tmp_path):
    train, val = _task()
    model, _ = _model(None)
    fit(model, train, None, TrainConfig(epochs=1, batch_size=128), checkpoint=tmp_path / "c.pt")
    with pytest.raises(
        InputError, match=r"c.pt was written with other training settings \(lr: 0.05 there, 0.1 now\); delete it"
    ):
        fit(_model(None)[0], train, None, TrainConfig(epochs=1, batch_size=128, lr=0.1), checkpoint=tmp_path / "c.pt")
    with pytest.raises(InputError, match="c.pt was written without sparsity; use the same recipe to resume"):
        fit(
            *_model("srste")[:1],
            train,
            None,
            TrainConfig(epochs=1, batch_size=128),
            _model("srste")[1],
            tmp_path / "c.pt",
        )
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="junk.pt is not a readable nmdeploy training checkpoint"):
        fit(_model(None)[0], train, None, TrainConfig(epochs=1), checkpoint=tmp_path / "junk.pt")
    torch.save({"model": {}}, tmp_path / "other.pt")
    with pytest.raises(InputError, match=r"other.pt is not an nmdeploy training checkpoint \(nmdeploy.train/1\)"):
        fit(_model(None)[0], train, None, TrainConfig(epochs=1), checkpoint=tmp_path / "other.pt")


def test_adamw_without_decay_on_norms_and_biases():
    from nmdeploy.train.loop import _optimizer

    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    opt = _optimizer(model, TrainConfig(optimizer="adamw", weight_decay=0.01))
    assert isinstance(opt, torch.optim.AdamW)
    assert [len(g["params"]) for g in opt.param_groups] == [1, 3]
    assert [g["weight_decay"] for g in opt.param_groups] == [0.01, 0.0]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"epochs": -1}, r"train.epochs = -1 is invalid: an integer >= 0"),
        ({"batch_size": 2.5}, r"train.batch_size = 2.5 is invalid: an integer >= 1"),
        ({"lr": 0}, r"train.lr = 0 is invalid: a number > 0"),
        ({"optimizer": "lamb"}, r"train.optimizer = 'lamb' is invalid: use one of sgd, adamw"),
        ({"label_smoothing": 1.0}, r"train.label_smoothing = 1.0 is invalid: use a value in \[0, 1\)"),
        ({"warmup_epochs": 4}, r"train.warmup_epochs = 4 must be below train.epochs = 4"),
        ({"amp": "yes"}, r"train.amp = 'yes' is invalid: use one of bf16, fp16, off"),
        ({"grad_accum": 0}, r"train.grad_accum = 0 is invalid: an integer >= 1"),
        ({"steps_per_epoch": -1}, r"train.steps_per_epoch = -1 is invalid: an integer >= 0"),
        ({"grad_accum": 256}, r"train.grad_accum = 256 is invalid: at most train.batch_size = 128"),
        ({"grad_clip": -1}, r"train.grad_clip = -1 is invalid: a number >= 0"),
    ],
)
def test_config_rejects_bad_values(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**kwargs)


def test_empty_or_mismatched_data_is_refused():
    model, _ = _model(None)
    with pytest.raises(
        InputError, match="training data has 4 inputs and 3 targets; give as many targets as inputs, at least one"
    ):
        fit(model, (torch.zeros(4, 3, 8, 8), torch.zeros(3, dtype=torch.long)), None, TrainConfig(epochs=1))

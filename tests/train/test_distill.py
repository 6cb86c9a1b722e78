"""Distillation from the dense model: the exact loss, learning the teacher, resume, DDP, streams, bad input."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import nmdeploy
from nmdeploy.errors import ConfigError, InputError
from nmdeploy.train import Distill, TaskConfig, TrainConfig, fit
from nmdeploy.train.tasks import make_distill
from tests.sparsity.demo import DemoNet, make_task
from tests.train.test_streaming import Logged

CONFIG = TrainConfig(epochs=2, batch_size=64, lr=0.05)


def test_the_divergence_is_t_squared_kl_of_the_softened_distributions():
    student = torch.tensor([[1.0, 0.0, -1.0], [0.5, 0.5, 2.0]])
    teacher = torch.tensor([[2.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    t = 2.0
    expected = 0.0
    for s_row, t_row in zip(student.tolist(), teacher.tolist()):
        zs = sum(math.exp(v / t) for v in s_row)
        zt = sum(math.exp(v / t) for v in t_row)
        p = [math.exp(v / t) / zt for v in t_row]
        q = [math.exp(v / t) / zs for v in s_row]
        expected += sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))
    expected = expected / 2 * t * t  # batch mean, times T²
    d = Distill(weight=0.25, temperature=t)
    assert d.divergence(student, teacher).item() == pytest.approx(expected, rel=1e-6)
    assert d.divergence(teacher, teacher).item() == pytest.approx(0.0, abs=1e-7)
    label_loss = torch.tensor(3.0)
    assert d.mix(label_loss, student, teacher).item() == pytest.approx(0.75 * 3.0 + 0.25 * expected, rel=1e-6)
    assert Distill(1.0, t).mix(label_loss, student, teacher).item() == pytest.approx(expected, rel=1e-6)


def test_a_logit_shift_changes_nothing_and_token_logits_are_averaged_per_row():
    d = Distill(0.5, 3.0)
    s, t = torch.randn(4, 5), torch.randn(4, 5)
    assert d.divergence(s + 7.0, t - 2.0).item() == pytest.approx(d.divergence(s, t).item(), rel=1e-5)
    s3, t3 = torch.randn(2, 3, 5), torch.randn(2, 3, 5)  # [batch, tokens, classes]: one distribution per token
    assert d.divergence(s3, t3).item() == pytest.approx(d.divergence(s3.reshape(6, 5), t3.reshape(6, 5)).item())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"distill_temperature": 0.0}, r"task.distill_temperature = 0.0 is invalid: a number > 0, e.g. 4"),
        ({"distill_temperature": -1.0}, r"task.distill_temperature = -1.0 is invalid"),
        ({"distill_weight": 0.0}, r"task.distill_weight = 0.0 is invalid: a share in \(0, 1\]"),
        ({"distill_weight": 1.5}, r"task.distill_weight = 1.5 is invalid"),
        ({"distill": "yes"}, r"task.distill = 'yes' is invalid: use auto, true or false"),
    ],
)
def test_bad_distill_settings_name_the_key(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        TaskConfig(**kwargs)


def test_auto_distils_classification_only():
    assert make_distill(TaskConfig()) == Distill(0.5, 4.0)
    assert make_distill(TaskConfig(distill=False)) is None
    assert make_distill(TaskConfig(spec="distillation")) is None  # that task already learns from the dense model
    assert make_distill(TaskConfig(distill_weight=0.9, distill_temperature=2.0)) == Distill(0.9, 2.0)


def _dense_and_student(method: str | None = "srste"):
    x, y, xt, yt = make_task(0, train=512, test=256)
    torch.manual_seed(0)
    dense = DemoNet()
    fit(dense, (x, y), None, TrainConfig(epochs=2, batch_size=64, lr=0.1))
    student, sp = _student(dense, method) if method else (copy.deepcopy(dense), None)
    return (x, y), (xt, yt), dense, student, sp


def _student(dense, method: str = "srste"):
    """A fresh sparse copy of the dense model, as a new process would build it."""
    student = copy.deepcopy(dense)
    return student, nmdeploy.sparsify(student, "1:4", method=method, start_epoch=0, end_epoch=0)


def test_without_a_teacher_or_with_the_student_as_teacher_it_is_one_line():
    train, val, dense, student, sp = _dense_and_student()
    with pytest.raises(InputError, match=r"^task.distill needs the dense model as teacher, and none is available"):
        fit(student, train, val, CONFIG, sp, distill=Distill())
    with pytest.raises(InputError, match="the teacher is the model being trained"):
        fit(student, train, val, CONFIG, sp, teacher=student, distill=Distill())


def test_pure_distillation_learns_the_teacher_without_the_labels():
    """weight 1: the labels are shuffled noise, yet the student comes to agree with the teacher."""
    (x, y), val, dense, student, sp = _dense_and_student(None)
    noise = y[torch.randperm(len(y), generator=torch.Generator().manual_seed(1))]
    config = TrainConfig(epochs=8, batch_size=64, lr=0.1)

    def agreement(model) -> float:
        model.eval()
        with torch.no_grad():
            return float((model(x).argmax(1) == dense(x).argmax(1)).float().mean())

    torch.manual_seed(1)
    taught, control = DemoNet(), DemoNet()
    control.load_state_dict(taught.state_dict())
    before = {k: v.clone() for k, v in dense.state_dict().items()}
    fit(taught, (x, noise), None, config, teacher=dense, distill=Distill(1.0, 1.0))
    fit(control, (x, noise), None, config)  # the same run on the noise labels alone
    assert agreement(taught) > 0.75 and agreement(control) < 0.3
    assert not dense.training and all(torch.equal(v, dense.state_dict()[k]) for k, v in before.items())  # frozen


def test_distillation_changes_the_update_and_resumes_bit_identically(tmp_path):
    train, val, dense, student, sp = _dense_and_student()
    plain, plain_sp = _student(dense)
    fit(plain, train, val, CONFIG, plain_sp)
    reference, ref_sp = _student(dense)
    fit(reference, train, val, CONFIG, ref_sp, tmp_path / "a.pt", teacher=dense, distill=Distill(0.5, 4.0))
    differ = [k for k in plain.state_dict() if not torch.equal(plain.state_dict()[k], reference.state_dict()[k])]
    assert differ  # the teacher's logits moved the weights

    def stop_in_epoch_2(done, total):
        if done == total // 2 + 2:
            raise KeyboardInterrupt

    with pytest.raises(nmdeploy.errors.TrainingInterrupted):
        fit(
            student,
            train,
            val,
            CONFIG,
            sp,
            tmp_path / "b.pt",
            on_step=stop_in_epoch_2,
            teacher=dense,
            distill=Distill(),
        )
    resumed, resumed_sp = _student(dense)
    result = fit(resumed, train, val, CONFIG, resumed_sp, tmp_path / "b.pt", teacher=dense, distill=Distill())
    assert result.resumed_from == 1
    for key, value in reference.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key
    other, other_sp = _student(dense)
    with pytest.raises(
        InputError, match=r"b.pt was written with other training settings \(distill: .*temperature.: 4.0"
    ):
        fit(other, train, val, CONFIG, other_sp, tmp_path / "b.pt", teacher=dense, distill=Distill(0.5, 2.0))


def test_a_dataset_read_on_demand_distils_to_the_same_weights_as_its_tensors():
    (x, y), val, dense, student, sp = _dense_and_student()
    twin, twin_sp = _student(dense)
    fit(student, (x, y), val, CONFIG, sp, teacher=dense, distill=Distill(), workers=0)
    fit(twin, Logged(x, y), val, CONFIG, twin_sp, teacher=dense, distill=Distill(), workers=0)
    for key, value in student.state_dict().items():
        assert torch.equal(value, twin.state_dict()[key]), key


def _ddp_worker(rank: int, world: int, init: str, folder: str) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        x, y, xt, yt = make_task(0, train=256, test=128)
        torch.manual_seed(0)
        teacher = DemoNet()  # the same teacher on every rank, as each rank loads dense.pt
        torch.manual_seed(rank)  # different student weights: DDP must take rank 0's
        model = DemoNet()
        sp = nmdeploy.sparsify(model, "2:4", method="srste", start_epoch=0, end_epoch=0)
        fit(model, (x, y), (xt, yt), TrainConfig(epochs=2, batch_size=64), sp, teacher=teacher, distill=Distill())
        torch.save({"state": model.state_dict()}, f"{folder}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_process_ddp_distils_with_ranks_identical(tmp_path):
    mp.spawn(_ddp_worker, args=(2, f"file://{tmp_path / 'rendezvous'}", str(tmp_path)), nprocs=2, join=True)
    a, b = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True)["state"] for r in (0, 1))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

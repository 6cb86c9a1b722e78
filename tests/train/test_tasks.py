"""Tasks: classification and distillation losses and scores, multi-input models, plug-in tasks."""

from __future__ import annotations

import sys

import pytest
import torch
from torch import nn

from nmdeploy.errors import ConfigError, InputError
from nmdeploy.train import Classification, Distillation, TrainConfig, fit, load_task


def test_scores_and_losses():
    logits = torch.tensor([[2.0, 0.1], [0.3, 0.9], [1.0, 0.0]])
    labels = torch.tensor([0, 1, 1])
    c = Classification()
    assert c.score_sum(logits, labels) == 2.0 and c.metric == "top-1"
    assert torch.isclose(c.loss(logits, labels, 0.0), nn.functional.cross_entropy(logits, labels))
    d = Distillation(mse_weight=0.5)
    target = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    assert d.loss(target, target, 0.0).item() == pytest.approx(0.0, abs=1e-6)
    assert d.score_sum(target, target) == pytest.approx(2.0)
    opposite = -target
    assert d.score_sum(opposite, target) == pytest.approx(-2.0)
    assert d.loss(opposite, target, 0.0).item() == pytest.approx(2.0 + 0.5 * ((2 * target) ** 2).mean().item())
    with pytest.raises(InputError, match="the classification task needs integer labels"):
        c.targets(None, (logits,), None)
    with pytest.raises(ConfigError, match="the distillation task needs a teacher model"):
        d.targets(None, (logits,), None)


class TwoInputs(nn.Module):
    """Embeds token ids, masks them, pools: the shape of a sentence encoder, in miniature."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(50, 16)
        self.proj = nn.Linear(16, 8)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.embed(ids) * mask.unsqueeze(-1)
        return self.proj(h.sum(1) / mask.sum(1, keepdim=True).clamp(min=1))


def test_distillation_of_a_two_input_model_learns_the_teacher():
    torch.manual_seed(0)
    teacher, student = TwoInputs(), TwoInputs()
    ids = torch.randint(0, 50, (256, 12))
    mask = (torch.rand(256, 12) > 0.2).long()
    task = Distillation()
    targets = task.targets(teacher, (ids, mask), None)
    assert targets.shape == (256, 8)
    before = task.score_sum(student(ids, mask).detach(), targets) / 256
    result = fit(
        student,
        ((ids, mask), targets),
        ((ids, mask), targets),
        TrainConfig(epochs=6, batch_size=32, lr=0.05),
        task=task,
    )
    assert result.metric == "cosine" and result.history[-1].val_score > max(0.8, before + 0.5)


def test_plugin_tasks(tmp_path, monkeypatch):
    (tmp_path / "mytasks.py").write_text(
        "from nmdeploy.train.tasks import Classification\n"
        "def smooth():\n    return Classification(metric='top-1 (plug-in)')\n"
        "def broken():\n    return object()\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "mytasks", raising=False)
    assert load_task("mytasks:smooth").metric == "top-1 (plug-in)"
    assert load_task("classification") == Classification() and load_task("distillation") == Distillation()
    with pytest.raises(
        InputError, match=r"task spec 'mytasks:broken' returned object, which lacks targets, loss, score_sum"
    ):
        load_task("mytasks:broken")
    with pytest.raises(
        ConfigError,
        match=r"task 'regression' is neither a built-in \(classification, distillation\) nor package.module:callable",
    ):
        load_task("regression")

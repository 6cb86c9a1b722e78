"""Forward and backward rules of each method (docs/design/methods.md §2-§4), checked against closed forms."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import nmdeploy
from nmdeploy.errors import ConfigError
from nmdeploy.sparsity import is_nm_sparse, maxq_mask, nm_mask
from nmdeploy.sparsity.methods.base import SR_DECAY


def _linear(seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(16, 8)


def _weight(layer: nn.Module) -> torch.Tensor:
    return layer.parametrizations.weight.original


def _task_gradient(layer: nn.Linear, x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """dL/dW_eff for L = sum(r * layer(x)) is r^T x, whatever the mask."""
    return r.t() @ x


@pytest.mark.parametrize("method, decay", [("srste", SR_DECAY), ("ste", 0.0), ("srste", 0.01)])
def test_srste_gradient_is_task_gradient_plus_decay_on_pruned(method, decay, device):
    layer = _linear().to(device)
    options = {"decay": decay} if method == "srste" else None
    nmdeploy.sparsify(layer, method=method, exclude=(), options=options)
    x, r = torch.randn(5, 16, device=device), torch.randn(5, 8, device=device)
    w = _weight(layer).detach().clone()
    (layer(x) * r).sum().backward()
    pruned = (~nm_mask(w, 2, 4)).to(w.dtype)
    expected = _task_gradient(layer, x, r) + decay * pruned * w
    torch.testing.assert_close(_weight(layer).grad, expected, rtol=1e-5, atol=1e-6)


def test_srste_forward_uses_the_hard_mask_of_the_current_weight():
    layer = _linear()
    nmdeploy.sparsify(layer, method="srste", exclude=())
    with torch.no_grad():
        _weight(layer).mul_(torch.linspace(0.5, 2, 16))  # change the weights: mask must follow
    w = _weight(layer).detach()
    torch.testing.assert_close(layer.weight, w * nm_mask(w, 2, 4))


def test_maxq_forward_and_gradient():
    layer = _linear()
    nmdeploy.sparsify(layer, method="maxq", exclude=(), start_epoch=0, end_epoch=0)
    x, r = torch.randn(5, 16), torch.randn(5, 8)
    w = _weight(layer).detach().clone()
    soft = maxq_mask(w, 2, 4)
    out = layer(x)
    torch.testing.assert_close(out, x @ (w * soft).t() + layer.bias)
    (out * r).sum().backward()
    expected = _task_gradient(layer, x, r) + SR_DECAY * (soft == 0).float() * w
    torch.testing.assert_close(_weight(layer).grad, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(layer.parametrizations.weight[0].mask, soft)  # stored for eval


def test_maxq_eval_uses_the_stored_mask_refreshed_once_when_leaving_training():
    layer = _linear()
    nmdeploy.sparsify(layer, method="maxq", exclude=(), start_epoch=0, end_epoch=0)
    layer(torch.randn(2, 16))
    layer.eval()
    w = _weight(layer).detach().clone()
    torch.testing.assert_close(layer.weight, w * maxq_mask(w, 2, 4))  # refreshed on train -> eval
    with torch.no_grad():
        _weight(layer).mul_(2)  # eval mode: no recomputation, the stored mask stays
    torch.testing.assert_close(layer.weight, 2 * w * maxq_mask(w, 2, 4))


def test_maxq_schedule_keeps_dense_blocks_until_end_epoch():
    layer = _linear()
    sp = nmdeploy.sparsify(layer, method="maxq", exclude=(), start_epoch=0, end_epoch=4)
    zero_share = []
    for epoch in range(6):
        sp.set_epoch(epoch)
        zero_share.append(float((layer.weight == 0).float().mean()))
    assert zero_share == [0.0, 0.125, 0.25, 0.375, 0.5, 0.5]
    assert sp.report().dense_fraction == 0.0


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_asp_pruned_weights_stay_exactly_zero(optimizer):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 4))
    initial = model[2].weight.detach().clone()
    nmdeploy.sparsify(model, method="asp")
    mask = nm_mask(initial, 2, 4)
    opt = (
        torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-2)
        if optimizer == "sgd"
        else torch.optim.AdamW(model.parameters(), lr=0.01)
    )
    for _ in range(5):
        opt.zero_grad()
        model(torch.randn(8, 16)).pow(2).mean().backward()
        opt.step()
    w = _weight(model[2])
    assert torch.all(w[~mask] == 0)
    assert torch.all(w[mask] != initial[mask])  # kept weights did train
    assert torch.equal(model[2].weight != 0, mask)


def test_dense_method_changes_nothing():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 16), nn.Linear(16, 16), nn.Linear(16, 4))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    sp = nmdeploy.sparsify(model, method="dense")
    assert sp.sparse_layers == ("1",)
    assert list(model.state_dict()) == list(before)
    assert not hasattr(model[1], "parametrizations")
    assert sp.report()["1"].sparsity == 0.0 and sp.report()["1"].sad is None


@pytest.mark.parametrize("method", ["maxq", "srste", "ste", "asp", "dense"])
def test_train_finalize_on_every_device(method, device):
    """The whole loop on the CPU and, where there is one, on a GPU: same code, no device branches."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(32 * 16, 32),
        nn.ReLU(),
        nn.Linear(32, 10),
    ).to(device)
    sp = nmdeploy.sparsify(model, method=method, start_epoch=0, end_epoch=2)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    x, y = torch.randn(16, 3, 4, 4, device=device), torch.randint(0, 10, (16,), device=device)
    for epoch in range(3):
        sp.set_epoch(epoch)
        for _ in range(3):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    model.eval()
    expected = model(x)
    nmdeploy.finalize(model)
    torch.testing.assert_close(model(x), expected)
    for name in sp.sparse_layers:
        w = model.get_submodule(name).weight
        assert w.device.type == device
        assert is_nm_sparse(w, 2, 4) is (method != "dense"), name


def test_maxq_rescale_keeps_row_norms_and_masks():
    """rescale=True: W * multipliers starts with the original row norms; masks and ranks unchanged."""
    from nmdeploy.sparsity.nm import maxq_parts

    torch.manual_seed(0)
    original = torch.randn(24, 32) * 0.05  # a transformer-scale Linear weight
    layer = torch.nn.Linear(32, 24)
    with torch.no_grad():
        layer.weight.copy_(original)
    nmdeploy.sparsify(layer, "2:4", "maxq", "linear", 0, 2, exclude=(), options={"rescale": True})
    stored = layer.parametrizations.weight.original.detach()
    scale = stored / original
    assert torch.allclose(scale, scale[:, :1].expand_as(scale), rtol=1e-5)  # one factor per output row
    kept_before, mult_before = maxq_parts(original, 2, 4, 0.0, 1e-2)
    kept_after, _ = maxq_parts(stored, 2, 4, 0.0, 1e-2)
    assert torch.equal(kept_before, kept_after)
    _, mult = maxq_parts(stored, 2, 4, 1.0, 1e-2)
    ratio = (stored * mult).norm(dim=1) / original.norm(dim=1)
    assert ratio.min() > 0.9 and ratio.max() < 1.05  # without rescale the rows grow by (original * mult_before)
    assert ((original * mult_before).norm(dim=1) / original.norm(dim=1)).min() > 1.3
    with pytest.raises(ConfigError, match="rescale='yes' is invalid: true or false"):
        nmdeploy.sparsify(torch.nn.Linear(8, 8), "2:4", "maxq", exclude=(), options={"rescale": "yes"})

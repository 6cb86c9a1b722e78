"""sparsify() / finalize() / Sparsifier: selection, reports, errors, checkpoints, folding."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import nmdeploy
from nmdeploy.errors import ConfigError, LayerSelectionError, PatternError, SparsityStateError
from nmdeploy.sparsity import NotAcceleratedWarning, is_nm_sparse, method_names


class Zoo(nn.Module):
    """One of every kind of layer the selector must classify."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 16)  # unsupported, first
        self.conv1d = nn.Conv1d(16, 32, 3, padding=1)  # eligible
        self.conv1x1 = nn.Conv1d(32, 32, 1, groups=2)  # eligible: 16 inputs per group
        self.depthwise = nn.Conv1d(32, 32, 3, padding=1, groups=32)  # depthwise
        self.odd = nn.Conv1d(32, 6, 1)  # eligible (6 outputs is fine)
        self.narrow = nn.Conv1d(6, 16, 1)  # not_divisible: 6 inputs
        self.attn = nn.MultiheadAttention(16, 2, batch_first=True)  # in_proj eligible, out_proj too
        self.deconv = nn.ConvTranspose1d(16, 16, 1)  # unsupported
        self.conv3d = nn.Conv3d(16, 16, (1, 3, 3), padding=(0, 1, 1))  # eligible
        self.head = nn.Linear(16, 10)  # excluded: last

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens).transpose(1, 2)
        x = self.narrow(self.odd(self.depthwise(self.conv1x1(self.conv1d(x)))))
        x, _ = self.attn(x.transpose(1, 2), x.transpose(1, 2), x.transpose(1, 2))
        x = self.deconv(x.transpose(1, 2))
        x = self.conv3d(x[:, :, None, :, None].expand(-1, -1, 1, -1, 3)).mean(dim=(2, 4))
        return self.head(x.mean(-1))


def test_every_layer_gets_the_right_reason():
    model = Zoo()
    sp = nmdeploy.sparsify(model, method="srste")
    reasons = {row.name: row.reason for row in sp.report()}
    assert reasons == {
        "embed": "unsupported_type",
        "conv1d": None,
        "conv1x1": None,
        "depthwise": "depthwise",
        "odd": None,
        "narrow": "not_divisible",
        "attn": None,
        "attn.out_proj": None,
        "deconv": "unsupported_type",
        "conv3d": None,
        "head": "excluded",
    }
    assert sp.report()["narrow"].detail == "input channels per group = 6 is not a multiple of m=4"
    assert sp.report()["head"].detail == "auto: last weighted layer stays dense"
    model(torch.randint(0, 10, (2, 5))).sum().backward()  # every layer type trains
    model.eval()
    with torch.no_grad():
        expected = model(torch.randint(0, 10, (2, 5)).fill_(3))
    nmdeploy.finalize(model)
    for name in ("conv1d", "conv1x1", "odd", "conv3d", "attn.out_proj"):
        assert is_nm_sparse(model.get_submodule(name).weight, 2, 4), name
    assert is_nm_sparse(model.attn.in_proj_weight, 2, 4)
    torch.testing.assert_close(model(torch.randint(0, 10, (2, 5)).fill_(3)), expected)


def test_grouped_conv_groups_stay_inside_each_group():
    conv = nn.Conv2d(16, 8, 3, groups=2)  # weight [8, 8, 3, 3]: each filter sees 8 inputs
    nmdeploy.sparsify(conv, method="asp", exclude=())
    w = conv.weight.detach()
    assert is_nm_sparse(w, 2, 4) and int((w != 0).sum()) == w.numel() // 2


def test_auto_exclude_include_and_patterns():
    model = nn.Sequential(nn.Linear(16, 16), nn.Linear(16, 16), nn.Linear(16, 16), nn.Linear(16, 4))
    assert nmdeploy.sparsify(model, method="ste").sparse_layers == ("1", "2")
    nmdeploy.finalize(model)
    assert nmdeploy.sparsify(model, method="ste", exclude=()).sparse_layers == ("0", "1", "2", "3")
    nmdeploy.finalize(model)
    sp = nmdeploy.sparsify(model, method="ste", include="[12]", exclude=("auto", "2"))
    assert sp.sparse_layers == ("1",)
    assert sp.report()["2"].detail == "matches exclude pattern '2'"
    nmdeploy.finalize(model)
    sp = nmdeploy.sparsify(model, method="ste", include=["1"], exclude=None)
    assert sp.report()["2"].detail == "matches no include pattern"


def test_pattern_that_matches_nothing_warns():
    model = nn.Sequential(nn.Linear(16, 16), nn.Linear(16, 16), nn.Linear(16, 4))
    with pytest.warns(UserWarning, match="exclude pattern 'lyer1.*' matches no weighted layer of the model"):
        nmdeploy.sparsify(model, exclude=("auto", "lyer1.*"))


def test_tied_weights_are_sparsified_once():
    model = nn.Sequential(nn.Linear(16, 16), nn.Linear(16, 16), nn.Linear(16, 16), nn.Linear(16, 4))
    model[2].weight = model[1].weight
    sp = nmdeploy.sparsify(model, method="srste")
    assert sp.sparse_layers == ("1",) and sp.report()["2"].reason == "shared"


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"pattern": "3:2"}, PatternError, 'pattern "3:2" is invalid: need 0 < n < m <= 32, e.g. "2:4"'),
        ({"pattern": "2:64"}, PatternError, 'pattern "2:64" is invalid: need 0 < n < m <= 32, e.g. "2:4"'),
        (
            {"method": "magic"},
            ConfigError,
            "unknown sparsity method 'magic'; choose one of: maxq, srste, ste, asp, dense",
        ),
        ({"schedule": "step"}, ConfigError, "unknown schedule 'step'; choose one of: linear, cubic, cos, exp"),
        (
            {"start_epoch": 5, "end_epoch": 2},
            ConfigError,
            "end_epoch=2 is before start_epoch=5: need start_epoch <= end_epoch",
        ),
        ({"start_epoch": -1}, ConfigError, "start_epoch=-1 is invalid: need an integer >= 0"),
        (
            {"options": {"lambda": 1}},
            ConfigError,
            "unknown key(s) 'lambda' in options of method 'maxq'; allowed: decay, tau, rescale",
        ),
        (
            {"method": "srste", "options": {"decay": -1}},
            ConfigError,
            "srste option decay=-1 is invalid: need a number >= 0, e.g. 2e-4",
        ),
        (
            {"method": "asp", "options": {"decay": 1}},
            ConfigError,
            "unknown key(s) 'decay' in options of method 'asp'; allowed: (none)",
        ),
        ({"exclude": 3}, ConfigError, "exclude=3 is invalid: pass a name pattern such as 'layer1.*' or a list of them"),
    ],
)
def test_bad_arguments_raise_one_line_errors(kwargs, error, message):
    model = nn.Sequential(nn.Linear(16, 16), nn.Linear(16, 16), nn.Linear(16, 4))
    with pytest.raises(error) as info:
        nmdeploy.sparsify(model, **kwargs)
    assert str(info.value) == message
    assert not any(hasattr(m, "parametrizations") for m in model.modules())  # nothing half-done


def test_no_eligible_layer_lists_every_layer_and_why():
    model = nn.Sequential(nn.Conv2d(3, 16, 3), nn.Conv2d(16, 16, 3, groups=16), nn.Flatten(), nn.Linear(6, 10))
    with pytest.raises(LayerSelectionError) as info:
        nmdeploy.sparsify(model)
    assert str(info.value) == (
        "no layer of the model can be made 2:4 sparse: "
        "0 Conv2d[16, 3, 3, 3]: excluded (auto: first weighted layer stays dense); "
        "1 Conv2d[16, 1, 3, 3]: depthwise (groups=16: one input channel per group, nothing to group); "
        "3 Linear[10, 6]: excluded (auto: last weighted layer stays dense); "
        "fix: pass exclude=() to include the first/last layer or change include/exclude or the pattern"
    )


def test_patterns_that_do_not_imply_2_4_warn():
    model = nn.Sequential(nn.Linear(16, 16), nn.Linear(16, 16), nn.Linear(16, 4))
    with pytest.warns(NotAcceleratedWarning, match="pattern 4:8 does not imply 2:4"):
        nmdeploy.sparsify(model, pattern="4:8", method="srste")
    nmdeploy.finalize(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        nmdeploy.sparsify(model, pattern="1:16", method="srste")


def test_sparsify_twice_is_refused():
    model = nn.Sequential(nn.Linear(16, 16), nn.Linear(16, 16), nn.Linear(16, 4))
    nmdeploy.sparsify(model)
    with pytest.raises(SparsityStateError, match=r"model is already sparsified \(layer '1'\); call nmdeploy.finalize"):
        nmdeploy.sparsify(model)


def test_existing_optimizer_keeps_training_the_same_parameters():
    model = nn.Sequential(nn.Linear(16, 16), nn.Linear(16, 16), nn.Linear(16, 4))
    before = model[1].weight
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    nmdeploy.sparsify(model, method="srste")
    assert model[1].parametrizations.weight.original is before
    model(torch.randn(4, 16)).sum().backward()
    opt.step()  # the optimizer created before sparsify() updates the masked layer's weight
    assert before.grad is not None
    nmdeploy.finalize(model)
    assert model[1].weight is before


# ---- checkpoints --------------------------------------------------------------------------


def _net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 16, 1),
        nn.Flatten(),
        nn.Linear(16 * 16, 10),
    )


def _train(model: nn.Module, steps: int) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        opt.zero_grad()
        model(torch.randn(8, 3, 4, 4, generator=gen)).logsumexp(1).mean().backward()
        opt.step()


@pytest.mark.parametrize("method", ["maxq", "srste", "ste", "asp"])
def test_checkpoint_round_trip_restores_identical_masks(method, tmp_path):
    a = _net(0)
    sp_a = nmdeploy.sparsify(a, method=method, start_epoch=0, end_epoch=4)
    sp_a.set_epoch(2)
    _train(a, 3)
    torch.save({"model": a.state_dict(), "sparsity": sp_a.state_dict()}, tmp_path / "ckpt.pt")

    b = _net(1)  # different initial weights: everything must come from the checkpoint
    sp_b = nmdeploy.sparsify(b, method=method, start_epoch=0, end_epoch=4)
    ckpt = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    b.load_state_dict(ckpt["model"])
    sp_b.load_state_dict(ckpt["sparsity"])
    assert sp_b.epoch == 2 and sp_b.dense_fraction == (0.5 if method == "maxq" else 0.0)
    for key, value in a.state_dict().items():
        assert torch.equal(b.state_dict()[key], value), key
    x = torch.randn(4, 3, 4, 4)
    torch.testing.assert_close(b(x), a(x), rtol=0, atol=0)  # training mode
    a.eval(), b.eval()
    torch.testing.assert_close(b(x), a(x), rtol=0, atol=0)


def test_sparsifier_state_from_other_settings_is_refused():
    a, b = _net(0), _net(0)
    state = nmdeploy.sparsify(a, method="srste").state_dict()
    sp = nmdeploy.sparsify(b, method="maxq")
    with pytest.raises(
        SparsityStateError, match=r"sparsifier state does not match this model: method 'srste' vs 'maxq'"
    ):
        sp.load_state_dict(state)


def test_training_is_deterministic():
    runs = []
    for _ in range(2):
        model = _net(0)
        nmdeploy.sparsify(model, method="maxq", start_epoch=0, end_epoch=0)
        _train(model, 3)
        runs.append(model.state_dict())
    for key in runs[0]:
        assert torch.equal(runs[0][key], runs[1][key]), key


# ---- finalize -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "method, pattern", [("maxq", "2:4"), ("srste", "2:4"), ("asp", "1:4"), ("ste", "2:8"), ("maxq", "1:16")]
)
def test_finalize_gives_exact_nm_and_the_eval_outputs(method, pattern):
    model = _net(0)
    if pattern == "1:16":
        model[4] = nn.Conv2d(32, 16, 1)  # 32 inputs: 1:16 groups fit
    sp = nmdeploy.sparsify(model, pattern=pattern, method=method, start_epoch=0, end_epoch=0)
    _train(model, 3)
    model.eval()
    x = torch.randn(4, 3, 4, 4)
    expected = model(x)
    n, m = map(int, pattern.split(":"))
    assert nmdeploy.finalize(model) is model
    assert not any(hasattr(mod, "parametrizations") for mod in model.modules())
    assert sorted(model.state_dict()) == sorted(_net(0).state_dict())  # plain keys again
    for name in sp.sparse_layers:
        w = model.get_submodule(name).weight
        assert is_nm_sparse(w, n, m) and int((w == 0).sum()) == w.numel() * (m - n) // m, name
    torch.testing.assert_close(model(x), expected, rtol=1e-6, atol=1e-6)


def test_finalize_mid_schedule_is_refused_and_changes_nothing():
    model = _net(0)
    sp = nmdeploy.sparsify(model, method="maxq", start_epoch=0, end_epoch=10)
    sp.set_epoch(5)
    with pytest.raises(SparsityStateError) as info:
        nmdeploy.finalize(model)
    assert str(info.value) == (
        "layer '2': cannot fold a MaxQ layer while 50% of its blocks are still dense; "
        "finish the schedule first (call sp.set_epoch(e) with e >= end_epoch)"
    )
    assert hasattr(model[2], "parametrizations") and hasattr(model[4], "parametrizations")
    sp.set_epoch(10)
    nmdeploy.finalize(model)
    assert is_nm_sparse(model[2].weight, 2, 4)


def test_report_counts_sad_since_the_last_epoch():
    model = _net(0)
    sp = nmdeploy.sparsify(model, method="ste", start_epoch=0, end_epoch=0)
    assert all(r.sad == 0 for r in sp.report() if r.eligible)
    _train(model, 20)
    rows = {r.name: r for r in sp.report()}
    assert rows["2"].sad > 0 and rows["2"].sad_fraction == rows["2"].sad / (32 * 16 * 9)
    assert rows["2"].sparsity == 0.5 and rows["0"].sad is None
    sp.set_epoch(1)
    assert sp.report()["2"].sad == 0
    text = str(sp.report())
    assert text.splitlines()[0] == "ste 2:4, epoch 1, dense blocks 0%: 2 of 4 weighted layers sparse"
    assert "excluded: auto: first weighted layer stays dense" in text


def test_method_names_are_the_contract():
    assert method_names() == ("maxq", "srste", "ste", "asp", "dense")


# ---- masks prepared in one batch at the start of the model's forward ----------------------


class SelfEditing(nn.Module):
    """Changes a layer's weight inside its own forward, after the pre-forward hook ran."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Linear(16, 16), nn.Linear(16, 16), nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            self.b.parametrizations.weight.original.mul_(torch.linspace(-1, 1, 16))
        return self.c(self.b(self.a(x)))


@pytest.mark.parametrize("method", ["srste", "maxq"])
def test_prepared_masks_are_never_stale(method):
    torch.manual_seed(0)
    model = SelfEditing()
    nmdeploy.sparsify(model, method=method, exclude=(), start_epoch=0, end_epoch=0)
    x = torch.randn(3, 16)

    def expected() -> torch.Tensor:
        h = x
        for layer in (model.a, model.b, model.c):
            w = layer.parametrizations.weight.original.detach()
            mask = nmdeploy.maxq_mask(w, 2, 4) if method == "maxq" else nmdeploy.nm_mask(w, 2, 4).float()
            h = nn.functional.linear(h, w * mask, layer.bias)
        return h

    out = model(x)  # b's weight changes after the batch was prepared: b must use the new one
    torch.testing.assert_close(out, expected())
    assert all(p._prepared is None for p in _nm_parametrizations(model))  # nothing outlives forward
    with torch.no_grad():  # an edit through .data bumps no version counter
        model.a.parametrizations.weight.original.data.mul_(-3)
        model.b.parametrizations.weight.original.data.copy_(torch.randn(16, 16))
    torch.testing.assert_close(model(x), expected())


def _nm_parametrizations(model: nn.Module) -> list:
    return [m.parametrizations.weight[0] for m in model.modules() if hasattr(m, "parametrizations")]


def _repeated_shapes_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.Conv2d(16, 16, 3, padding=1),
        nn.Conv2d(16, 16, 3, padding=1),
        nn.Conv2d(16, 16, 1),
        nn.Conv2d(16, 16, 1),
        nn.Flatten(),
        nn.Linear(16 * 16, 16),
        nn.Linear(16, 16),
        nn.Linear(16, 10),
    )


@pytest.mark.parametrize("make", [lambda: _net(0), _repeated_shapes_net], ids=["mixed", "repeated-shapes"])
@pytest.mark.parametrize("method", ["srste", "ste", "maxq"])
def test_whole_model_forward_equals_layer_by_layer(method, make):
    """The batched pre-forward path and the per-layer path agree: masks' zeros exactly, values
    to rounding (MaxQ multipliers from differently sized tensors may differ in the last bit)."""
    model = make()
    nmdeploy.sparsify(model, method=method, start_epoch=0, end_epoch=0)
    x = torch.randn(4, 3, 4, 4)
    out = model(x)
    out.sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    layer_by_layer = x
    for layer in model:  # calling the children directly skips the model's hooks
        layer_by_layer = layer(layer_by_layer)
    layer_by_layer.sum().backward()
    exact = method != "maxq"
    torch.testing.assert_close(out, layer_by_layer, rtol=0 if exact else 1e-5, atol=0 if exact else 1e-6)
    for got, expected in zip([p.grad for p in model.parameters()], grads):
        torch.testing.assert_close(got, expected, rtol=0 if exact else 1e-5, atol=0 if exact else 1e-6)


def test_finalize_removes_the_forward_hooks():
    model = _net(0)
    nmdeploy.sparsify(model, method="srste", start_epoch=0, end_epoch=0)
    assert len(model._forward_pre_hooks) == 1 and len(model._forward_hooks) == 1
    nmdeploy.finalize(model)
    assert len(model._forward_pre_hooks) == 0 and len(model._forward_hooks) == 0


def test_finalizing_a_deep_copy_leaves_the_original_working():
    """torch's remove_parametrizations edits a class that deep copies share; finalize must not."""
    import copy

    model = _net(0)
    nmdeploy.sparsify(model, method="maxq", start_epoch=0, end_epoch=0)
    x = torch.randn(2, 3, 4, 4)
    model.eval()
    expected = model(x)
    twin = nmdeploy.finalize(copy.deepcopy(model))
    torch.testing.assert_close(model(x), expected)  # the original still has its masks
    assert hasattr(model[2], "parametrizations") and not hasattr(twin[2], "parametrizations")
    torch.testing.assert_close(twin(x), expected, rtol=1e-5, atol=1e-6)
    nmdeploy.finalize(model)
    torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-6)


def test_a_null_decay_goes_by_pattern():
    """The build's sparsity.decay: null: λ 2e-3 where at least half the weights stay, 5e-3 below."""
    from nmdeploy.sparsity.config import SparsityConfig, pattern_decay

    assert [pattern_decay(p) for p in ("2:4", "4:8", "1:2", "1:4", "2:8", "1:16")] == [
        2e-3,
        2e-3,
        2e-3,
        5e-3,
        5e-3,
        5e-3,
    ]
    for method, pattern, want in (("maxq", "1:16", 5e-3), ("srste", "2:4", 2e-3)):
        model = torch.nn.Sequential(torch.nn.Linear(32, 32), torch.nn.Linear(32, 32), torch.nn.Linear(32, 4))
        config = SparsityConfig(pattern=pattern, method=method, decay=None, end_epoch=0)
        assert config.decay is None  # kept null, so a later pattern override still decides it
        sp = nmdeploy.sparsify(model, config=config)
        assert sp.options["decay"] == want
    assert SparsityConfig().method_options().decay == 2e-4  # the library's default stays the papers'


def test_a_null_end_epoch_is_resolved_before_sparsify():
    from nmdeploy.sparsity.config import SparsityConfig

    config = SparsityConfig(end_epoch=None)  # what a recipe holds by default
    with pytest.raises(ConfigError) as err:
        nmdeploy.sparsify(nn.Linear(16, 8), config=config)
    assert str(err.value).startswith("sparsity end_epoch is null, which only a recipe resolves")
    sp = nmdeploy.sparsify(
        nn.Sequential(nn.Linear(16, 16), nn.Linear(16, 16), nn.Linear(16, 8)), config=config.with_end_for(12)
    )
    assert (sp.start_epoch, sp.end_epoch) == (0, 3)

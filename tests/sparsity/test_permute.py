"""Channel permutation: the search keeps more magnitude, the model's function is unchanged, and every
layer it cannot carry back to a producer is named with the reason."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

import nmdeploy
from nmdeploy.errors import ConfigError, SparsityStateError
from nmdeploy.examples.fashion_mnist.model import FashionResNet
from nmdeploy.sparsity import SparsityConfig, find_permutation, kept_magnitude, nm_mask, permute_channels
from nmdeploy.sparsity.targets import select_layers


def _layers(model: nn.Module, m: int = 4) -> list[tuple[str, nn.Parameter]]:
    return [(t.name, getattr(t.module, t.param_name)) for t in select_layers(model, m) if t.eligible]


def _with_statistics(model: nn.Module) -> nn.Module:
    """BatchNorms with running statistics and affine parameters of their own, so a wrong reorder shows."""
    gen = torch.Generator().manual_seed(3)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            c = module.num_features
            module.running_mean.copy_(torch.randn(c, generator=gen))
            module.running_var.copy_(torch.rand(c, generator=gen) + 0.5)
            module.weight.data.copy_(torch.randn(c, generator=gen))
            module.bias.data.copy_(torch.randn(c, generator=gen))
    return model


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(64, 128)
        self.bn = nn.BatchNorm1d(128)
        self.fc2 = nn.Linear(128, 128)
        self.fc3 = nn.Linear(128, 64)
        self.out = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = nn.functional.gelu(self.bn(self.fc1(x.flatten(1))))
        h = nn.functional.dropout(torch.relu_(self.fc2(h)), 0.1, self.training) * 0.5
        return self.out(nn.functional.silu(self.fc3(h)))


def _check_function(model: nn.Module, x: torch.Tensor, m: int = 4, n: int = 2):
    model.eval()
    with torch.no_grad():
        before = model(x)
    report = permute_channels(model, _layers(model, m), n, m, (x,))
    with torch.no_grad():
        after = model(x)
    assert after.shape == before.shape
    assert float((after - before).abs().max()) <= 1e-5 * max(1.0, float(before.abs().max()))
    return report


def test_a_residual_cnn_computes_the_same_after_permutation_and_names_what_it_left():
    torch.manual_seed(0)
    model = _with_statistics(FashionResNet())
    report = _check_function(model, torch.randn(6, 1, 28, 28))
    assert report.permuted == ("blocks.0.conv2", "blocks.1.conv2", "blocks.2.conv2")
    # block 0's input is read by its conv1 and by the residual add; blocks 1 and 2 read theirs with two
    # sibling convs (conv1, shortcut), which could share one order, but the channels come from an add
    reasons = {"blocks.0.conv1": "its input is also read by another op (the producer's output is shared)"}
    reasons |= {f"blocks.{b}.{c}": "a residual add on the way" for b in (1, 2) for c in ("conv1", "shortcut.0")}
    for name, reason in reasons.items():
        assert report[name].reason == reason and report[name].kept_after == report[name].kept_before
    for name in report.permuted:
        row = report[name]
        assert row.producer == name.replace("conv2", "conv1") and row.gain > 0
        assert row.kept_after > row.kept_before


class Branches(nn.Module):
    """An Inception-style block: one conv's output read by three sibling convs, one through its own
    BatchNorm and ReLU, one kept dense; then a head that reads a concatenation."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 32, 3, padding=1)
        self.trunk = nn.Sequential(nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU())
        self.a = nn.Conv2d(64, 32, 1)
        self.bn_b = nn.BatchNorm2d(64)
        self.b = nn.Conv2d(64, 32, 3, padding=1)
        self.c = nn.Conv2d(64, 16, 1)  # excluded from the sparse layers: it follows the order, dense
        self.mix = nn.Conv2d(80, 32, 1)
        self.out = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.trunk(torch.relu(self.stem(x)))
        h = torch.cat([self.a(h), self.b(torch.relu(self.bn_b(h))), self.c(h)], 1)
        return self.out(self.mix(h).mean((2, 3)))


def test_sibling_layers_that_read_the_same_channels_share_one_order():
    torch.manual_seed(0)
    model = _with_statistics(Branches())
    # c dense; mix left out here so that the convs' output channels stay put (concatenations: below)
    layers = [(name, w) for name, w in _layers(model) if name not in ("c", "mix")]
    x = torch.randn(4, 3, 12, 12)
    model.eval()
    with torch.no_grad():
        before = model(x)
    a0, b0, c0 = (w.detach().clone() for w in (model.a.weight, model.b.weight, model.c.weight))
    report = permute_channels(model, layers, 2, 4, (x,))
    with torch.no_grad():
        after = model(x)
    assert float((after - before).abs().max()) <= 1e-5 * max(1.0, float(before.abs().max()))
    assert report.permuted == ("trunk.0", "a", "b")
    assert report["a"].producer == report["b"].producer == "trunk.0"
    # the dense sibling c followed the order, and a and b took exactly the same one
    order = (model.c.weight[:, :, 0, 0].T[:, None] == c0[:, :, 0, 0].T[None]).all(-1).float().argmax(1)
    assert sorted(order.tolist()) == list(range(64)) and order.tolist() != list(range(64))
    assert torch.equal(model.c.weight, c0[:, order])
    assert torch.equal(model.a.weight, a0[:, order]) and torch.equal(model.b.weight, b0[:, order])
    # searched on a and b together: their joint kept magnitude rises; each row reports its own share
    assert kept_magnitude([model.a.weight, model.b.weight], 2, 4) > kept_magnitude([a0, b0], 2, 4)
    for name, start in (("a", a0), ("b", b0)):
        row = report[name]
        assert row.kept_before == pytest.approx(kept_magnitude(start, 2, 4))
        assert row.kept_after == pytest.approx(kept_magnitude(getattr(model, name).weight, 2, 4))


def test_a_depthwise_conv_carries_the_order_to_the_layer_before_it():
    # MobileNet's inverted residual without the residual: expand 1x1, depthwise 3x3, project 1x1
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.Conv2d(16, 64, 1), nn.BatchNorm2d(64), nn.ReLU6(),
        nn.ZeroPad2d(1), nn.Conv2d(64, 64, 3, groups=64), nn.BatchNorm2d(64), nn.ReLU6(),  # "same" padding, TF-style
        nn.Conv2d(64, 32, 1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Conv2d(32, 32, 3, padding=1, groups=8),  # grouped, not depthwise: channels mix within groups
        nn.Conv2d(32, 32, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10),
    )  # fmt: skip
    torch.manual_seed(0)
    _with_statistics(model)
    report = _check_function(model, torch.randn(4, 3, 10, 10))
    # through the pad, the depthwise conv and the BatchNorms to the expand conv
    assert report["8"].permuted and report["8"].producer == "1"
    assert report["12"].reason == "made by a grouped convolution"
    assert "5" not in [row.layer for row in report]  # the depthwise conv itself is no N:M candidate


class Dense(nn.Module):
    """DenseNet-style: each conv reads the concatenation of everything before it."""

    def __init__(self, growth: int = 16, extra: int = 0) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 32, 3, padding=1)
        self.c1 = nn.Conv2d(32, growth, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(32 + growth)
        self.c2 = nn.Conv2d(32 + growth, growth + extra, 3, padding=1)
        self.c3 = nn.Conv2d(32 + 2 * growth + extra, 32, 1)
        self.out = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h0 = torch.relu(self.stem(x))
        h1 = torch.cat([h0, torch.relu(self.c1(h0))], 1)
        h2 = torch.cat([h1, self.c2(torch.relu(self.bn1(h1)))], dim=1)  # nested: h1 is a concatenation too
        return self.out(self.c3(h2).mean((2, 3)))


class Nested(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 32, 3, padding=1)
        self.p, self.q, self.r = nn.Conv2d(32, 16, 1), nn.Conv2d(32, 16, 3, padding=1), nn.Conv2d(32, 8, 1)
        self.mix = nn.Conv2d(40, 32, 1)
        self.out = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.stem(x))
        u = torch.cat([torch.cat([self.p(h), torch.relu(self.q(h))], 1), self.r(h)], 1)
        return self.out(self.mix(u).flatten(2).mean(-1))


def test_a_concatenation_takes_one_order_per_part():
    torch.manual_seed(0)
    # the Inception-style block: mix reads a, b and the dense c side by side
    report = _check_function(_with_statistics(Branches()), torch.randn(4, 3, 12, 12))
    assert report["mix"].permuted and report["mix"].producer == "a + b + c" and report["mix"].gain > 0
    report = _check_function(Nested(), torch.randn(2, 3, 8, 8))  # a concatenation inside a concatenation
    assert report["mix"].permuted and report["mix"].producer == "p + q + r"
    assert {report[name].producer for name in "pqr"} == {"stem"}  # and the three siblings share an order
    # DenseNet: every feature map is read again by each later block, so its parts are shared
    report = _check_function(_with_statistics(Dense()), torch.randn(3, 3, 8, 8))
    assert not report.permuted
    assert report["c3"].reason == (
        "a concatenation on the way, whose part 1: its input is also read by another op (the producer's output is shared)"
    )


def test_a_concatenation_that_splits_groups_is_left_alone():
    torch.manual_seed(0)
    model = Nested()
    # 16 + 14 and 10 channels: still 40 in all, but the parts would straddle groups of 4
    model.q, model.r = nn.Conv2d(32, 14, 3, padding=1), nn.Conv2d(32, 10, 1)
    report = _check_function(model, torch.randn(2, 3, 8, 8))
    assert report["mix"].reason == "a concatenation of 16 + 14 + 10 channels: each part must be a multiple of 4"
    assert report["mix"].kept_after == report["mix"].kept_before


def test_a_concatenation_part_that_cannot_be_carried_names_why():
    class Tail(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(3, 16, 3, padding=1)
            self.a, self.b = nn.Conv2d(16, 16, 3, padding=1), nn.Conv2d(16, 16, 1)
            self.mix = nn.Conv2d(32, 16, 1)
            self.out = nn.Linear(16, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.stem(x)
            u = torch.cat([self.a(h) + h, self.b(h)], 1)  # a residual add makes the first part
            return self.out(self.mix(u).mean((2, 3)))

    torch.manual_seed(0)
    report = _check_function(Tail(), torch.randn(2, 3, 8, 8))
    assert report["mix"].reason == "a concatenation on the way, whose part 1: a residual add on the way"


def test_a_sibling_of_another_kind_blocks_the_permutation():
    class TwoKinds(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(16, 32)
            self.left = nn.Linear(32, 32)
            self.right = nn.Linear(32, 32)
            self.out = nn.Linear(32, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = torch.relu(self.fc(x))
            return self.out(self.left(h) + h @ self.right.weight.T)  # right's weight read by a matmul

    torch.manual_seed(0)
    model = TwoKinds()
    report = _check_function(model, torch.randn(8, 16))
    shared = "its input is also read by another op (the producer's output is shared)"
    assert report["left"].reason == shared


def test_an_mlp_with_batchnorm_and_in_place_activations_computes_the_same():
    torch.manual_seed(0)
    model = _with_statistics(MLP())
    report = _check_function(model, torch.randn(16, 1, 8, 8))
    assert report.permuted == ("fc2", "fc3")  # fc1 reads the input, out is kept dense ("auto")
    assert report["fc2"].producer == "fc1" and report["fc3"].producer == "fc2"


@pytest.mark.parametrize("pattern", [(1, 4), (1, 16)])
def test_other_patterns_keep_the_function_too(pattern):
    n, m = pattern
    torch.manual_seed(1)
    model = nn.Sequential(
        nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 32), nn.Linear(32, 4)
    )
    report = _check_function(model, torch.randn(8, 32), m, n)
    assert report.permuted == ("2", "4") and all(report[name].gain > 0 for name in report.permuted)


@torch.no_grad()
def test_hugging_face_models_keep_their_function():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    resnet = transformers.ResNetForImageClassification(
        transformers.ResNetConfig(embedding_size=16, hidden_sizes=[32, 64], depths=[1, 1], num_labels=3)
    )
    _with_statistics(resnet).eval()
    x = torch.randn(2, 3, 32, 32)
    before = resnet(x).logits
    report = permute_channels(resnet, _layers(resnet), 2, 4, (x,))
    assert float((resnet(x).logits - before).abs().max()) <= 1e-5 * max(1.0, float(before.abs().max()))
    # stage 0's first convs read the stem's channels as siblings (its shortcut and layer.0), stage 1's an add
    assert [n.removeprefix("resnet.encoder.stages.").removesuffix(".convolution") for n in report.permuted] == [
        "0.layers.0.shortcut",
        "0.layers.0.layer.0",
        "0.layers.0.layer.1",
        "0.layers.0.layer.2",
        "1.layers.0.layer.1",
        "1.layers.0.layer.2",
    ]
    assert (
        report["resnet.encoder.stages.0.layers.0.shortcut.convolution"].producer
        == "resnet.embedder.embedder.convolution"
    )
    bert = transformers.BertModel(
        transformers.BertConfig(
            vocab_size=64, hidden_size=64, num_hidden_layers=1, num_attention_heads=4, intermediate_size=128
        )
    ).eval()
    ids = torch.randint(0, 64, (2, 12))
    before = bert(ids).last_hidden_state
    report = permute_channels(bert, _layers(bert), 2, 4, (ids,))
    assert float((bert(ids).last_hidden_state - before).abs().max()) <= 1e-5 * max(1.0, float(before.abs().max()))
    assert report.permuted == ("encoder.layer.0.output.dense",)  # the feed-forward's second layer, after its GELU
    assert report["encoder.layer.0.attention.output.dense"].reason == "a reshape that moves channels on the way"


class Peeks(nn.Module):
    """Reads fc1's channels in order through numpy, where the trace cannot see it."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(8, 16), nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x)
        weighted = (h.numpy() * np.arange(16, dtype=np.float32)).sum(1, keepdims=True)  # (without gradients)
        peek = torch.from_numpy(np.ascontiguousarray(weighted))  # depends on the channel order
        return self.fc2(torch.relu(h)) + peek


def test_a_use_the_trace_misses_is_caught_by_the_output_check_and_left_unpermuted():
    torch.manual_seed(0)
    model = Peeks()
    x = torch.randn(4, 8)
    with torch.no_grad():
        before = model(x)
    report = permute_channels(model, [("fc2", model.fc2.weight)], 2, 4, (x,))
    assert report["fc2"].reason == "permuting it changed the model's outputs" and not report.permuted
    with torch.no_grad():
        assert torch.equal(model(x), before)  # put back exactly


def test_the_search_finds_the_order_that_separates_large_weights():
    weight = torch.tensor([[10.0, 9.0, 8.0, 7.0, 1.0, 1.0, 1.0, 1.0]])
    assert kept_magnitude(weight, 2, 4) == pytest.approx(21 / 38)
    order = find_permutation(weight, 2, 4)
    assert kept_magnitude(weight, 2, 4, order) == pytest.approx(34 / 38)
    assert torch.equal(find_permutation(weight, 2, 4), order)  # deterministic
    other = torch.randn(8, 32)
    state = torch.get_rng_state()
    find_permutation(other, 2, 4, seed=5)
    assert torch.equal(torch.get_rng_state(), state)  # its own generator


@st.composite
def _weights(draw):
    m = draw(st.sampled_from([4, 8, 16]))
    n = draw(st.integers(1, m - 1))
    rows = draw(st.integers(1, 6))
    groups = draw(st.integers(1, 6))
    kernel = draw(st.sampled_from([(), (1,), (3, 3)]))
    values = draw(st.lists(st.integers(-4, 4), min_size=rows * groups * m * max(1, int(np.prod(kernel)))))
    w = torch.tensor(values[: rows * groups * m * max(1, int(np.prod(kernel)))], dtype=torch.float32)
    return w.reshape(rows, groups * m, *kernel), n, m


@given(_weights())
def test_a_found_order_is_a_permutation_that_never_keeps_less(case):
    """Integer weights make ties common, which the closed-form gains must get right."""
    weight, n, m = case
    order = find_permutation(weight, n, m, max_rounds=20)
    assert torch.equal(order.sort().values, torch.arange(weight.shape[1]))
    before, after = kept_magnitude(weight, n, m), kept_magnitude(weight, n, m, order)
    assert after >= before - 1e-6
    permuted = weight[:, order]
    masked = (permuted.abs() * nm_mask(permuted, n, m)).sum() / max(float(weight.abs().sum()), 1e-30)
    assert after == pytest.approx(float(masked) if weight.abs().sum() else 1.0, abs=1e-6)  # what the mask keeps


def test_sparsify_permutes_before_the_first_mask_and_reports_it():
    torch.manual_seed(0)
    model = FashionResNet().eval()
    x = torch.randn(4, 1, 28, 28)
    plain = nmdeploy.sparsify(copy.deepcopy(model), "2:4", "asp")
    sp = nmdeploy.sparsify(model, "2:4", "asp", permute=True, example_inputs=x)
    assert plain.permutation is None and sp.permutation.permuted == (
        "blocks.0.conv2",
        "blocks.1.conv2",
        "blocks.2.conv2",
    )
    assert sp.permutation["blocks.0.conv2"].gain > 0
    by_hand = copy.deepcopy(plain.model)
    nmdeploy.finalize(by_hand)
    reference = FashionResNet()
    reference.load_state_dict(by_hand.state_dict())
    # the same as permuting first and then sparsifying: the mask is built on the new order
    torch.manual_seed(0)
    twin = FashionResNet().eval()
    permute_channels(twin, _layers(twin), 2, 4, (x,))
    nmdeploy.sparsify(twin, "2:4", "asp")
    nmdeploy.finalize(twin)
    nmdeploy.finalize(model)
    for key, value in twin.state_dict().items():
        assert torch.equal(value, model.state_dict()[key]), key
    assert not torch.equal(reference.blocks[0].conv2.weight, model.blocks[0].conv2.weight)
    assert sp.state_dict()["permute"] is True
    with pytest.raises(SparsityStateError, match="permute True vs False"):
        plain.load_state_dict(sp.state_dict())


def test_permute_needs_inputs_and_a_method_that_masks():
    with pytest.raises(ConfigError, match=r"sparsity.permute needs example inputs to trace the model"):
        nmdeploy.sparsify(FashionResNet(), "2:4", "asp", permute=True)
    with pytest.raises(
        ConfigError, match=r"^sparsity.permute = true does nothing with method = 'dense', which makes no mask"
    ):
        SparsityConfig(method="dense", permute=True)


def test_a_layer_with_one_group_has_nothing_to_swap():
    torch.manual_seed(0)
    model = FashionResNet()
    report = _check_function(model, torch.randn(2, 1, 28, 28), m=16, n=1)
    assert report["blocks.0.conv2"].reason == "one group of 16 input channels: nothing to swap"
    assert report.permuted == ("blocks.1.conv2", "blocks.2.conv2")


class Silent(nn.Module):
    """Returns no tensor, so nothing could show a wrong reorder."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(8, 16), nn.Linear(16, 4)
        self.seen: list[float] = []

    def forward(self, x: torch.Tensor) -> None:
        self.seen.append(float(self.fc2(torch.relu(self.fc1(x))).sum()))


def test_a_model_without_tensor_outputs_is_left_as_it_is():
    model = Silent()
    report = permute_channels(model, [("fc2", model.fc2.weight)], 2, 4, (torch.randn(2, 8),))
    assert report["fc2"].reason == "the model's outputs hold no tensor to check the permutation against"

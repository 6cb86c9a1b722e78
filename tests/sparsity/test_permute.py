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
    shared = "its input is also read by another op (the producer's output is shared)"
    for name in ("blocks.0.conv1", "blocks.1.conv1", "blocks.1.shortcut.0", "blocks.2.conv1", "blocks.2.shortcut.0"):
        assert report[name].reason == shared and report[name].kept_after == report[name].kept_before
    for name in report.permuted:
        row = report[name]
        assert row.producer == name.replace("conv2", "conv1") and row.gain > 0
        assert row.kept_after > row.kept_before


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
    assert [n.split(".")[-2:] for n in report.permuted] == [["1", "convolution"], ["2", "convolution"]] * 2
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

"""hf:PATH models: loaded offline, fed plain named tensors, exported with a dynamic token axis."""

from __future__ import annotations

import copy
import sys

import numpy as np
import pytest
import torch

from nmdeploy.errors import InputError
from nmdeploy.export.loading import build_model

transformers = pytest.importorskip("transformers")

from tests.hf_models import write_bert, write_resnet  # noqa: E402


def _tokens(batch: int = 2, length: int = 7) -> tuple[torch.Tensor, ...]:
    ids = torch.randint(5, 60, (batch, length), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, max(1, length - 3) :] = 0  # the second text is shorter: padded
    return ids, mask, torch.zeros_like(ids)


def test_a_classifier_takes_named_tensors_and_returns_the_logits_of_the_hf_model(hf_text):
    model = build_model(f"hf:{hf_text['model']}")
    reference = transformers.BertForSequenceClassification.from_pretrained(str(hf_text["model"])).eval()
    assert model.nm_inputs == ("input_ids", "attention_mask", "token_type_ids")
    assert model.nm_task == "sequence-classification"
    ids, mask, types = _tokens()
    with torch.no_grad():
        got = model(ids, mask, types)
        want = reference(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
    assert got.shape == (2, 3)
    assert torch.equal(got, want)


def test_module_names_and_state_dict_are_the_hf_models(hf_text):
    model = build_model(f"hf:{hf_text['model']}")
    names = {name for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    assert "bert.encoder.layer.0.attention.self.query" in names and "classifier" in names
    twin = copy.deepcopy(model)  # what export and the trainer do
    assert type(twin) is type(model) and twin.state_dict().keys() == model.state_dict().keys()


def test_feature_extraction_is_the_masked_mean_of_the_last_hidden_states(hf_text):
    model = build_model(f"hf:{hf_text['encoder']}")
    assert model.nm_task == "feature-extraction" and model.nm_outputs == ("sentence_embedding",)
    reference = transformers.BertModel.from_pretrained(str(hf_text["encoder"])).eval()
    ids, mask, types = _tokens()
    with torch.no_grad():
        hidden = reference(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state
        got = model(ids, mask, types)
    want = torch.stack([hidden[0].mean(0), hidden[1, : int(mask[1].sum())].mean(0)])
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_a_sentence_transformers_folder_pools_and_normalises_as_it_says(tmp_path):
    folder = write_bert(tmp_path / "st", classifier=False)
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text('{"pooling_mode_cls_token": true}')
    (folder / "modules.json").write_text('[{"type": "sentence_transformers.models.Normalize"}]')
    model = build_model(f"hf:{folder}")
    reference = transformers.BertModel.from_pretrained(str(folder)).eval()
    ids, mask, types = _tokens()
    with torch.no_grad():
        cls = reference(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state[:, 0]
        got = model(ids, mask, types)
    torch.testing.assert_close(got, torch.nn.functional.normalize(cls, dim=-1))


def test_an_image_classifier_takes_pixel_values(tmp_path):
    model = build_model(f"hf:{write_resnet(tmp_path / 'resnet')}")
    assert model.nm_inputs == ("pixel_values",) and model.nm_task == "image-classification"
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 3)


def test_a_folder_inside_an_installed_package_is_found(tmp_path, monkeypatch):
    package = tmp_path / "site" / "mymodels"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("raise RuntimeError('never imported')\n")
    write_bert(package / "tiny")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.chdir(tmp_path)
    model = build_model("hf:mymodels/tiny")
    assert model.nm_task == "sequence-classification"
    assert "mymodels" not in sys.modules


@pytest.mark.parametrize(
    ("make", "task", "message"),
    [
        (
            lambda d: d.mkdir(),
            None,
            "model.spec = 'hf:{d}': {d} has no config.json; give the folder that save_pretrained",
        ),
        (
            lambda d: (d.mkdir(), (d / "config.json").write_text('{"model_type": "bert"}')),
            None,
            "model.spec = 'hf:{d}': {d} has no weights (model.safetensors or pytorch_model.bin)",
        ),
        (
            lambda d: write_bert(d),
            "image-classification",
            "model.hf_task = 'image-classification' cannot be served by hf:{d}: transformers has no "
            "AutoModelForImageClassification for model_type 'bert'",
        ),
        (lambda d: None, None, "model.spec = 'hf:{d}': no such folder"),
    ],
)
def test_bad_folders_are_one_line(tmp_path, make, task, message):
    folder = tmp_path / "model"
    make(folder)
    with pytest.raises(InputError) as info:
        build_model(f"hf:{folder}", task)
    assert str(info.value).startswith(message.format(d=folder))
    assert "\n" not in str(info.value)


def test_the_export_has_named_inputs_a_dynamic_token_axis_and_named_outputs(hf_text, tmp_path):
    import onnx
    import onnxruntime as ort

    from nmdeploy.export.onnx import export_onnx

    model = build_model(f"hf:{hf_text['model']}")
    report = export_onnx(model, _tokens(2, 7), tmp_path / "bert.onnx")
    assert report.inputs == ("input_ids", "attention_mask", "token_type_ids")
    graph = onnx.load(str(tmp_path / "bert.onnx")).graph
    dims = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in graph.input}
    assert dims == {name: ["batch", "sequence"] for name in report.inputs}
    assert [o.name for o in graph.output] == ["logits"]
    session = ort.InferenceSession(str(tmp_path / "bert.onnx"), providers=["CPUExecutionProvider"])
    for length in (3, 19):  # neither the sample's length nor the parity check's second one
        args = _tokens(4, length)
        (got,) = session.run(None, {n: t.numpy() for n, t in zip(report.inputs, args)})
        with torch.no_grad():
            np.testing.assert_allclose(got, model(*args).numpy(), atol=1e-5)


def test_static_axes_when_asked(hf_text, tmp_path):
    import onnx

    from nmdeploy.export.config import ExportConfig
    from nmdeploy.export.onnx import export_onnx

    model = build_model(f"hf:{hf_text['model']}")
    config = ExportConfig(dynamic_axes={"input_ids": (0,), "attention_mask": (0,), "token_type_ids": (0,)})
    export_onnx(model, _tokens(2, 7), tmp_path / "bert.onnx", config=config)
    graph = onnx.load(str(tmp_path / "bert.onnx")).graph
    assert [[d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in graph.input] == [
        ["batch", 7]
    ] * 3


def test_the_export_sample_of_an_hf_model(hf_text, tmp_path):
    from nmdeploy.export.hf import sample_inputs

    model = build_model(f"hf:{hf_text['model']}")
    ids, mask, types = sample_inputs(model, (2, 9))
    assert ids.shape == (2, 9) and int(ids.min()) >= 0 and int(ids.max()) < 64
    assert torch.equal(mask, torch.ones_like(ids)) and torch.equal(types, torch.zeros_like(ids))
    with pytest.raises(InputError, match="a text model takes \\[batch, tokens\\]"):
        sample_inputs(model, (1, 3, 4))


def test_config_overrides_reach_the_model_and_unknown_keys_are_refused(hf_text):
    model = build_model(f"hf:{hf_text['model']}", hf_config={"hidden_dropout_prob": 0.0})
    assert model.config.hidden_dropout_prob == 0.0
    assert build_model(f"hf:{hf_text['model']}").config.hidden_dropout_prob == 0.1
    with pytest.raises(InputError, match="model.hf_config sets 'hiden_dropout', which .*config.json does not have"):
        build_model(f"hf:{hf_text['model']}", hf_config={"hiden_dropout": 0.0})


def test_hf_settings_need_an_hf_spec():
    from nmdeploy.errors import ConfigError
    from nmdeploy.export.config import ModelConfig

    with pytest.raises(ConfigError, match="model.hf_config is for hf:PATH models; model.spec is 'fashion-resnet'"):
        ModelConfig(hf_config={"hidden_dropout_prob": 0.0})
    with pytest.raises(ConfigError, match="model.hf_task is for hf:PATH models"):
        ModelConfig(hf_task="feature-extraction")

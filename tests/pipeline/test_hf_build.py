"""A build of an hf: text classifier on .jsonl files, end to end; a one-shot build; text through the CLI."""

from __future__ import annotations

import json

import onnx
import pytest
from click.testing import CliRunner

from nmdeploy.cli import cli as main
from nmdeploy.pipeline.build import build
from nmdeploy.pipeline.recipe import load_recipe

pytest.importorskip("transformers")


def _overrides(hf_text, *extra):
    return [
        f"model.spec=hf:{hf_text['model']}",
        f"data.train={hf_text['train']}",
        f"data.val={hf_text['val']}",
        "data.max_length=16",
        "dense.epochs=4",
        "dense.batch_size=16",
        "dense.optimizer=adamw",
        "dense.lr=0.003",
        "sparsity.include=[bert.encoder.*]",
        "sparsity.exclude=[]",
        "sparsity.end_epoch=0",
        "finetune.epochs=1",
        "finetune.batch_size=16",
        "finetune.optimizer=adamw",
        "finetune.lr=0.001",
        "quantize.count=48",
        "device=cpu",
        *extra,
    ]


def _dims(path):
    graph = onnx.load(str(path), load_external_data=False).graph
    return {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in graph.input}


def test_a_text_classifier_builds_end_to_end(hf_text, tmp_path):
    out = tmp_path / "out"
    result = build(load_recipe(None, _overrides(hf_text)), out, say=lambda line: None)
    stages = result.manifest["stages"]
    assert stages["dense"]["metrics"]["val_score"] > 0.9  # the colour words decide the class
    assert stages["sparse"]["metrics"]["sparse_layers"][0] == "bert.encoder.layer.0.attention.self.query"
    assert len(stages["sparse"]["metrics"]["sparse_layers"]) == 12  # 6 Linears in each of 2 layers
    assert stages["verify"]["metrics"]["nm_layers"] == 12
    want = {name: ["batch", "sequence"] for name in ("input_ids", "attention_mask", "token_type_ids")}
    assert _dims(out / "model.onnx") == want and _dims(out / "model.int8.onnx") == want
    bundle = json.loads((out / "target-bundle" / "bundle.json").read_text())
    assert bundle["shapes"] == {"sequence": [1, 16, 16]}
    assert bundle["profile"]["input_ids"] == {"min": [1, 1], "opt": [32, 16], "max": [256, 16]}
    script = (out / "target-bundle" / "build_engine.sh").read_text()
    assert "--maxShapes=input_ids:256x16,attention_mask:256x16,token_type_ids:256x16" in script
    # the Triton repository: the three int64 token inputs, the token range in the accelerator's profile
    from tests.engine.triton_schema import accelerator, io_of, parse_config

    config = parse_config(out / "triton" / "bert_onnx" / "config.pbtxt")
    assert io_of(config) == (
        [(name, "TYPE_INT64", [-1]) for name in ("input_ids", "attention_mask", "token_type_ids")],
        [("logits", "TYPE_FP32", [3])],  # the tiny BERT's three colour classes
    )
    params = accelerator(config)
    assert params["precision_mode"] == "INT8"
    assert params["trt_profile_max_shapes"] == "input_ids:256x16,attention_mask:256x16,token_type_ids:256x16"
    assert parse_config(out / "triton" / "bert.tensorrt_plan.pbtxt").platform == "tensorrt_plan"
    evaluated = CliRunner().invoke(
        main, ["eval", str(out / "model.int8.onnx"), "--data", str(hf_text["val"]), "--tokenizer",
               str(hf_text["model"]), "--max-length", "16", "--json", "-"],
    )  # fmt: skip
    assert evaluated.exit_code == 0, evaluated.output
    report = json.loads(evaluated.output)
    assert report["samples"] == 60
    assert report["top1"] == pytest.approx(stages["quantize"]["metrics"]["int8_score"])


def test_engine_shapes_set_the_token_range(hf_text, tmp_path):
    out = tmp_path / "out"
    overrides = _overrides(hf_text, "engine.shapes={sequence: [4, 8, 16]}", "quantize.enabled=false")
    build(load_recipe(None, overrides), out, say=lambda line: None)
    bundle = json.loads((out / "target-bundle" / "bundle.json").read_text())
    assert bundle["profile"]["attention_mask"] == {"min": [1, 4], "opt": [32, 8], "max": [256, 16]}


def test_one_shot_asp_prunes_without_fine_tuning(hf_text, tmp_path):
    out = tmp_path / "out"
    overrides = _overrides(hf_text, "sparsity.method=asp", "finetune.epochs=0", "quantize.enabled=false")
    lines = []
    result = build(load_recipe(None, overrides), out, say=lines.append)
    sparse = result.manifest["stages"]["sparse"]["metrics"]
    assert sparse["one_shot"] is True and sparse["history"] == []
    assert any("one-shot asp 2:4 (finetune.epochs = 0): pruned by magnitude, not fine-tuned" in line for line in lines)
    assert "one-shot: pruned by magnitude, not fine-tuned" in (out / "report.md").read_text()
    assert result.manifest["stages"]["verify"]["metrics"]["nm_layers"] == 12


def test_calibrate_draws_text_into_one_padded_set(hf_text, tmp_path):
    import numpy as np

    result = CliRunner().invoke(
        main,
        ["calibrate", "--data", str(hf_text["train"]), "--tokenizer", f"hf:{hf_text['model']}", "--max-length", "12",
         "-n", "30", "-o", str(tmp_path / "c.npz")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    with np.load(tmp_path / "c.npz") as npz:
        assert sorted(npz.files) == ["attention_mask", "input_ids", "token_type_ids", "y"]
        assert npz["input_ids"].shape == (30, 12) and np.bincount(npz["y"]).tolist() == [10, 10, 10]


def test_an_image_classifier_folder_builds_one_shot(tmp_path):
    import numpy as np

    from tests.hf_models import write_resnet

    folder = write_resnet(tmp_path / "resnet")
    rng = np.random.default_rng(0)
    for name, count in (("train", 48), ("val", 16)):
        np.savez(tmp_path / f"{name}.npz", x=rng.standard_normal((count, 3, 32, 32), dtype=np.float32),
                 y=rng.integers(0, 3, count))  # fmt: skip
    overrides = [
        f"model.spec=hf:{folder}",
        "model.pretrained=true",
        f"data.train={tmp_path / 'train.npz'}",
        f"data.val={tmp_path / 'val.npz'}",
        "sparsity.method=asp",
        "finetune.epochs=0",
        "quantize.count=32",
        "device=cpu",
    ]
    out = tmp_path / "out"
    result = build(load_recipe(None, overrides), out, say=lambda line: None)
    assert _dims(out / "model.onnx") == {"pixel_values": ["batch", 3, 32, 32]}
    assert result.manifest["stages"]["verify"]["metrics"]["nm_layers"] >= 4
    bundle = json.loads((out / "target-bundle" / "bundle.json").read_text())
    assert bundle["shapes"] is None and bundle["profile"]["pixel_values"]["max"] == [256, 3, 32, 32]


def test_export_an_hf_checkpoint_from_the_command_line(hf_text, tmp_path):
    import torch

    from nmdeploy.export.loading import build_model

    torch.save({"model": build_model(f"hf:{hf_text['model']}").state_dict()}, tmp_path / "dense.pt")
    runner = CliRunner()
    result = runner.invoke(
        main,
        ["export", str(tmp_path / "dense.pt"), "--model", f"hf:{hf_text['model']}", "-o", str(tmp_path / "m.onnx")],
    )
    assert result.exit_code == 0, result.output
    assert _dims(tmp_path / "m.onnx") == {
        n: ["batch", "sequence"] for n in ("input_ids", "attention_mask", "token_type_ids")
    }
    wrong = runner.invoke(
        main, ["export", str(tmp_path / "dense.pt"), "--model", "fashion-resnet", "--hf-task", "feature-extraction",
               "--input-shape", "1x1x28x28", "-o", str(tmp_path / "f.onnx")],
    )  # fmt: skip
    assert wrong.exit_code == 2 and "--hf-task is for hf:PATH models; --model is 'fashion-resnet'" in wrong.output


def test_quantising_a_transformer_writes_nothing_into_the_working_folder(hf_text, tmp_path, monkeypatch):
    import torch

    from nmdeploy.data import open_data
    from nmdeploy.data.config import DataConfig
    from nmdeploy.export.loading import build_model
    from nmdeploy.export.onnx import export_onnx
    from nmdeploy.quant.int8 import quantize_int8

    ids = torch.randint(5, 60, (2, 7))
    export_onnx(build_model(f"hf:{hf_text['model']}"), (ids, torch.ones_like(ids), torch.zeros_like(ids)),
                tmp_path / "bert.onnx")  # fmt: skip
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    data = open_data(str(hf_text["train"]), "train", DataConfig(tokenizer=str(hf_text["model"]), max_length=16))
    from nmdeploy.quant.config import QuantizeConfig

    quantize_int8(tmp_path / "bert.onnx", tmp_path / "bert.int8.onnx", data, config=QuantizeConfig(count=32))
    # onnxruntime's symbolic shape inference gives up on this graph and saves a copy of it where it runs
    assert list(here.iterdir()) == [] and (tmp_path / "bert.int8.onnx").is_file()


def test_a_text_stream_trains_and_calibrates(hf_text, tmp_path, monkeypatch):
    (tmp_path / "textstream.py").write_text(
        "import json, torch\n"
        "class Records(torch.utils.data.IterableDataset):\n"
        "    def __init__(self, path):\n        self.path = path\n"
        "    def __iter__(self):\n"
        "        with open(self.path) as f:\n"
        "            for line in f:\n                yield json.loads(line)\n"
        f"def load(split):\n    return Records({str(hf_text['train'])!r})\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    overrides = _overrides(hf_text, "data.train=textstream:load", "dense.steps_per_epoch=4",
                           "finetune.steps_per_epoch=4", "quantize.count=32")  # fmt: skip
    result = build(load_recipe(None, overrides), tmp_path / "out", say=lambda line: None)
    stages = result.manifest["stages"]
    assert (
        len(stages["dense"]["metrics"]["history"]) == 4 and stages["quantize"]["metrics"]["calibration_samples"] == 32
    )

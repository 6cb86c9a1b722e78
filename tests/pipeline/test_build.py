"""``build()`` end to end on a tiny recipe: artifacts, manifest, re-runs, resume, bad input."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import torch

from nmdeploy.errors import ConfigError, InputError, TrainingInterrupted
from nmdeploy.export.loading import build_model, load_checkpoint
from nmdeploy.export.verify import verify_onnx
from nmdeploy.pipeline.build import ARTIFACTS, build
from nmdeploy.pipeline.manifest import file_sha256
from nmdeploy.pipeline.recipe import load_recipe
from nmdeploy.sparsity import is_nm_sparse
from tests.pipeline.tiny import tiny_overrides

STAGES = (
    "dense",
    "sparse",
    "export",
    "verify",
    "quantize",
)  # then "engine": bundled for the target where TensorRT is absent
NO_TRT = importlib.util.find_spec("tensorrt") is None
PLOTS = ("training.png", "accuracy.png", "layers.png")
SPARSE_CONVS = (
    "blocks.0.conv1",
    "blocks.0.conv2",
    "blocks.1.conv1",
    "blocks.1.conv2",
    "blocks.1.shortcut.0",
    "blocks.2.conv1",
    "blocks.2.conv2",
    "blocks.2.shortcut.0",
)


def _build(out: Path, task_files, *extra: str, progress=None):
    lines: list[str] = []
    recipe = load_recipe(None, [*tiny_overrides(*task_files), *extra])
    return build(recipe, out, say=lines.append, progress=progress), lines


@pytest.fixture(scope="module")
def built(tmp_path_factory, task_files):
    out = tmp_path_factory.mktemp("build") / "out"
    result, lines = _build(out, task_files)
    return out, result, lines


def _state(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["model"]


def test_a_build_writes_every_artifact_and_its_manifest(built):
    out, result, lines = built
    built_here = ("model.plan", "model.dense.plan", "engine_report.json")
    expected = [a for a in ARTIFACTS if a not in (built_here if NO_TRT else ("target-bundle",))]
    assert sorted(p.name for p in out.iterdir()) == sorted([*expected, *PLOTS])  # the .work folder is gone
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest == result.manifest and manifest["schema"] == "nmdeploy.manifest/1"
    assert {"nmdeploy", "torch", "onnx", "onnxruntime"} <= set(manifest["versions"])
    assert manifest["recipe"]["finetune"]["epochs"] == 2 and manifest["recipe"]["sparsity"]["method"] == "maxq"
    stages = manifest["stages"]
    assert list(stages) == [*STAGES, "engine", "serve"]
    assert all(stages[s]["status"] == "done" and stages[s]["seconds"] > 0 for s in STAGES)
    if NO_TRT:
        engine = stages["engine"]
        assert engine["status"] == "bundled" and engine["note"] == "bundled for target"
        assert engine["metrics"]["built"] is False and "pip install 'nmdeploy[trt]'" in engine["metrics"]["reason"]
        assert (
            "target-bundle/build_engine.py" in engine["outputs"]
            and "target-bundle/model.int8.onnx" in engine["outputs"]
        )
        assert set(engine["inputs"]) == {"file:model.int8.onnx", "file:verify.json", "recipe:engine", "recipe:tensorrt"}
        bundle = out / "target-bundle"
        assert json.loads((bundle / "verify.json").read_text()) == json.loads((out / "verify.json").read_text())
        assert json.loads((bundle / "manifest.json").read_text())["stages"]["quantize"]["status"] == "done"
    for stage in STAGES:  # the recorded hashes are those of the files on disk
        assert stages[stage]["outputs"] and all(file_sha256(out / f) == h for f, h in stages[stage]["outputs"].items())
    assert set(stages["sparse"]["inputs"]) == {
        "file:dense.pt",
        "recipe:data",
        "recipe:finetune",
        "recipe:model.spec",
        "recipe:sparsity",
        "recipe:task",
    }
    assert [m["epoch"] for m in stages["sparse"]["metrics"]["history"]] == [1, 2]
    # distillation from the dense model is on by default for a classifier
    assert stages["sparse"]["metrics"]["distill"] == {"weight": 0.5, "temperature": 4.0}
    assert "sparse: learning from the dense model's logits too (weight 0.5, temperature 4)" in lines
    assert stages["sparse"]["metrics"]["permutation"] is None  # sparsity.permute is off by default
    accuracy = manifest["accuracy"]
    assert list(accuracy) == ["metric", "dense", "sparse", "sparse_onnx", "int8"] and accuracy["metric"] == "top-1"
    assert accuracy["sparse_onnx"] == accuracy["sparse"]  # the ONNX model computes what PyTorch does
    assert accuracy["int8"] > 0.8 and abs(accuracy["int8"] - accuracy["sparse"]) <= 0.02
    assert any(line.startswith("sparse epoch 2/2: loss ") for line in lines)
    assert lines[-2].startswith("engine: bundled for target in target-bundle/" if NO_TRT else "engine: model.plan")
    if NO_TRT:  # the repository's plan model waits for the target bundle to build its plan
        assert lines[-1] == (
            "serve: Triton model repository triton/ with fashion-resnet, fashion-resnet_onnx; fashion-resnet waits for its plan "
            "(python3 target-bundle/build_engine.py --triton triton)"
        )
        assert stages["serve"]["metrics"] == {
            "repository": "triton",
            "models": ["fashion-resnet", "fashion-resnet_onnx"],
            "pending": "fashion-resnet",
        }
        assert set(stages["serve"]["inputs"]) == {
            "file:model.int8.onnx",
            "recipe:engine",
            "recipe:name",
            "recipe:plan",
            "recipe:serve",
        }
    assert sorted(stages["serve"]["outputs"]) == [
        "triton/README.md",
        "triton/client.py",
        *(
            ["triton/fashion-resnet.tensorrt_plan.pbtxt"]
            if NO_TRT
            else ["triton/fashion-resnet/1/model.plan", "triton/fashion-resnet/config.pbtxt"]
        ),
        "triton/fashion-resnet_onnx/1/model.onnx",
        "triton/fashion-resnet_onnx/config.pbtxt",
    ]
    from tests.engine.triton_schema import io_of, parse_config

    config = parse_config(out / "triton" / "fashion-resnet_onnx" / "config.pbtxt")  # Triton's own schema reads it
    assert config.max_batch_size == 256 and io_of(config)[0] == [("x", "TYPE_FP32", [1, 28, 28])]


def test_the_artifacts_are_sparse_where_they_should_be(built):
    out, _, _ = built
    model = load_checkpoint(build_model("fashion-resnet"), out / "sparse.pt")
    modules = dict(model.named_modules())
    assert all(is_nm_sparse(modules[name].weight, 2, 4) for name in SPARSE_CONVS)
    assert (modules["stem.0"].weight != 0).all() and not is_nm_sparse(modules["fc"].weight, 2, 4)  # kept dense
    verify = json.loads((out / "verify.json").read_text())
    assert verify["ok"] and sum(layer["required"] for layer in verify["layers"]) == len(SPARSE_CONVS)
    int8 = verify_onnx(out / "model.int8.onnx")
    assert int8.ok and sum(layer.required for layer in int8.layers) == len(SPARSE_CONVS)
    report = (out / "report.md").read_text()
    for plot in PLOTS:
        assert f"]({plot})" in report and (out / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| blocks.2.conv2.weight | Conv | 64x64x3x3 | 50.0% | verified | yes |" in report
    assert "| quantize | done |" in report
    assert "after 2 epoch(s), distilled from the dense model (weight 0.5, temperature 4) |" in report
    assert ("| engine | bundled |" if NO_TRT else "| engine | done |") in report


def test_a_rerun_keeps_every_stage(built, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(built[0], out)
    before = {p.name: file_sha256(p) for p in out.iterdir() if p.is_file()}
    result, lines = _build(out, *_task(built))
    stages = result.manifest["stages"]
    assert [stages[s]["status"] for s in STAGES] == ["skipped"] * 5
    assert stages["dense"]["note"].startswith("built in ")
    assert lines == [f"{s}: inputs unchanged since the last build, kept" for s in (*STAGES, "engine", "serve")]
    if NO_TRT:
        assert (
            stages["engine"]["status"] == "bundled"
            and stages["engine"]["note"] == "bundled for target (kept: inputs unchanged)"
        )
    assert all(
        file_sha256(out / name) == digest
        for name, digest in before.items()
        if name.endswith((".pt", ".onnx", ".json")) and name != "manifest.json"
    )
    assert result.manifest["accuracy"] == built[1].manifest["accuracy"]


def test_the_worker_count_changes_no_result_so_redoes_no_stage(built, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(built[0], out)
    result, _ = _build(out, *_task(built), "data.workers=2")
    assert [result.manifest["stages"][s]["status"] for s in STAGES] == ["skipped"] * 5
    assert result.manifest["recipe"]["data"]["workers"] == 2


def test_a_changed_key_redoes_only_the_stages_after_it(built, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(built[0], out)
    result, _ = _build(out, *_task(built), "quantize.method=percentile")
    assert [result.manifest["stages"][s]["status"] for s in STAGES] == ["skipped"] * 4 + ["done"]
    assert result.manifest["recipe"]["quantize"]["method"] == "percentile"
    onnx_hash = file_sha256(out / "model.onnx")
    (out / "model.onnx").write_bytes(b"changed")  # a damaged artifact is rebuilt, not trusted
    result, _ = _build(out, *_task(built), "quantize.method=percentile")
    # export is redone and writes the same bytes again, so what reads model.onnx stays valid
    assert [result.manifest["stages"][s]["status"] for s in STAGES] == [
        "skipped",
        "skipped",
        "done",
        "skipped",
        "skipped",
    ]
    assert file_sha256(out / "model.onnx") == onnx_hash


def test_a_distillation_setting_redoes_the_fine_tune_but_not_the_dense_model(built, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(built[0], out)
    result, _ = _build(out, *_task(built), "task.distill=false")
    stages = result.manifest["stages"]
    assert [stages[s]["status"] for s in STAGES[:2]] == ["skipped", "done"]
    assert stages["sparse"]["metrics"]["distill"] is None


def test_a_permuted_one_shot_build_reports_each_layer(tmp_path, task_files):
    out = tmp_path / "out"
    result, lines = _build(
        out, task_files, "sparsity.method=asp", "sparsity.permute=true", "finetune.epochs=0", "dense.epochs=1"
    )
    rows = {r["layer"]: r for r in result.manifest["stages"]["sparse"]["metrics"]["permutation"]}
    assert sorted(rows) == sorted(SPARSE_CONVS)
    permuted = sorted(name for name, r in rows.items() if r["permuted"])
    assert permuted == ["blocks.0.conv2", "blocks.1.conv2", "blocks.2.conv2"]
    assert all(rows[n]["kept_after"] > rows[n]["kept_before"] for n in permuted)
    assert any(
        line.startswith("sparse: channel permutation on 3 of 8 sparse layer(s), kept magnitude +") for line in lines
    )
    report = (out / "report.md").read_text()
    assert "## Channel permutation (share of weight magnitude the N:M mask keeps)" in report
    assert (
        "| blocks.0.conv1 | no | " in report
        and " | – | its input is also read by another op (the producer's output is shared) |" in report
    )
    assert json.loads((out / "verify.json").read_text())["ok"]  # still 2:4 where TensorRT wants it


def _task(built):
    """The task files of the module's build (read back from its recipe)."""
    recipe = built[1].manifest["recipe"]["data"]
    return ((Path(recipe["train"]), Path(recipe["val"])),)


def test_an_interrupted_build_resumes_to_the_same_weights(built, tmp_path):
    out = tmp_path / "out"
    calls = {"n": 0}

    def interrupt(stage: str, done: int, total: int) -> None:
        if stage == "sparse training":
            calls["n"] += 1
            if done == total // 2 + 2:  # two steps into the second of two fine-tune epochs
                raise KeyboardInterrupt

    with pytest.raises(
        TrainingInterrupted,
        match=r"interrupted in epoch 2; 1 completed epoch\(s\) are saved in .*sparse-[0-9a-f]{16}\.ckpt",
    ):
        _build(out, *_task(built), progress=interrupt)
    assert not (out / "sparse.pt").exists() and len(list((out / ".work").iterdir())) == 1
    result, lines = _build(out, *_task(built))
    assert result.manifest["stages"]["dense"]["status"] == "skipped"
    assert any(line.startswith("sparse: resumed after epoch 1 from ") for line in lines)
    resumed, reference = _state(out / "sparse.pt"), _state(built[0] / "sparse.pt")
    assert resumed.keys() == reference.keys() and all(torch.equal(resumed[k], reference[k]) for k in reference)
    assert not (out / ".work").exists()


def _expect_nothing_written(out: Path, error: type, message: str, task_files, *extra: str) -> None:
    with pytest.raises(error) as info:
        _build(out, task_files, *extra)
    assert str(info.value).startswith(message), str(info.value)
    assert "\n" not in str(info.value)
    assert not out.exists()


def test_bad_input_is_one_line_and_writes_nothing(tmp_path, task_files):
    out = tmp_path / "out"
    train, val = task_files
    _expect_nothing_written(
        out,
        InputError,
        "model spec 'no_such_pkg.nets:Net' cannot be imported",
        task_files,
        "model.spec=no_such_pkg.nets:Net",
    )
    _expect_nothing_written(
        out,
        InputError,
        "model.input_shape = [1, 3, 28, 28] does not fit model 'fashion-resnet' (",
        task_files,
        "model.input_shape=[1, 3, 28, 28]",
    )
    _expect_nothing_written(
        out,
        InputError,
        f"data.train = '{train}' has samples of shape [1, 28, 28] but model.input_shape is [1, 1, 32, 32]",
        task_files,
        "model.input_shape=[1, 1, 32, 32]",
    )
    _expect_nothing_written(
        out, InputError, f"{tmp_path}/none.npz: no such data file", task_files, f"data.val={tmp_path}/none.npz"
    )
    torch.save({"model": torch.nn.Linear(3, 2).state_dict()}, tmp_path / "other.pt")
    _expect_nothing_written(
        out,
        InputError,
        f"{tmp_path}/other.pt does not fit model FashionResNet: 56 missing (first 'stem.0.weight'), 2 unexpected (first 'weight') tensors; give",
        task_files,
        f"model.checkpoint={tmp_path}/other.pt",
    )
    _expect_nothing_written(
        out,
        InputError,
        f"model.checkpoint = '{tmp_path}/nothing.pt': no such file",
        task_files,
        f"model.checkpoint={tmp_path}/nothing.pt",
    )
    _expect_nothing_written(
        out, ConfigError, "recipe key device = 'cuda' but this machine has no CUDA GPU", task_files, "device=cuda"
    ) if not torch.cuda.is_available() else None


def test_missing_fashion_mnist_names_the_install_command(tmp_path, monkeypatch):
    import nmdeploy.examples.fashion_mnist.data as fmnist

    monkeypatch.setattr(fmnist, "DATA_DIR", tmp_path / "none")
    with pytest.raises(
        InputError,
        match=r"^Fashion-MNIST is not installed \(.*none/(train|t10k)-images-idx3-ubyte.gz is missing\); "
        r"install it: apt-get install -y dataset-fashion-mnist",
    ):
        build(load_recipe(), tmp_path / "out", say=lambda line: None)
    assert not (tmp_path / "out").exists()


def test_an_unwritable_output_is_refused(tmp_path, task_files):
    (tmp_path / "file").write_text("")
    from nmdeploy.errors import OutputError

    with pytest.raises(
        OutputError,
        match=r"^cannot write .*/file/out: a part of the path is a file, not a folder; choose another output",
    ):
        _build(tmp_path / "file" / "out", task_files)


def test_a_pretrained_checkpoint_skips_dense_training(built, tmp_path):
    result, lines = _build(tmp_path / "out", *_task(built), f"model.checkpoint={built[0] / 'dense.pt'}")
    dense = result.manifest["stages"]["dense"]
    assert dense["metrics"]["source"] == "checkpoint" and dense["metrics"]["history"] == []
    assert "file:dense.pt" in dense["inputs"] and "recipe:dense" not in dense["inputs"]
    assert lines[0] == f"dense: pretrained weights from {built[0] / 'dense.pt'} (dense pre-training skipped)"
    assert dense["metrics"]["val_score"] == built[1].manifest["accuracy"]["dense"]


def test_force_builds_into_a_folder_with_other_files_which_then_counts_as_a_build(tmp_path, task_files):
    from nmdeploy.errors import OutputError

    out = tmp_path / "docs"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    recipe = load_recipe(None, tiny_overrides(*task_files))
    with pytest.raises(
        OutputError, match="the output folder .*docs already holds files that no nmdeploy build wrote; pass --force"
    ):
        build(recipe, out, stages=("dense",), say=lambda line: None)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    build(recipe, out, stages=("dense",), say=lambda line: None, force=True)
    assert (out / "notes.txt").read_text() == "mine" and (out / "dense.pt").is_file()
    again = build(recipe, out, stages=("dense",), say=lambda line: None)  # its manifest marks it as a build now
    assert again.manifest["stages"]["dense"]["status"] == "skipped"


def test_the_served_model_is_named_after_the_model():
    from nmdeploy.pipeline.stages import serve_name

    assert serve_name("fashion-resnet") == "fashion-resnet"
    assert serve_name("hf:/models/bert-base-uncased/") == "bert-base-uncased"
    assert serve_name("mypkg.nets:resnet_small") == "resnet_small"
    # a generic factory name says nothing: the module names the model
    assert [serve_name(s) for s in ("mymodels:build", "mypkg.vision:create_model", "zoo.cat:Model")] == [
        "mymodels",
        "vision",
        "cat",
    ]
    assert serve_name("mymodels:build", "shop-classifier") == "shop-classifier"

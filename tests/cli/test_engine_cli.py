"""``nmdeploy engine`` / ``bench`` where TensorRT is absent: one line, exit 3, and a target bundle."""

from __future__ import annotations

import importlib.util

import pytest
from click.testing import CliRunner

from nmdeploy.cli import cli

NO_TRT = pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here")


def _run(*args: str):
    return CliRunner().invoke(cli, list(args))


@NO_TRT
def test_engine_without_tensorrt_writes_the_bundle(tmp_path, cnn_onnx):
    result = _run("engine", str(cnn_onnx), "-o", str(tmp_path / "cnn.plan"), "--batch", "1,4,16", "--dense-twin")
    bundle = tmp_path / "cnn-bundle"
    assert result.exit_code == 3
    assert result.output == (
        "Error: TensorRT is not importable here (No module named 'tensorrt'); pip install 'nmdeploy[trt]' (the tensorrt wheel) "
        "on an x86_64/SBSA server with an NVIDIA GPU, or use the TensorRT that JetPack ships on Jetson Orin. "
        f"Wrote the target bundle {bundle}/ (23 files); on the target GPU run: python3 {bundle}/build_engine.py\n"
    )
    assert (bundle / "build_engine.py").is_file() and not (tmp_path / "cnn.plan").exists()
    assert '"batch": [\n    1,\n    4,\n    16\n  ]' in (bundle / "bundle.json").read_text()
    assert (bundle / "verify.json").is_file()  # verified on the spot when --verify is not given
    custom = _run("engine", str(cnn_onnx), "-o", str(tmp_path / "x.plan"), "--bundle", str(tmp_path / "ship"))
    assert custom.exit_code == 3 and (tmp_path / "ship" / "build_engine.sh").is_file()


@pytest.mark.parametrize(
    "args, code, message",
    [
        (
            ["--batch", "1,32"],
            1,
            "Error: --batch '1,32' is invalid: give 3 comma-separated positive integers, e.g. 1,32,256\n",
        ),
        (["--batch", "8,4,16"], 1, "Error: batch sizes min/opt/max = 8/4/16: need 1 <= min <= opt <= max\n"),
        (
            ["--min-shapes", "x:1x1x28x28"],
            1,
            "Error: input 'x' needs all of --min-shapes, --opt-shapes and --max-shapes\n",
        ),
        (
            ["--opt-shapes", "y"],
            1,
            "Error: --opt-shapes 'y' is not NAME:DIMS with positive sizes, e.g. input:1x1x28x28\n",
        ),
        (["-o", "{tmp}/model.onnx"], 1, "Error: engine path {tmp}/model.onnx should end in .plan or .engine\n"),
    ],
)
def test_engine_bad_input_is_one_line_and_writes_nothing(tmp_path, cnn_onnx, args, code, message):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    full = ["engine", str(cnn_onnx), *(args if "-o" in args else [*args, "-o", str(tmp_path / "m.plan")])]
    result = _run(*full)
    assert (result.exit_code, result.output) == (code, message.replace("{tmp}", str(tmp_path)))
    assert list(tmp_path.iterdir()) == []


def test_engine_missing_model(tmp_path):
    result = _run("engine", str(tmp_path / "none.onnx"))
    assert (result.exit_code, result.output) == (2, f"Error: {tmp_path}/none.onnx: no such ONNX file\n")


@NO_TRT
def test_bench_without_tensorrt(tmp_path):
    (tmp_path / "a.plan").write_bytes(b"plan")
    result = _run("bench", str(tmp_path / "a.plan"))
    assert result.exit_code == 3 and result.output.startswith(
        "Error: TensorRT is not importable here (No module named 'tensorrt')"
    )
    assert len(result.output.splitlines()) == 1
    bad = _run("bench", str(tmp_path / "a.plan"), "--batch", "0")
    assert (bad.exit_code, bad.output) == (
        1,
        "Error: --batch '0' is invalid: give comma-separated positive integers, e.g. 1,32\n",
    )


def test_triton_writes_a_repository_beside_the_model(tmp_path, cnn_onnx):
    import shutil

    from tests.engine.triton_schema import parse_config

    model = tmp_path / "model.int8.onnx"
    shutil.copyfile(cnn_onnx, model)
    result = _run("triton", str(model), "--max-batch", "64", "--preferred-batch", "8", "--preferred-batch", "16")
    repo = tmp_path / "triton"
    assert result.exit_code == 0, result.output
    assert result.output == (
        f"wrote {repo}/: model_onnx (4 files)\n"
        f"serve: tritonserver --model-repository={repo}   check: python3 {repo}/client.py --dry-run\n"
    )
    config = parse_config(repo / "model_onnx" / "config.pbtxt")
    assert config.max_batch_size == 64 and list(config.dynamic_batching.preferred_batch_size) == [8, 16]
    again = _run("triton", str(model), "--force", "--name", "fashion", "--no-dynamic-batching", "--instances", "2")
    assert again.exit_code == 0 and sorted(p.name for p in repo.iterdir()) == ["README.md", "client.py", "fashion_onnx"]
    config = parse_config(repo / "fashion_onnx" / "config.pbtxt")
    assert not config.HasField("dynamic_batching") and config.instance_group[0].count == 2


def test_bench_times_onnx_models_on_onnxruntime(tmp_path, cnn_onnx, mlp_onnx):
    import json

    result = _run(
        "bench",
        str(cnn_onnx),
        str(mlp_onnx),
        "--batch",
        "2",
        "--iterations",
        "3",
        "--warmup",
        "0",
        "--json",
        str(tmp_path / "t.json"),
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["engine", "batch", "p50", "ms", "p90", "ms", "p99", "ms", "samples/s"]
    assert [line.split()[:2] for line in lines[1:3]] == [["cnn", "2"], ["mlp", "2"]]
    assert lines[3].startswith("batch 2: mlp / cnn p50 latency = ")
    assert [(r["engine"], r["batch"]) for r in json.loads((tmp_path / "t.json").read_text())] == [
        ("cnn", 2),
        ("mlp", 2),
    ]


def test_eval_records_its_provider(tmp_path, cnn_onnx):
    import json

    import numpy as np

    rng = np.random.default_rng(0)
    np.savez(
        tmp_path / "d.npz", x=rng.standard_normal((8, 1, 28, 28)).astype(np.float32), y=np.zeros(8, dtype=np.int64)
    )
    result = _run("eval", str(cnn_onnx), "--data", str(tmp_path / "d.npz"), "--provider", "cpu", "--json", "-")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["provider"] == "cpu" and report["samples"] == 8

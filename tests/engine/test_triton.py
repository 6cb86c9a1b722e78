"""The Triton model repository: every config.pbtxt parsed with Triton's own schema and checked
against the ONNX, the plan checked before it is served, the target's plan install, the client."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from nmdeploy.engine.config import EngineConfig
from nmdeploy.engine.repository import check_plan, default_name, onnx_io, write_repository
from nmdeploy.engine.triton import PENDING_SUFFIX, ServeConfig, check_model_name, install_plan
from nmdeploy.errors import ConfigError, EngineUnavailable, InputError
from tests.engine.triton_schema import accelerator, io_of, parse_config
from tests.quant.models import images

CACHE = "/tmp/nmdeploy-trt-cache"


@pytest.fixture(scope="module")
def int8_cnn(cnn_onnx, tmp_path_factory):
    from nmdeploy.quant.int8 import quantize_int8

    out = tmp_path_factory.mktemp("int8") / "model.int8.onnx"
    quantize_int8(cnn_onnx, out, images(32), "minmax")
    return out


def text_onnx(path: Path, *, fixed_batch: int | None = None) -> Path:
    """A two-input text-shaped model: int64 ids and mask [batch, sequence] -> logits [batch, 2]."""
    batch = fixed_batch or "batch"
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["input_ids"], ["ids"], to=TensorProto.FLOAT),
            helper.make_node("Cast", ["attention_mask"], ["mask"], to=TensorProto.FLOAT),
            helper.make_node("Mul", ["ids", "mask"], ["kept"]),
            helper.make_node("ReduceMean", ["kept", "axes"], ["mean"], keepdims=1),
            helper.make_node("MatMul", ["mean", "w"], ["logits"]),
        ],
        "text",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, [batch, "sequence"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, [batch, "sequence"]),
        ],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 2])],
        [
            helper.make_tensor("axes", TensorProto.INT64, [1], [1]),
            helper.make_tensor("w", TensorProto.FLOAT, [1, 2], [1.0, -1.0]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def _report(plan: Path, profile: dict) -> None:
    """The engine_report.json nmdeploy engine writes beside a plan (its profile is what is checked)."""
    (plan.parent / "engine_report.json").write_text(
        json.dumps({"schema": "nmdeploy.engine/1", "plan": str(plan), "profile": profile})
    )


def test_the_image_repository_matches_the_onnx_in_triton_schema(int8_cnn, tmp_path):
    repo = write_repository(tmp_path / "repo", int8_cnn, ServeConfig(), name="fashion", pending_plan=True)
    assert repo.models == ("fashion", "fashion_onnx") and repo.pending == "fashion"
    assert [p.relative_to(repo.path).as_posix() for p in repo.files] == [
        "README.md",
        "client.py",
        f"fashion{PENDING_SUFFIX}",
        "fashion_onnx/1/model.onnx",
        "fashion_onnx/config.pbtxt",
    ]
    assert (repo.path / "fashion_onnx/1/model.onnx").read_bytes() == int8_cnn.read_bytes()
    ort_model = parse_config(repo.path / "fashion_onnx/config.pbtxt")
    plan_model = parse_config(repo.path / f"fashion{PENDING_SUFFIX}")
    onnx_inputs, onnx_outputs = onnx_io(int8_cnn)
    assert [(t.name, t.dims) for t in onnx_inputs] == [("x", ("batch", 1, 28, 28))]
    for config, name, platform in (
        (ort_model, "fashion_onnx", "onnxruntime_onnx"),
        (plan_model, "fashion", "tensorrt_plan"),
    ):
        assert (config.name, config.platform, config.max_batch_size) == (name, platform, 256)
        assert io_of(config) == ([("x", "TYPE_FP32", [1, 28, 28])], [(onnx_outputs[0].name, "TYPE_FP32", [10])])
        assert list(config.dynamic_batching.preferred_batch_size) == [32]
        assert config.dynamic_batching.max_queue_delay_microseconds == 100
        assert [(g.count, g.Kind.Name(g.kind)) for g in config.instance_group] == [(1, "KIND_GPU")]
    assert accelerator(ort_model) == {
        "precision_mode": "INT8",
        "trt_sparsity_enable": "1",
        "trt_engine_cache_enable": "1",
        "trt_engine_cache_path": f"{CACHE}/fashion_onnx",
        "trt_timing_cache_enable": "1",
        "trt_timing_cache_path": f"{CACHE}/fashion_onnx",
        "trt_profile_min_shapes": "x:1x1x28x28",
        "trt_profile_opt_shapes": "x:32x1x28x28",
        "trt_profile_max_shapes": "x:256x1x28x28",
    }
    assert not plan_model.HasField("optimization")
    readme = (repo.path / "README.md").read_text()
    assert "python3 ../target-bundle/build_engine.py --triton ." in readme
    assert "--model-control-mode=explicit --load-model=fashion_onnx" in readme


def test_a_float_model_and_every_serve_setting(cnn_onnx, tmp_path):
    serve = ServeConfig(max_batch=16, preferred_batch=(4, 8), queue_delay_us=500, instances=2, trt_cache="/cache/")
    engine = EngineConfig(sparse=False, workspace_mb=1024, opt_batch=8)
    repo = write_repository(tmp_path / "repo", cnn_onnx, serve, engine, name="cnn")
    assert repo.models == ("cnn_onnx",) and repo.pending is None  # no plan given: the ONNX model only
    config = parse_config(repo.path / "cnn_onnx/config.pbtxt")
    assert config.max_batch_size == 16 and list(config.dynamic_batching.preferred_batch_size) == [4, 8]
    assert config.dynamic_batching.max_queue_delay_microseconds == 500 and config.instance_group[0].count == 2
    params = accelerator(config)
    assert params["precision_mode"] == "FP32" and params["trt_sparsity_enable"] == "0"
    assert (
        params["max_workspace_size_bytes"] == str(1024 << 20) and params["trt_engine_cache_path"] == "/cache/cnn_onnx"
    )
    assert params["trt_profile_opt_shapes"] == "x:8x1x28x28" and params["trt_profile_max_shapes"] == "x:16x1x28x28"
    off = write_repository(tmp_path / "off", cnn_onnx, ServeConfig(dynamic_batching=False), name="cnn")
    assert not parse_config(off.path / "cnn_onnx/config.pbtxt").HasField("dynamic_batching")
    small = write_repository(tmp_path / "small", cnn_onnx, ServeConfig(max_batch=16), name="cnn")  # opt_batch 32 > 16
    batching = parse_config(small.path / "cnn_onnx/config.pbtxt").dynamic_batching
    assert list(batching.preferred_batch_size) == [] and batching.max_queue_delay_microseconds == 100


def test_a_two_input_text_model(tmp_path):
    model = text_onnx(tmp_path / "text.onnx")
    repo = write_repository(tmp_path / "repo", model, ServeConfig(max_batch=8), name="bert")
    config = parse_config(repo.path / "bert_onnx/config.pbtxt")
    assert io_of(config) == (
        [("input_ids", "TYPE_INT64", [-1]), ("attention_mask", "TYPE_INT64", [-1])],
        [("logits", "TYPE_FP32", [2])],
    )
    assert not any(k.startswith("trt_profile") for k in accelerator(config))  # no sequence range given
    ranged = write_repository(
        tmp_path / "ranged",
        model,
        ServeConfig(max_batch=8),
        EngineConfig(shapes={"sequence": (1, 64, 128)}),
        name="bert",
    )
    params = accelerator(parse_config(ranged.path / "bert_onnx/config.pbtxt"))
    assert params["trt_profile_min_shapes"] == "input_ids:1x1,attention_mask:1x1"
    assert params["trt_profile_opt_shapes"] == "input_ids:8x64,attention_mask:8x64"
    assert params["trt_profile_max_shapes"] == "input_ids:8x128,attention_mask:8x128"


def test_a_text_plan_gives_the_accelerator_its_token_range(tmp_path):
    model = text_onnx(tmp_path / "text.onnx")
    plan = tmp_path / "model.plan"
    plan.write_bytes(b"plan")
    ranges = {"min": [1, 1], "opt": [8, 64], "max": [16, 128]}
    _report(plan, {"input_ids": ranges, "attention_mask": ranges})
    repo = write_repository(tmp_path / "repo", model, ServeConfig(), name="bert", plan=plan)
    params = accelerator(parse_config(repo.path / "bert_onnx/config.pbtxt"))
    assert params["trt_profile_min_shapes"] == "input_ids:1x1,attention_mask:1x1"
    assert params["trt_profile_opt_shapes"] == "input_ids:16x64,attention_mask:16x64"  # opt batch 32, capped at 16
    assert params["trt_profile_max_shapes"] == "input_ids:16x128,attention_mask:16x128"
    assert parse_config(repo.path / "bert/config.pbtxt").max_batch_size == 16


def test_a_fixed_batch_model_is_served_without_batching(tmp_path):
    model = text_onnx(tmp_path / "fixed.onnx", fixed_batch=4)
    repo = write_repository(tmp_path / "repo", model, ServeConfig(), name="fixed")
    config = parse_config(repo.path / "fixed_onnx/config.pbtxt")
    assert config.max_batch_size == 0 and not config.HasField("dynamic_batching")
    assert io_of(config)[0] == [("input_ids", "TYPE_INT64", [4, -1]), ("attention_mask", "TYPE_INT64", [4, -1])]
    with pytest.raises(ConfigError) as info:
        write_repository(tmp_path / "batched", model, ServeConfig(max_batch=8), name="fixed")
    assert str(info.value) == (
        f"serve.max_batch = 8, but {model} has a fixed batch ('input_ids' is [4, 'sequence']); set serve.max_batch: 0, "
        "or export with a dynamic batch (export.dynamic_batch: true)"
    )
    assert not (tmp_path / "batched").exists()


def test_a_plan_is_served_after_its_report_matches(int8_cnn, tmp_path):
    plan = tmp_path / "engine" / "model.plan"
    plan.parent.mkdir()
    plan.write_bytes(b"plan bytes")
    _report(plan, {"x": {"min": [1, 1, 28, 28], "opt": [8, 1, 28, 28], "max": [64, 1, 28, 28]}})
    repo = write_repository(tmp_path / "repo", int8_cnn, ServeConfig(), name="fashion", plan=plan)
    assert repo.models == ("fashion", "fashion_onnx") and repo.pending is None
    assert (repo.path / "fashion/1/model.plan").read_bytes() == b"plan bytes"
    config = parse_config(repo.path / "fashion/config.pbtxt")
    assert (config.platform, config.max_batch_size) == ("tensorrt_plan", 64)  # the plan's largest batch
    assert list(config.dynamic_batching.preferred_batch_size) == [32]
    assert parse_config(repo.path / "fashion_onnx/config.pbtxt").max_batch_size == 64
    assert "python3 client.py                        # one request to fashion" in (repo.path / "README.md").read_text()


@pytest.mark.parametrize(
    "profile, max_batch, message",
    [
        (
            {"input": {"min": [1, 1, 28, 28], "opt": [8, 1, 28, 28], "max": [64, 1, 28, 28]}},
            None,
            "{plan} does not match {onnx}: its inputs are ['input'], the ONNX's ['x']; build the plan from this ONNX (nmdeploy engine)",
        ),
        (
            {"x": {"min": [1, 3, 28, 28], "opt": [8, 3, 28, 28], "max": [64, 3, 28, 28]}},
            None,
            "{plan} does not match {onnx}: input 'x' is ['batch', 1, 28, 28] in the ONNX, the plan takes [1, 3, 28, 28] to [64, 3, 28, 28]; build the plan from this ONNX (nmdeploy engine)",
        ),
        (
            {"x": {"min": [1, 1, 28, 28], "opt": [8, 1, 28, 28], "max": [64, 1, 28, 28]}},
            128,
            "{plan} takes batch 1..64 on input 'x', but Triton sends it 1..128 (serve.max_batch); rebuild with engine.min_batch 1 and engine.max_batch >= 128, or lower serve.max_batch",
        ),
        (
            {"x": {"min": [2, 1, 28, 28], "opt": [8, 1, 28, 28], "max": [64, 1, 28, 28]}},
            None,
            "{plan} takes batch 2..64 on input 'x', but Triton sends it 1..64 (serve.max_batch); rebuild with engine.min_batch 1 and engine.max_batch >= 64, or lower serve.max_batch",
        ),
    ],
)
def test_a_plan_that_does_not_match_the_onnx_is_refused(int8_cnn, tmp_path, profile, max_batch, message):
    plan = tmp_path / "model.plan"
    plan.write_bytes(b"plan")
    _report(plan, profile)
    with pytest.raises(InputError) as info:
        write_repository(tmp_path / "repo", int8_cnn, ServeConfig(max_batch=max_batch), name="m", plan=plan)
    assert str(info.value) == message.format(plan=plan, onnx=int8_cnn)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["engine_report.json", "model.plan"]  # nothing half-written


def test_a_plan_that_cannot_be_checked(int8_cnn, tmp_path):
    plan = tmp_path / "model.plan"
    plan.write_bytes(b"plan")
    with pytest.raises(EngineUnavailable) as info:  # no TensorRT here, and no report beside the plan
        check_plan(plan, int8_cnn, 8)
    assert info.value.exit_code == 3
    assert str(info.value) == (
        f"cannot check {plan} against {int8_cnn} here: TensorRT cannot open it on this machine and there is no "
        "engine_report.json beside it; run this where the plan was built, or keep the engine_report.json that "
        "nmdeploy engine wrote beside it"
    )
    (tmp_path / "engine_report.json").write_text(json.dumps({"plan": "other.plan", "profile": {}}))
    with pytest.raises(InputError, match=r"engine_report.json describes other.plan, not model.plan; keep each plan"):
        check_plan(plan, int8_cnn, 8)


def test_the_target_moves_its_plan_into_the_waiting_model(int8_cnn, tmp_path):
    repo = write_repository(tmp_path / "repo", int8_cnn, ServeConfig(), name="fashion", pending_plan=True)
    pending = (repo.path / f"fashion{PENDING_SUFFIX}").read_text()
    plan = tmp_path / "model.plan"
    plan.write_bytes(b"built on the target")
    written = install_plan(repo.path, plan)
    assert written == [repo.path / "fashion/config.pbtxt", repo.path / "fashion/1/model.plan"]
    assert (repo.path / "fashion/config.pbtxt").read_text() == pending
    assert (repo.path / "fashion/1/model.plan").read_bytes() == b"built on the target"
    assert not (repo.path / f"fashion{PENDING_SUFFIX}").exists()
    assert parse_config(repo.path / "fashion/config.pbtxt").platform == "tensorrt_plan"
    with pytest.raises(InputError) as info:
        install_plan(repo.path, plan)
    assert str(info.value) == (
        f"{repo.path} has no model waiting for a plan (no *{PENDING_SUFFIX} at its root; fashion already hold one); "
        "pass the triton/ folder of an nmdeploy build whose engine was bundled"
    )
    with pytest.raises(InputError, match="no such Triton model repository"):
        install_plan(tmp_path / "missing", plan)


def test_the_client_script_builds_its_request_with_tritonclient(int8_cnn, tmp_path):
    pytest.importorskip("tritonclient.http")
    repo = write_repository(tmp_path / "repo", int8_cnn, ServeConfig(max_batch=8), name="fashion", pending_plan=True)
    text = write_repository(tmp_path / "text", text_onnx(tmp_path / "t.onnx"), ServeConfig(), name="bert")

    def client(folder: Path, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, str(folder / "client.py"), *args], capture_output=True, text=True, timeout=120
        )

    ran = client(repo.path, "--dry-run", "--batch", "4")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == "would send x FP32 [4, 1, 28, 28] to fashion_onnx at localhost:8000\n"  # the plan waits
    ran = client(repo.path, "--dry-run", "--model", "fashion")
    assert ran.stdout == "would send x FP32 [1, 1, 28, 28] to fashion at localhost:8000\n"
    ran = client(text.path, "--dry-run", "--length", "7", "--url", "gpu:8000")
    assert ran.stdout == (
        "would send input_ids INT64 [1, 7] to bert_onnx at gpu:8000\n"
        "would send attention_mask INT64 [1, 7] to bert_onnx at gpu:8000\n"
    )
    refused = client(repo.path, "--dry-run", "--batch", "9")
    assert refused.returncode == 2 and refused.stderr.endswith("error: --batch 9: fashion_onnx takes 1..8\n")
    unreachable = client(repo.path, "--url", "127.0.0.1:9")  # nothing listens there
    assert unreachable.returncode == 1 and unreachable.stderr.startswith("cannot reach Triton at 127.0.0.1:9 (")


def test_the_client_inputs_run_in_the_model(tmp_path):
    """What client.py sends is what the model takes: its arrays run in onnxruntime."""
    import runpy

    import onnxruntime as ort

    model = text_onnx(tmp_path / "t.onnx")
    repo = write_repository(tmp_path / "repo", model, ServeConfig(), name="bert")
    script = runpy.run_path(str(repo.path / "client.py"))
    arrays = script["make_inputs"](script["MODELS"]["bert_onnx"], 3, 5)
    assert {k: (v.dtype, v.shape) for k, v in arrays.items()} == {
        "input_ids": (np.dtype("int64"), (3, 5)),
        "attention_mask": (np.dtype("int64"), (3, 5)),
    }
    (logits,) = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, arrays)
    assert logits.shape == (3, 2)


@pytest.mark.parametrize("name", ["a/b", "..", "x..y", ".hidden", "", "two words", "-dash", "a" * 129])
def test_names_triton_would_reject(name):
    with pytest.raises(ConfigError) as info:
        ServeConfig(name=name)
    assert str(info.value).startswith(f"serve.name {name!r} is not a Triton model name: use letters, digits")
    with pytest.raises(ConfigError, match=r"^model name .* is not a Triton model name"):
        check_model_name(name)


def test_names_and_settings():
    assert check_model_name("resnet50_v1.5-int8") == "resnet50_v1.5-int8"
    assert default_name("model.int8.onnx") == "model" and default_name("my model.onnx") == "my_model"
    assert default_name("_x.onnx") == "model_x"
    for values, message in [
        ({"max_batch": -1}, "serve.max_batch: -1 must be >= 0 (0 = no batching); or null for engine.max_batch"),
        ({"instances": 0}, "serve.instances: 0 must be at least 1"),
        ({"queue_delay_us": -5}, "serve.queue_delay_us: -5 must be >= 0"),
        ({"preferred_batch": (0,)}, "serve.preferred_batch: [0] must hold positive batch sizes"),
        ({"max_batch": 8, "preferred_batch": (16,)}, "serve.preferred_batch: [16] must not exceed serve.max_batch = 8"),
        ({"trt_cache": ""}, "serve.trt_cache: give a folder on the server, e.g. /tmp/nmdeploy-trt-cache"),
        ({"instances": "2"}, "serve.instances = '2' has the wrong type: expected an integer"),
    ]:
        with pytest.raises(ConfigError) as info:
            ServeConfig(**values)
        assert str(info.value) == message

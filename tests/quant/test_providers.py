"""onnxruntime providers: the option lists, a session that really runs where asked, and a refusal
(exit 3, one line, nothing on stdout) where the provider cannot start; ONNX timing side by side."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nmdeploy.errors import EngineUnavailable, InputError
from nmdeploy.quant.int8 import quantize_int8
from nmdeploy.quant.providers import provider_options, start_session
from nmdeploy.quant.timing import bench_onnx, random_feed
from tests.engine.test_triton import text_onnx
from tests.quant.models import images

NO_GPU = not torch.cuda.is_available()


@pytest.fixture(scope="module")
def int8_cnn(cnn_onnx, tmp_path_factory):
    out = tmp_path_factory.mktemp("int8") / "model.int8.onnx"
    quantize_int8(cnn_onnx, out, images(32), "minmax")
    return out


def test_the_provider_chains(cnn_onnx, int8_cnn, tmp_path):
    assert provider_options("cpu", cnn_onnx) == ["CPUExecutionProvider"]
    assert provider_options("cuda", cnn_onnx) == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    trt, cuda, cpu = provider_options("tensorrt", int8_cnn, tmp_path)
    assert (cuda, cpu) == ("CUDAExecutionProvider", "CPUExecutionProvider")
    assert trt == (
        "TensorrtExecutionProvider",
        {
            "trt_int8_enable": True,  # a Q/DQ graph: explicit INT8
            "trt_sparsity_enable": True,
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(tmp_path),
            "trt_timing_cache_enable": True,
            "trt_timing_cache_path": str(tmp_path),
        },
    )
    assert provider_options("tensorrt", cnn_onnx)[0][1]["trt_int8_enable"] is False  # a float graph
    with pytest.raises(InputError, match=r"^provider 'rocm' is unknown; use one of cpu, cuda, tensorrt$"):
        provider_options("rocm", cnn_onnx)


def test_the_cpu_session(cnn_onnx):
    assert start_session(cnn_onnx).get_providers() == ["CPUExecutionProvider"]


@pytest.mark.skipif(not NO_GPU, reason="a GPU is here: tests/gpu checks that the providers start")
@pytest.mark.parametrize(
    "provider, message",
    [
        (
            "cuda",
            "onnxruntime could not start CUDAExecutionProvider here (it fell back to CPUExecutionProvider); run where "
            "there is an NVIDIA GPU with the CUDA and cuDNN libraries this onnxruntime-gpu was built for, or use "
            "--provider cpu",
        ),
        (
            "tensorrt",
            "onnxruntime could not start TensorrtExecutionProvider here (it fell back to CPUExecutionProvider); run "
            "where there is an NVIDIA GPU with CUDA, cuDNN and TensorRT's libraries (pip install tensorrt) this "
            "onnxruntime-gpu was built for, or use --provider cpu",
        ),
    ],
)
def test_a_provider_that_cannot_start_is_refused_not_replaced_by_the_cpu(int8_cnn, capfd, provider, message):
    with pytest.raises(EngineUnavailable) as info:
        start_session(int8_cnn, provider)
    assert str(info.value) == message and info.value.exit_code == 3
    out, err = capfd.readouterr()
    assert out == "" and err == ""  # onnxruntime's own fallback chatter is kept out of the one-line error


def test_onnx_models_are_timed_side_by_side(cnn_onnx, int8_cnn):
    rows = bench_onnx({"fp32": cnn_onnx, "int8": int8_cnn}, "cpu", (1, 4), warmup=1, iterations=5)
    assert [(r.engine, r.batch) for r in rows] == [("fp32", 1), ("int8", 1), ("fp32", 4), ("int8", 4)]
    assert all(0 < r.p50_ms <= r.p90_ms <= r.p99_ms and r.throughput > 0 for r in rows)


def test_random_feeds_fit_a_text_model(tmp_path):
    session = start_session(text_onnx(tmp_path / "t.onnx"))
    feed = random_feed(session, 3, 9)
    assert {k: (v.dtype, v.shape) for k, v in feed.items()} == {
        "input_ids": (np.dtype("int64"), (3, 9)),
        "attention_mask": (np.dtype("int64"), (3, 9)),
    }
    assert (feed["attention_mask"] == 1).all() and (feed["input_ids"] == 0).all()
    (logits,) = session.run(None, feed)
    assert logits.shape == (3, 2)

"""The onnxruntime GPU providers on a real GPU: they start, and the model computes what it does on the CPU."""

from __future__ import annotations

import numpy as np
import pytest

from nmdeploy.errors import EngineUnavailable
from nmdeploy.quant.evaluate import evaluate_onnx
from nmdeploy.quant.providers import start_session
from tests.quant.models import images

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("provider", ["cuda", "tensorrt"])
def test_the_gpu_provider_runs_the_model_as_the_cpu_does(cnn_onnx, provider):
    try:
        session = start_session(cnn_onnx, provider)
    except EngineUnavailable as exc:  # a GPU without the libraries this onnxruntime-gpu needs
        pytest.skip(str(exc))
    assert session.get_providers()[0] in ("CUDAExecutionProvider", "TensorrtExecutionProvider")
    data = images(16)
    (gpu,) = session.run(None, {"x": data.inputs["x"]})
    (cpu,) = start_session(cnn_onnx).run(None, {"x": data.inputs["x"]})
    np.testing.assert_allclose(gpu, cpu, atol=2e-3, rtol=1e-3)
    report = evaluate_onnx(cnn_onnx, data, provider=provider)
    assert report.provider == provider and report.top1 == evaluate_onnx(cnn_onnx, data).top1

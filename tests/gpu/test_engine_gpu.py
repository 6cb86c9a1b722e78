"""The engine stage on a real GPU with real TensorRT (skipped elsewhere; never imitated).

Builds a sparse INT8 engine and its dense twin from a 2:4 Q/DQ model, checks the plan, the
layer report and the timing. With ``NMDEPLOY_RECORD_DIR`` set it also stores the inspector
JSON and the build log, to refresh ``tests/engine/samples``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def sparse_int8(tmp_path_factory):
    torch = pytest.importorskip("torch")
    pytest.importorskip("tensorrt")
    import nmdeploy
    from nmdeploy.examples.fashion_mnist.model import FashionResNet
    from tests.quant.models import images

    folder = tmp_path_factory.mktemp("gpu-engine")
    torch.manual_seed(0)
    model = FashionResNet(widths=(64, 128, 256)).eval()
    nmdeploy.sparsify(model, "2:4", method="asp")
    nmdeploy.finalize(model)
    nmdeploy.export_onnx(model, torch.randn(2, 1, 28, 28), folder / "model.onnx")
    nmdeploy.quantize_int8(folder / "model.onnx", folder / "model.int8.onnx", images(64), method="minmax")
    return folder


def test_sparse_int8_engine_and_report(sparse_int8):
    from nmdeploy.engine.bench import bench_engines
    from nmdeploy.engine.build import build_engine
    from nmdeploy.engine.config import EngineConfig

    config = EngineConfig(
        dense_twin=True, min_batch=1, opt_batch=8, max_batch=32, timing_cache=str(sparse_int8 / "timing.cache")
    )
    report = build_engine(sparse_int8 / "model.int8.onnx", sparse_int8 / "model.plan", config)
    assert Path(report.plan).stat().st_size > 0 and Path(report.dense_twin).stat().st_size > 0
    assert (sparse_int8 / "timing.cache").stat().st_size > 0
    saved = json.loads((sparse_int8 / "engine_report.json").read_text())
    assert saved["schema"] == "nmdeploy.engine/1" and "SPARSE_WEIGHTS" in saved["build"]["builder_flags"]
    assert report.inspector_schema in ("10.x", "11.x")
    verified = [row for row in report.layers if row.verified]
    assert verified and all(row.engine_layer is not None for row in verified)  # every 2:4 conv is found in the engine
    assert report.eligible is not None and len(report.eligible) > 0  # TensorRT lists the 2:4 layers as eligible
    rows = bench_engines({"sparse": report.plan, "dense": report.dense_twin}, (1, 32), warmup=5, iterations=20)
    assert {(r.engine, r.batch) for r in rows} == {("sparse", 1), ("dense", 1), ("sparse", 32), ("dense", 32)}
    assert all(r.p50_ms > 0 and r.p50_ms <= r.p99_ms for r in rows)
    record = os.environ.get("NMDEPLOY_RECORD_DIR")
    if record:
        import tensorrt as trt

        from nmdeploy.engine.build import _inspect

        Path(record).mkdir(parents=True, exist_ok=True)
        info = _inspect(trt, Path(report.plan).read_bytes())
        (Path(record) / f"engine_info_{trt.__version__}.json").write_text(info)

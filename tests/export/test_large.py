"""Models past protobuf's 2 GB limit: external data through export, verify, quantise and the bundle.

The first test lowers the single-file limit so that a small model takes the external-data path
at every stage (fast, in every run). The ``nightly`` one generates a real 2.2 GB ONNX and checks
that verify reads it a tensor at a time and that quantise and the bundle keep its data file:
``pytest -m nightly tests/export/test_large.py`` (about two minutes, 12 GB of memory at most).
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch

import nmdeploy
from nmdeploy.engine.config import EngineConfig
from nmdeploy.engine.deploy import build_or_bundle
from nmdeploy.export.verify import verify_model, verify_onnx
from nmdeploy.quant.int8 import quantize_int8
from tests.quant.models import MLP, vectors


def _external(path) -> set[str]:
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    model = onnx.load(str(path), load_external_data=False)
    return {ExternalDataInfo(t).location for t in model.graph.initializer if uses_external_data(t)}


def test_external_data_goes_through_every_stage(tmp_path, monkeypatch):
    import nmdeploy.export.onnx as export_module
    import nmdeploy.quant.int8 as int8_module

    monkeypatch.setattr(export_module, "SINGLE_FILE_LIMIT", 1000)
    monkeypatch.setattr(int8_module, "SINGLE_FILE_LIMIT", 1000)
    torch.manual_seed(0)
    net = MLP()
    nmdeploy.sparsify(net, "2:4", method="asp")
    report = nmdeploy.export_onnx(net.eval(), torch.randn(2, 32), tmp_path / "mlp.onnx")
    assert report.external_data and _external(tmp_path / "mlp.onnx") == {"mlp.onnx.data"}
    checked = verify_onnx(tmp_path / "mlp.onnx")  # reads the data file a tensor at a time
    whole = verify_model(onnx.load(str(tmp_path / "mlp.onnx")), "2:4")  # every tensor loaded first
    assert checked.ok and checked.layers == whole.layers and any(layer.required for layer in checked.layers)

    quantized = quantize_int8(tmp_path / "mlp.onnx", tmp_path / "mlp.int8.onnx", vectors(64))
    assert _external(tmp_path / "mlp.int8.onnx") == {"mlp.int8.onnx.data"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlp.int8.onnx", "mlp.int8.onnx.data", "mlp.onnx",
                                                          "mlp.onnx.data"]  # fmt: skip
    assert quantized.verify.ok and verify_onnx(tmp_path / "mlp.int8.onnx").ok

    result = build_or_bundle(tmp_path / "mlp.int8.onnx", tmp_path / "m.plan", tmp_path / "bundle", EngineConfig())
    if result.report is None:  # no TensorRT here: the bundle must carry the data file
        bundled = tmp_path / "bundle"
        assert (bundled / "mlp.int8.onnx.data").read_bytes() == (tmp_path / "mlp.int8.onnx.data").read_bytes()
        assert verify_onnx(bundled / "mlp.int8.onnx").ok
    from nmdeploy.engine.repository import write_repository
    from nmdeploy.engine.triton import ServeConfig

    repo = write_repository(tmp_path / "triton", tmp_path / "mlp.int8.onnx", ServeConfig(), name="mlp")
    served = repo.path / "mlp_onnx" / "1"  # Triton's onnxruntime backend reads the data file beside model.onnx
    assert (served / "mlp.int8.onnx.data").read_bytes() == (tmp_path / "mlp.int8.onnx.data").read_bytes()
    assert verify_onnx(served / "model.onnx").ok


_GENERATE = """
import sys
import numpy as np, onnx
from onnx import helper, numpy_helper, TensorProto
rng = np.random.default_rng(0)
nodes, inits, prev = [], [], "x"
width, layers = 8192, 9  # 9 x 8192 x 8192 float32 = 2.4 GB
for i in range(layers):
    w = rng.standard_normal((width, width), dtype=np.float32)
    w.reshape(width, -1, 4)[:, :, 2:] = 0  # 2:4 along the input channels of Gemm(transB)
    inits.append(numpy_helper.from_array(w, f"w{i}"))
    del w
    nodes.append(helper.make_node("Gemm", [prev, f"w{i}"], [f"h{i}"], transB=1, name=f"fc{i}"))
    prev = f"h{i}"
graph = helper.make_graph(nodes, "big", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])],
                          [helper.make_tensor_value_info(prev, TensorProto.FLOAT, ["batch", width])], inits)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
onnx.save(model, sys.argv[1], save_as_external_data=True, location="big.onnx.data", all_tensors_to_one_file=True)
"""

_VERIFY = """
import resource, sys
from nmdeploy.export.verify import verify_model, verify_onnx
report = verify_onnx(sys.argv[1])
print(report.ok, sum(layer.required for layer in report.layers), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


@pytest.mark.nightly
def test_a_generated_2_4_gb_model_is_verified_a_tensor_at_a_time_and_quantised(tmp_path):
    path = tmp_path / "big.onnx"
    subprocess.run([sys.executable, "-c", _GENERATE, str(path)], check=True)
    data = tmp_path / "big.onnx.data"
    assert data.stat().st_size > 2**31
    ok, layers, peak_kib = subprocess.run(
        [sys.executable, "-c", _VERIFY, str(path)], check=True, capture_output=True, text=True
    ).stdout.split()
    assert ok == "True" and int(layers) == 9
    assert int(peak_kib) * 1024 < data.stat().st_size / 2  # never the whole file in memory
    rng = np.random.default_rng(0)
    from nmdeploy.data import ArrayData

    calib = ArrayData({"x": rng.standard_normal((16, 8192), dtype=np.float32)}, None, "random")
    report = quantize_int8(path, tmp_path / "big.int8.onnx", calib)
    assert report.verify.ok and (tmp_path / "big.int8.onnx.data").stat().st_size > 2**31 // 4
    result = build_or_bundle(tmp_path / "big.int8.onnx", tmp_path / "m.plan", tmp_path / "bundle", EngineConfig())
    if result.report is None:
        settings = json.loads((tmp_path / "bundle" / "bundle.json").read_text())
        assert settings["onnx"] == "big.int8.onnx" and (tmp_path / "bundle" / "big.int8.onnx.data").is_file()

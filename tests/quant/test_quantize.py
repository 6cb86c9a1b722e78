"""quantize_int8 end to end on a residual 2:4 CNN and a 2:4 MLP: legal, sparse, accurate, atomic."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from nmdeploy.errors import ConfigError, InputError
from nmdeploy.export.verify import verify_onnx
from nmdeploy.quant.int8 import METHODS, quantize_int8
from nmdeploy.quant.lint import lint_qdq
from tests.quant.models import images, vectors

COSINE_BOUND = 0.995  # FP32 vs INT8 mean per-sample cosine of the logits, stated in the README


def _nodes(path):
    return list(onnx.load(str(path)).graph.node)


def _producer(nodes, tensor):
    return next((n for n in nodes if tensor in n.output), None)


@pytest.mark.parametrize("method", METHODS)
def test_cnn_every_method_is_legal_keeps_2_4_and_stays_close(cnn_onnx, tmp_path, method):
    out = tmp_path / "cnn.int8.onnx"
    report = quantize_int8(cnn_onnx, out, images(64), method)
    assert out.is_file() and sorted(p.name for p in tmp_path.iterdir()) == ["cnn.int8.onnx"]
    assert lint_qdq(onnx.load(str(out))).ok and report.lint.ok
    check = verify_onnx(out)
    assert check.ok
    sparse = {layer.node for layer in check.layers if layer.required}
    assert sparse == set(report.sparse_layers) and len(sparse) == 8  # all but stem and classifier
    assert all(layer.dtype == "int8" for layer in check.layers)
    assert len(report.quantized) == 10 and report.excluded == ()
    assert report.accuracy.cosine[0].mean > COSINE_BOUND
    assert report.accuracy.samples == 64 and report.calibration_samples == 64


def test_cnn_placement_is_tensorrts_default(cnn_onnx, tmp_path):
    out = tmp_path / "q.onnx"
    report = quantize_int8(cnn_onnx, out, images(32), "minmax")
    nodes = _nodes(out)
    adds = [n for n in nodes if n.op_type == "Add"]
    residual = {_producer(nodes, _producer(nodes, a.input[1]).input[0]).input[0] for a in adds}
    for node in nodes:
        if node.op_type in ("Conv", "Gemm"):  # both inputs through DequantizeLinear
            assert [_producer(nodes, i).op_type for i in node.input[:2]] == ["DequantizeLinear"] * 2, node.name
            # outputs stay float, except a projection shortcut's: it is the residual input of an Add
            quantised = any(c.op_type == "QuantizeLinear" for c in nodes if node.output[0] in c.input)
            assert quantised == (node.output[0] in residual), node.name
    assert len(adds) == report.residual_adds == 3
    for add in adds:  # the Conv side in float (fuses), the residual side quantised
        kinds = [getattr(_producer(nodes, i), "op_type", None) for i in add.input]
        assert kinds == ["Conv", "DequantizeLinear"], (add.name, kinds)
    bias = [t for t in onnx.load(str(out)).graph.initializer if t.name.endswith("bias")]
    assert bias and all(t.data_type == onnx.TensorProto.FLOAT for t in bias)


def test_output_qdq_on_sparse_quantises_only_sparse_outputs(cnn_onnx, tmp_path):
    out = tmp_path / "q.onnx"
    report = quantize_int8(cnn_onnx, out, images(32), "minmax", output_qdq_on_sparse=True)
    nodes = _nodes(out)
    assert lint_qdq(onnx.load(str(out))).ok
    for node in nodes:
        if node.op_type not in ("Conv", "Gemm"):
            continue
        readers = [c.op_type for c in nodes if node.output[0] in c.input]
        if node.name in report.sparse_layers:
            assert readers == ["QuantizeLinear"], node.name
        else:
            assert "QuantizeLinear" not in readers, node.name
    assert onnx.load(str(out)).graph.output[0].name == "linear"  # the model output keeps its name
    assert report.accuracy.cosine[0].mean > COSINE_BOUND


def test_keep_float_weights_puts_float_weights_behind_q_dq(cnn_onnx, tmp_path):
    out = tmp_path / "q.onnx"
    quantize_int8(cnn_onnx, out, images(32), "minmax", keep_float_weights=True)
    model = onnx.load(str(out))
    assert not [t.name for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT8 and len(t.dims) > 1]
    check = verify_onnx(out)
    assert check.ok and all(layer.dtype == "float32" for layer in check.layers)
    assert sum(layer.required for layer in check.layers) == 8
    assert lint_qdq(model).ok


def test_per_tensor_and_exclude(cnn_onnx, tmp_path):
    out = tmp_path / "q.onnx"
    report = quantize_int8(cnn_onnx, out, images(32), "minmax", per_channel=False, exclude=["fc.weight", "*shortcut*"])
    model = onnx.load(str(out))
    scales = [numpy_helper.to_array(t) for t in model.graph.initializer if t.name.endswith("weight_scale")]
    assert scales and all(s.size == 1 for s in scales)
    gemm = next(n for n in model.graph.node if n.op_type == "Gemm")
    assert gemm.name in report.excluded and len(report.excluded) == 3
    assert "fc.weight" in gemm.input  # float weight, read directly
    with pytest.raises(
        ConfigError, match=r"exclude pattern 'nope\*' matches no Conv/Gemm/MatMul node or weight; names look like"
    ):
        quantize_int8(cnn_onnx, tmp_path / "x.onnx", images(32), exclude=["nope*"])


def test_mlp_gemm_per_channel_axis_and_top1(mlp_onnx, tmp_path):
    out = tmp_path / "mlp.int8.onnx"
    report = quantize_int8(mlp_onnx, out, vectors(128), "entropy")
    model = onnx.load(str(out))
    dqs = {n.input[0]: n for n in model.graph.node if n.op_type == "DequantizeLinear"}
    for init in model.graph.initializer:
        if init.data_type == onnx.TensorProto.INT8 and len(init.dims) == 2:
            axis = next(a.i for a in dqs[init.name].attribute if a.name == "axis")
            assert axis == 0, init.name  # Gemm transB=1: output channels are rows
    assert len(report.sparse_layers) == 1  # the middle Linear; first and last stay dense by default
    assert report.accuracy.top1 is not None and abs(report.accuracy.top1 - report.accuracy.reference_top1) <= 0.05
    assert report.accuracy.cosine[0].mean > COSINE_BOUND


def test_int8_accuracy_on_separate_eval_data(mlp_onnx, tmp_path):
    report = quantize_int8(mlp_onnx, tmp_path / "q.onnx", vectors(64, seed=1), "minmax", eval_data=vectors(200, seed=2))
    assert report.accuracy.samples == 200 and report.calibration_samples == 64


@pytest.mark.parametrize(
    "data, message",
    [
        (
            lambda: {"input": np.zeros((4, 1, 28, 28), np.float32), "other": np.zeros((4, 1), np.float32)},
            r"calibration data 'bad' has no array for model input 'x' \(it has input, other\); store each input under the model's input name",
        ),
        (
            lambda: {"x": np.zeros((4, 1, 32, 32), np.float32)},
            r"calibration data 'bad': input 'x' has shape \[4, 1, 32, 32\], the model wants \[N, 1, 28, 28\] \(dim 2: 32 != 28\)",
        ),
        (
            lambda: {"x": np.zeros((4, 28, 28), np.float32)},
            r"input 'x' has shape \[4, 28, 28\], the model wants \[N, 1, 28, 28\]",
        ),
        (
            lambda: {"x": np.zeros((4, 1, 28, 28), np.float64)},
            r"input 'x' is float64, the model wants float32; convert it \(array.astype\('float32'\)\)",
        ),
        (
            lambda: {"x": np.zeros((0, 1, 28, 28), np.float32)},
            r"calibration data 'bad' is empty; it needs at least one sample",
        ),
        (
            lambda: {"x": np.where(np.arange(4 * 784).reshape(4, 1, 28, 28) == 5, np.nan, 0).astype(np.float32)},
            r"input 'x' holds 1 NaN/Inf value\(s\); clean the data",
        ),
    ],
    ids=["name", "shape", "rank", "dtype", "empty", "nan"],
)
def test_bad_calibration_data_fails_before_calibrating_and_writes_nothing(cnn_onnx, tmp_path, data, message):
    from nmdeploy.data import ArrayData

    with pytest.raises(InputError, match=message):
        quantize_int8(cnn_onnx, tmp_path / "q.onnx", ArrayData(data(), None, "bad"))
    assert list(tmp_path.iterdir()) == []


def test_refuses_quantised_input_unknown_method_and_same_path(cnn_onnx, tmp_path):
    out = tmp_path / "q.onnx"
    quantize_int8(cnn_onnx, out, images(16), "minmax")
    with pytest.raises(
        InputError,
        match=r"q.onnx is already quantised \(it has DequantizeLinear, QuantizeLinear\); pass the FP32 model",
    ):
        quantize_int8(out, tmp_path / "qq.onnx", images(16))
    with pytest.raises(
        ConfigError, match="calibration method 'kl' does not exist; use one of minmax, entropy, percentile"
    ):
        quantize_int8(cnn_onnx, tmp_path / "k.onnx", images(16), "kl")
    with pytest.raises(ConfigError, match="is the input model; write the INT8 model to a new file"):
        quantize_int8(cnn_onnx, cnn_onnx, images(16))
    with pytest.raises(ConfigError, match=r"percentile 101.0 must be in \(0, 100\]"):
        quantize_int8(cnn_onnx, tmp_path / "p.onnx", images(16), "percentile", percentile=101.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q.onnx"]


def test_zeros_that_do_not_survive_fail_and_write_nothing(cnn_onnx, tmp_path, monkeypatch):
    """Break the int8 weights the way an asymmetric quantiser would (0 -> zero point != 0)."""
    import nmdeploy.quant.int8 as int8

    real = int8.drop_fused_add_qdq

    def corrupt(graph, adds, keep=frozenset()):
        for init in graph.initializer:
            if init.name == "blocks.1.conv1.weight_quantized":
                w = numpy_helper.to_array(init).copy()
                w[w == 0] = 1
                init.CopyFrom(numpy_helper.from_array(w, init.name))
        return real(graph, adds, keep)

    monkeypatch.setattr(int8, "drop_fused_add_qdq", corrupt)
    with pytest.raises(
        Exception, match=r"1 layer\(s\) lost their 2:4 zeros in INT8 \(first: node_Conv_\d+\); nothing was written"
    ):
        quantize_int8(cnn_onnx, tmp_path / "q.onnx", images(16), "minmax")
    assert list(tmp_path.iterdir()) == []


def _input_scale(path) -> float:
    model = onnx.load(str(path))
    return float(numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == "x_scale")))


def test_entropy_and_percentile_clip_outliers_that_minmax_keeps(mlp_onnx, tmp_path):
    """Real entropy calibration (2048 bins), not onnxruntime's 128-bin default that equals min-max."""
    from nmdeploy.data import ArrayData

    rng = np.random.default_rng(0)
    x = rng.standard_normal((256, 32), dtype=np.float32)
    x[0, 0] = 60.0  # one outlier of 8192 values: min-max covers it, entropy and the 99.9th percentile do not
    data = ArrayData({"x": x}, None, "outlier")
    scales = {}
    for method in METHODS:
        quantize_int8(mlp_onnx, tmp_path / f"{method}.onnx", data, method, percentile=99.9)
        scales[method] = _input_scale(tmp_path / f"{method}.onnx")
    assert scales["minmax"] == pytest.approx(60.0 / 127, rel=1e-6)
    assert scales["entropy"] < scales["minmax"] / 4
    assert scales["percentile"] < scales["minmax"] / 4


def test_progress_reports_every_calibration_and_evaluation_sample(mlp_onnx, tmp_path):
    seen: dict[str, list[tuple[int, int]]] = {}
    quantize_int8(
        mlp_onnx,
        tmp_path / "q.onnx",
        vectors(100),
        "minmax",
        batch_size=32,
        progress=lambda stage, done, total: seen.setdefault(stage, []).append((done, total)),
    )
    assert seen["calibrate"] == [(25, 100), (50, 100), (75, 100), (100, 100)]  # equal batches of 25
    assert seen["evaluate"][-1] == (200, 200)  # INT8 and FP32 runs
    assert [d for d, _ in seen["evaluate"]] == sorted(d for d, _ in seen["evaluate"])

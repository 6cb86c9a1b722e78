"""Binding arrays to model inputs and batching them for onnxruntime."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from nmdeploy.data import ArrayData
from nmdeploy.errors import InputError
from nmdeploy.quant.reader import CalibrationReader, bind_inputs, iter_batches


def _input(name, shape, kind="tensor(float)"):
    return SimpleNamespace(name=name, shape=shape, type=kind)


def test_single_array_binds_to_a_single_input_whatever_its_name():
    data = ArrayData({"x": np.zeros((5, 3), np.float32)}, None, "d")
    bound = bind_inputs(data, [_input("input_ids", ["batch", 3])])
    assert list(bound.arrays) == ["input_ids"] and bound.count == 5 and bound.max_batch is None


def test_static_batch_caps_batches_and_needs_enough_samples():
    data = ArrayData({"x": np.arange(10, dtype=np.float32).reshape(10, 1)}, None, "d")
    bound = bind_inputs(data, [_input("x", [4, 1])])
    assert bound.max_batch == 4
    assert [b["x"].shape[0] for b in iter_batches(bound, 32)] == [4, 4]  # the short tail cannot run
    with pytest.raises(InputError, match="has 3 sample\\(s\\), fewer than the model's fixed batch of 4"):
        bind_inputs(ArrayData({"x": np.zeros((3, 1), np.float32)}, None, "d"), [_input("x", [4, 1])])


@pytest.mark.parametrize(
    "count, batch, sizes", [(100, 32, [25] * 4), (64, 32, [32, 32]), (7, 32, [7]), (13, 4, [1] * 13)]
)
def test_calibration_batches_are_equal_and_cover_every_sample(count, batch, sizes):
    data = ArrayData({"x": np.arange(count, dtype=np.float32).reshape(count, 1)}, None, "d")
    reader = CalibrationReader(bind_inputs(data, [_input("x", ["N", 1])]), batch)
    batches = list(reader)
    assert [len(b["x"]) for b in batches] == sizes
    assert np.array_equal(np.concatenate([b["x"] for b in batches]).ravel(), np.arange(count))
    assert reader.get_next() is None
    reader.rewind()
    assert len(reader.get_next()["x"]) == sizes[0]


def test_integer_inputs_are_checked_for_dtype_not_nan():
    data = ArrayData({"ids": np.zeros((2, 8), np.int32)}, None, "tokens")
    with pytest.raises(InputError, match="input 'ids' is int32, the model wants int64"):
        bind_inputs(data, [_input("ids", ["N", 8], "tensor(int64)")])


def test_a_batch_is_cut_to_fit_the_activation_budget(tmp_path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from nmdeploy.quant.reader import activation_bytes, fitting_batch

    weight = numpy_helper.from_array(np.ones((8, 16), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"]), helper.make_node("MatMul", ["y", "w"], ["z"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "sequence", 8])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["batch", "sequence", 16])],
        [weight],
    )
    path = tmp_path / "g.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    assert activation_bytes(path, tokens=1) == (8 + 16) * 4  # y and z of one sample; x and w are not activations
    assert activation_bytes(path, tokens=10) == (8 + 16) * 4 * 10
    assert fitting_batch(path, 256, tokens=10, budget=960 * 7) == 7
    assert fitting_batch(path, 4, tokens=10, budget=960 * 7) == 4  # never above what was asked
    assert fitting_batch(path, 256, tokens=10, budget=10) == 1

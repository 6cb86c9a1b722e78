"""Optimisation profiles from an ONNX file's inputs, and trtexec-style shape strings."""

from __future__ import annotations

import pytest

from nmdeploy.engine.shapes import make_profile, onnx_inputs, parse_shapes
from nmdeploy.errors import ConfigError, InputError


def test_parse_shapes():
    assert parse_shapes("x:1x1x28x28", "--min-shapes") == {"x": (1, 1, 28, 28)}
    assert parse_shapes("input_ids:1x128, attention_mask:1X128", "s") == {
        "input_ids": (1, 128),
        "attention_mask": (1, 128),
    }
    assert parse_shapes("ns::x:2x3", "s") == {"ns::x": (2, 3)}  # the name is everything before the last colon
    assert parse_shapes(None, "s") == {} and parse_shapes("", "s") == {}
    for bad in ("x", "x:", "x:1x0", "x:1xa", ":1x2"):
        with pytest.raises(
            ConfigError, match=r"^--opt-shapes .* is not NAME:DIMS with positive sizes, e.g. input:1x1x28x28$"
        ):
            parse_shapes(bad, "--opt-shapes")


def test_a_dynamic_batch_gets_the_batch_range(cnn_onnx):
    inputs = onnx_inputs(cnn_onnx)
    assert list(inputs) == ["x"] and inputs["x"][1:] == (1, 28, 28) and not isinstance(inputs["x"][0], int)
    profile = make_profile(inputs, (1, 8, 64))
    assert profile.inputs == {"x": ((1, 1, 28, 28), (8, 1, 28, 28), (64, 1, 28, 28))}
    assert profile.trtexec_args() == ["--minShapes=x:1x1x28x28", "--optShapes=x:8x1x28x28", "--maxShapes=x:64x1x28x28"]
    assert profile.to_dict() == {"x": {"min": [1, 1, 28, 28], "opt": [8, 1, 28, 28], "max": [64, 1, 28, 28]}}


def test_explicit_shapes_and_static_inputs():
    inputs = {"ids": ("batch", "seq"), "scale": (1, 4)}
    profile = make_profile(inputs, (1, 1, 1), {"ids": (1, 8)}, {"ids": (4, 64)}, {"ids": (16, 128)})
    assert profile.inputs["ids"] == ((1, 8), (4, 64), (16, 128))
    assert profile.inputs["scale"] == ((1, 4), (1, 4), (1, 4))  # static: one shape


@pytest.mark.parametrize(
    "inputs, args, message",
    [
        (
            {"ids": ("batch", "seq")},
            ((1, 2, 3),),
            "input 'ids' has dynamic dim 1 ('seq') besides the batch (['batch', 'seq']); give its range: "
            "engine.shapes {seq: [min, opt, max]} in a recipe, or --min-shapes",
        ),
        ({"x": ("b", 3)}, ((4, 2, 8),), "batch sizes min/opt/max = 4/2/8: need 1 <= min <= opt <= max"),
        ({"x": ("b", 3)}, ((1, 2, 3), {"y": (1, 3)}), "--min-shapes names 'y', which is not an input of the model (x)"),
        (
            {"x": ("b", 3)},
            ((1, 2, 3), {"x": (1, 3)}),
            "input 'x' needs all of --min-shapes, --opt-shapes and --max-shapes",
        ),
        (
            {"x": ("b", 3)},
            ((1, 2, 3), {"x": (1, 4)}, {"x": (2, 4)}, {"x": (4, 4)}),
            "shape 1x4 does not fit input 'x' ['b', 3]",
        ),
        (
            {"x": ("b", 3)},
            ((1, 2, 3), {"x": (8, 3)}, {"x": (2, 3)}, {"x": (4, 3)}),
            "input 'x': need min <= opt <= max in every dim, got 8x3 / 2x3 / 4x3",
        ),
    ],
)
def test_profile_errors(inputs, args, message):
    with pytest.raises(ConfigError) as info:
        make_profile(inputs, *args)
    assert str(info.value).startswith(message)


def test_not_onnx(tmp_path):
    (tmp_path / "junk.onnx").write_bytes(b"\x00not a protobuf at all")
    with pytest.raises(
        InputError, match=r"junk.onnx is not a readable ONNX model \(.*\); pass the .onnx from nmdeploy quantize"
    ):
        onnx_inputs(tmp_path / "junk.onnx")


def test_named_dims_give_every_input_that_has_them_the_same_range():
    inputs = {"input_ids": ("batch", "sequence"), "attention_mask": ("batch", "sequence"), "pixel": (1, 3)}
    profile = make_profile(inputs, (1, 8, 32), dims={"sequence": (4, 64, 128)})
    for name in ("input_ids", "attention_mask"):
        assert profile.inputs[name] == ((1, 4), (8, 64), (32, 128))
    assert profile.inputs["pixel"] == ((1, 3),) * 3
    assert profile.trtexec_args()[2] == "--maxShapes=input_ids:32x128,attention_mask:32x128,pixel:1x3"


@pytest.mark.parametrize(
    ("dims", "message"),
    [
        (
            {"tokens": (1, 2, 3)},
            r"engine.shapes names 'tokens', which is no dynamic dim of the model \(its dims besides the batch: sequence\)",
        ),
        (
            {"sequence": (8, 4, 16)},
            r"engine.shapes: sequence = \[8, 4, 16\]: give \[min, opt, max\] with 1 <= min <= opt <= max",
        ),
        ({"sequence": (1, 2)}, r"engine.shapes: sequence = \[1, 2\]: give \[min, opt, max\]"),
    ],
)
def test_bad_dim_ranges(dims, message):
    with pytest.raises(ConfigError, match=message):
        make_profile({"ids": ("batch", "sequence")}, (1, 1, 1), dims=dims)


def test_engine_config_checks_its_shapes():
    from nmdeploy.engine.config import EngineConfig

    assert EngineConfig(shapes={"sequence": [1, 64, 128]}).shapes == {"sequence": (1, 64, 128)}
    with pytest.raises(ConfigError, match=r"engine.shapes: sequence = \[4, 2, 8\]: give \[min, opt, max\]"):
        EngineConfig(shapes={"sequence": (4, 2, 8)})
    with pytest.raises(ConfigError, match="engine.shapes: batch is set by engine.min_batch/opt_batch/max_batch"):
        EngineConfig(shapes={"batch": (1, 2, 3)})
    with pytest.raises(ConfigError, match="engine.shapes = .* has the wrong type: expected a mapping of strings"):
        EngineConfig(shapes={"sequence": "1,2,3"})


def test_the_target_script_keeps_the_bundles_profile():
    from nmdeploy.engine.target_script import _profile_shapes

    profile = {"ids": {"min": [1, 4], "opt": [8, 64], "max": [32, 128]}}
    assert _profile_shapes(profile, None) == [{"ids": (1, 4)}, {"ids": (8, 64)}, {"ids": (32, 128)}]
    assert _profile_shapes(profile, (2, 4, 16)) == [{"ids": (2, 4)}, {"ids": (4, 64)}, {"ids": (16, 128)}]
    assert _profile_shapes({}, None) == [None, None, None]

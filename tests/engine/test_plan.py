"""Build flags as a pure function of the TensorRT API: one table per API generation.

The enum member lists are the documented bindings (read from the tensorrt-cu12-bindings
wheels 10.16.1.11 and 11.4.0.106; docs/design/tensorrt.md §1). No TensorRT is imported or imitated: capabilities are data.
"""

from __future__ import annotations

import types

import pytest

from nmdeploy.engine.config import EngineConfig
from nmdeploy.engine.plan import plan_build
from nmdeploy.engine.trt import Capabilities, detect_capabilities
from nmdeploy.errors import ConfigError

FLAGS_11 = frozenset(
    {
        "DEBUG",
        "GPU_FALLBACK",
        "REFIT",
        "DISABLE_TIMING_CACHE",
        "EDITABLE_TIMING_CACHE",
        "TF32",
        "SPARSE_WEIGHTS",
        "SAFETY_SCOPE",
        "DIRECT_IO",
        "VERSION_COMPATIBLE",
        "EXCLUDE_LEAN_RUNTIME",
        "ERROR_ON_TIMING_CACHE_MISS",
        "DISABLE_COMPILATION_CACHE",
        "STRIP_PLAN",
        "REFIT_IDENTICAL",
        "WEIGHT_STREAMING",
        "REFIT_INDIVIDUAL",
        "STRICT_NANS",
        "MONITOR_MEMORY",
        "DISTRIBUTIVE_INDEPENDENCE",
    }
)
FLAGS_10 = FLAGS_11 | {
    "FP16",
    "BF16",
    "INT8",
    "FP8",
    "INT4",
    "FP4",
    "OBEY_PRECISION_CONSTRAINTS",
    "PREFER_PRECISION_CONSTRAINTS",
    "REJECT_EMPTY_ALGORITHMS",
    "WEIGHTLESS",
}
LEVELS = frozenset({"NONE", "AMPERE_PLUS", "SAME_COMPUTE_CAPABILITY"})
TRT10 = Capabilities(
    "10.16.1.11",
    FLAGS_10,
    frozenset({"EXPLICIT_BATCH", "STRONGLY_TYPED", "PREFER_AOT_PYTHON_PLUGINS", "PREFER_JIT_PYTHON_PLUGINS"}),
    LEVELS,
    True,
)
TRT11 = Capabilities(
    "11.4.0.106",
    FLAGS_11,
    frozenset({"STRONGLY_TYPED", "PREFER_AOT_PYTHON_PLUGINS", "PREFER_JIT_PYTHON_PLUGINS"}),
    LEVELS,
    False,
)


def test_generation_is_detected_from_features_not_the_version():
    assert (TRT10.generation, TRT11.generation) == ("10", "11")
    enum = lambda names: types.SimpleNamespace(__members__=dict.fromkeys(names))  # noqa: E731
    module = types.SimpleNamespace(
        __version__="10.99",
        BuilderFlag=enum(FLAGS_11),
        NetworkDefinitionCreationFlag=enum(["STRONGLY_TYPED"]),
        HardwareCompatibilityLevel=enum(LEVELS),
    )
    caps = detect_capabilities(module)
    assert caps.generation == "11" and not caps.has_calibrators and caps.version == "10.99"


# (capabilities, options, has_qdq) -> (network flags, builder flags, strongly typed)
TABLE = [
    (TRT10, EngineConfig(), True, ((), ("INT8", "SPARSE_WEIGHTS"), False)),
    (TRT10, EngineConfig(fp16=True), True, ((), ("INT8", "FP16", "SPARSE_WEIGHTS"), False)),
    (TRT10, EngineConfig(strongly_typed=True), True, (("STRONGLY_TYPED",), ("SPARSE_WEIGHTS",), True)),
    (TRT10, EngineConfig(sparse=False), True, ((), ("INT8",), False)),
    (TRT10, EngineConfig(), False, ((), ("SPARSE_WEIGHTS",), False)),
    (TRT10, EngineConfig(fp16=True), False, ((), ("FP16", "SPARSE_WEIGHTS"), False)),
    (TRT10, EngineConfig(version_compatible=True), True, ((), ("INT8", "SPARSE_WEIGHTS", "VERSION_COMPATIBLE"), False)),
    (TRT11, EngineConfig(), True, ((), ("SPARSE_WEIGHTS",), True)),
    (TRT11, EngineConfig(sparse=False), True, ((), (), True)),
    (TRT11, EngineConfig(), False, ((), ("SPARSE_WEIGHTS",), True)),
    (
        TRT11,
        EngineConfig(strongly_typed=True),
        True,
        ((), ("SPARSE_WEIGHTS",), True),
    ),  # always strongly typed; flag not set
    (TRT11, EngineConfig(version_compatible=True), True, ((), ("SPARSE_WEIGHTS", "VERSION_COMPATIBLE"), True)),
]


@pytest.mark.parametrize("caps, options, qdq, expected", TABLE)
def test_flag_table(caps, options, qdq, expected):
    plan = plan_build(caps, options, qdq)
    assert (plan.network_flags, plan.builder_flags, plan.strongly_typed) == expected
    assert plan.generation == caps.generation and plan.hardware_level == "NONE"


def test_hardware_levels_and_notes():
    assert plan_build(TRT11, EngineConfig(hardware_compat="ampere_plus"), True).hardware_level == "AMPERE_PLUS"
    assert plan_build(TRT10, EngineConfig(hardware_compat="same_cc"), True).hardware_level == "SAME_COMPUTE_CAPABILITY"
    assert any("TF32 sparse tactics are unverified" in n for n in plan_build(TRT11, EngineConfig(), False).notes)
    assert any("strongly typed (TensorRT 11)" in n for n in plan_build(TRT11, EngineConfig(), True).notes)


@pytest.mark.parametrize(
    "caps, options, message",
    [
        (
            TRT11,
            EngineConfig(fp16=True),
            "TensorRT 11.4.0.106 has no FP16 flag (every network is strongly typed); convert the ONNX "
            "to mixed precision first: python -m modelopt.onnx.autocast",
        ),
        (TRT10, EngineConfig(fp16=True, strongly_typed=True), "fp16 and strongly_typed exclude each other"),
        (
            Capabilities("8.6", frozenset({"INT8"}), frozenset(), frozenset({"NONE"}), True),
            EngineConfig(),
            "TensorRT 8.6 has no BuilderFlag.SPARSE_WEIGHTS, needed for sparse kernels",
        ),
        (
            Capabilities("10.0", FLAGS_10, frozenset(), frozenset({"NONE"}), True),
            EngineConfig(hardware_compat="ampere_plus"),
            "TensorRT 10.0 has no HardwareCompatibilityLevel.AMPERE_PLUS; use hardware_compat none",
        ),
    ],
)
def test_impossible_plans_are_one_line_errors(caps, options, message):
    with pytest.raises(ConfigError) as info:
        plan_build(caps, options, True)
    assert str(info.value).startswith(message)


@pytest.mark.parametrize(
    "options, message",
    [
        (
            {"hardware_compat": "turing"},
            "hardware compatibility 'turing' is unknown; use one of none, ampere_plus, same_cc",
        ),
        ({"workspace_mb": 0}, "workspace 0 MiB must be at least 1"),
    ],
)
def test_settings_no_tensorrt_could_build_fail_when_made(options, message):
    """Checked once, by the config itself, before any TensorRT is looked at."""
    key = next(iter(options))
    with pytest.raises(ConfigError) as info:
        EngineConfig(**options)
    assert str(info.value).startswith(f"engine.{key}: {message}")

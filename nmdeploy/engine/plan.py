"""The build plan: which network and builder flags to set, as a pure function of the API.

Kept free of TensorRT so that every decision is tested on any machine, one table per API
generation (docs/design/tensorrt.md §1): on 10.x a Q/DQ graph needs ``BuilderFlag.INT8`` (weak typing,
optionally ``FP16`` for the unquantised layers) unless the network is created
``STRONGLY_TYPED``; on 11.x every network is strongly typed and there are no precision flags,
so FP16 elsewhere means converting the ONNX first (ModelOpt AutoCast).
"""

from __future__ import annotations

from dataclasses import dataclass

from nmdeploy.engine.config import HARDWARE_COMPAT, EngineConfig
from nmdeploy.engine.trt import Capabilities
from nmdeploy.errors import ConfigError

__all__ = ["BuildPlan", "plan_build"]


@dataclass(frozen=True)
class BuildPlan:
    generation: str
    network_flags: tuple[str, ...]
    builder_flags: tuple[str, ...]
    hardware_level: str
    strongly_typed: bool
    notes: tuple[str, ...]


def _require(caps: Capabilities, flag: str, why: str) -> None:
    if flag not in caps.builder_flags:
        raise ConfigError(f"TensorRT {caps.version} has no BuilderFlag.{flag}, needed for {why}")


def plan_build(caps: Capabilities, options: EngineConfig, has_qdq: bool) -> BuildPlan:
    """Flags for building a network (``has_qdq``: the ONNX carries Q/DQ nodes) with ``options``.

    ``options`` is already valid in itself; what is refused here is what this TensorRT cannot do.
    """
    level = HARDWARE_COMPAT[options.hardware_compat]
    if level != "NONE" and level not in caps.hardware_levels:
        raise ConfigError(
            f"TensorRT {caps.version} has no HardwareCompatibilityLevel.{level}; use hardware_compat none"
        )
    network: list[str] = []
    builder: list[str] = []
    notes: list[str] = []
    if caps.generation == "11":
        if options.fp16:
            raise ConfigError(
                f"TensorRT {caps.version} has no FP16 flag (every network is strongly typed); convert the ONNX to mixed "
                "precision first: python -m modelopt.onnx.autocast --onnx_path model.onnx --output_path model.fp16.onnx"
            )
        strongly_typed = True
        notes.append("strongly typed (TensorRT 11): layers run in the types the ONNX gives them")
    elif options.strongly_typed:
        if "STRONGLY_TYPED" not in caps.network_flags:
            raise ConfigError(
                f"TensorRT {caps.version} has no NetworkDefinitionCreationFlag.STRONGLY_TYPED; drop strongly_typed"
            )
        if options.fp16:
            raise ConfigError(
                "fp16 and strongly_typed exclude each other: a strongly typed network takes its types from the ONNX"
            )
        network.append("STRONGLY_TYPED")
        strongly_typed = True
        notes.append("strongly typed network: no precision flags, types from the ONNX")
    else:
        strongly_typed = False
        if has_qdq:
            _require(caps, "INT8", "a Q/DQ graph on a weakly typed network")
            builder.append("INT8")
        if options.fp16:
            _require(caps, "FP16", "fp16")
            builder.append("FP16")
        if not has_qdq:
            notes.append("no Q/DQ nodes: the engine runs in FP32/TF32" + (" and FP16" if options.fp16 else ""))
    if options.sparse:
        _require(caps, "SPARSE_WEIGHTS", "sparse kernels")
        builder.append("SPARSE_WEIGHTS")
        if not has_qdq and not options.fp16:
            notes.append("sparse kernels are documented for FP16 and INT8; TF32 sparse tactics are unverified")
    if options.version_compatible:
        _require(caps, "VERSION_COMPATIBLE", "a version-compatible plan")
        builder.append("VERSION_COMPATIBLE")
    return BuildPlan(caps.generation, tuple(network), tuple(builder), level, strongly_typed, tuple(notes))

"""``build_engine``: ONNX -> TensorRT plan with 2:4 sparse weights, and the layer report.

The build uses TensorRT's own Python API (network from the ONNX parser, builder config,
``build_serialized_network``), not Polygraphy's loaders, for three reasons: the target
bundle must build with nothing but ``tensorrt``, ``onnx`` and ``numpy``; the
``(Sparsity) ...`` lines that say which layers got sparse kernels arrive only through an
``ILogger`` we own; and Polygraphy's ``CreateConfig(int8=True)`` / calibrator path is dead on
TensorRT 11. Polygraphy's ``TrtRunner`` does the timing (``nmdeploy.engine.bench``).
Flags come from :func:`nmdeploy.engine.plan.plan_build`, a pure function of the detected API.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from nmdeploy import schemas
from nmdeploy._atomic import write_atomic
from nmdeploy._onnx import has_qdq
from nmdeploy.engine.config import EngineConfig
from nmdeploy.engine.layers import LayerRow, join_layers, parse_build_log, parse_inspector
from nmdeploy.engine.plan import BuildPlan, plan_build
from nmdeploy.engine.shapes import Shape, ShapeProfile, make_profile, onnx_inputs
from nmdeploy.engine.trt import detect_capabilities, probe
from nmdeploy.errors import ConfigError, EngineBuildError, InputError

__all__ = ["EngineReport", "build_engine", "engine_files", "has_qdq", "load_verify"]

log = logging.getLogger("nmdeploy")


@dataclass(frozen=True)
class EngineReport:
    plan: str
    tensorrt: str
    build: BuildPlan
    profile: ShapeProfile
    seconds: float
    inspector_schema: str
    eligible: tuple[str, ...] | None
    picked: tuple[str, ...] | None
    layers: tuple[LayerRow, ...]
    dense_twin: str | None = None
    notes: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": schemas.ENGINE,
            "plan": self.plan,
            "tensorrt": self.tensorrt,
            "build": asdict(self.build),
            "profile": self.profile.to_dict(),
            "seconds": round(self.seconds, 3),
            "inspector_schema": self.inspector_schema,
            "sparsity_log": {"eligible": self.eligible, "picked": self.picked},
            "layers": [row.to_dict() for row in self.layers],
            "dense_twin": self.dense_twin,
            "notes": list(self.notes),
        }


def engine_files(plan: str | Path, config: EngineConfig) -> dict[str, Path]:
    """What building ``plan`` with ``config`` writes: the plan, its report beside it, the dense twin."""
    plan = Path(plan)
    files = {"plan": plan, "report": plan.with_name("engine_report.json")}
    if config.dense_twin and config.sparse:
        files["twin"] = plan.with_name(plan.stem + ".dense" + plan.suffix)
    return files


def load_verify(verify: str | Path | Mapping[str, Any] | None, onnx_path: Path) -> Mapping[str, Any]:
    """``verify.json`` as a dict; computed from the ONNX when not given (needs the full nmdeploy)."""
    if isinstance(verify, Mapping):
        return verify
    if verify is not None:
        if not Path(verify).is_file():
            raise InputError(
                f"{verify}: no such verify report; write one with nmdeploy verify --json, or leave out --verify"
            )
        try:
            report = json.loads(Path(verify).read_text())
        except (OSError, ValueError) as exc:
            raise InputError(
                f"{verify} is not a readable verify.json ({type(exc).__name__}); write one with nmdeploy verify --json"
            ) from None
        if (
            not isinstance(report, Mapping)
            or report.get("schema") != schemas.VERIFY
            or not isinstance(report.get("layers"), list)
        ):
            raise InputError(
                f"{verify} is not a verify report ({schemas.VERIFY}, with its layers); write one with nmdeploy verify --json"
            )
        return report
    try:
        from nmdeploy.export.verify import verify_onnx
    except ImportError:  # the target bundle ships verify.json instead of the verifier
        return {"layers": []}
    return verify_onnx(onnx_path).to_dict()


def _logger(trt: Any) -> Any:
    """An ILogger that keeps INFO-and-above messages (the sparsity lines are INFO) and forwards warnings."""

    class Capture(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.lines: list[str] = []
            self.errors: list[str] = []

        def log(self, severity: Any, msg: str) -> None:
            level = int(severity)  # INTERNAL_ERROR 0, ERROR 1, WARNING 2, INFO 3, VERBOSE 4
            if level <= 3:
                self.lines.append(msg)
            if level <= 1:
                self.errors.append(msg)
                log.error("TensorRT: %s", msg)
            elif level == 2:
                log.warning("TensorRT: %s", msg)
            else:
                log.debug("TensorRT: %s", msg)

    return Capture()


def _build_once(
    trt: Any, onnx_path: Path, profile: ShapeProfile, plan: BuildPlan, options: EngineConfig, timing_cache: Path | None
) -> tuple[bytes, list[str]]:
    logger = _logger(trt)
    builder = trt.Builder(logger)
    flags = 0
    for name in plan.network_flags:
        flags |= 1 << int(getattr(trt.NetworkDefinitionCreationFlag, name))
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise EngineBuildError(
            f"TensorRT's ONNX parser rejected {onnx_path}: {errors[0] if errors else 'no error given'}"
        )
    config = builder.create_builder_config()
    for name in plan.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, name))
    if plan.hardware_level != "NONE":
        config.hardware_compatibility_level = getattr(trt.HardwareCompatibilityLevel, plan.hardware_level)
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED  # the inspector then names tactics and ONNX nodes
    if options.workspace_mb is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mb << 20)
    trt_profile = builder.create_optimization_profile()
    for name, (low, opt, high) in profile.inputs.items():
        trt_profile.set_shape(name, low, opt, high)
    config.add_optimization_profile(trt_profile)
    cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache and timing_cache.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        last = logger.errors[-1] if logger.errors else "no error message"
        raise EngineBuildError(f"TensorRT could not build {onnx_path}: {last}")
    if timing_cache is not None:
        write_atomic(timing_cache, bytes(config.get_timing_cache().serialize()))
    return bytes(serialized), logger.lines


def _inspect(trt: Any, plan_bytes: bytes) -> str:
    runtime = trt.Runtime(trt.Logger(trt.Logger.ERROR))
    engine = runtime.deserialize_cuda_engine(plan_bytes)
    return engine.create_engine_inspector().get_engine_information(trt.LayerInformationFormat.JSON)


def build_engine(
    onnx: str | Path,
    out: str | Path,
    config: EngineConfig | None = None,
    *,
    min_shapes: Mapping[str, Shape] | None = None,
    opt_shapes: Mapping[str, Shape] | None = None,
    max_shapes: Mapping[str, Shape] | None = None,
    verify: str | Path | Mapping[str, Any] | None = None,
    report_path: str | Path | None = None,
    samples: str | Path | None = None,
) -> EngineReport:
    """Build ``onnx`` into the plan ``out`` with ``config`` and write ``engine_report.json`` beside it.

    Shapes: explicit ``min/opt/max_shapes`` per input, else the config's batch range on a
    dynamic dim 0. The config's timing cache is read when present and saved after the
    build; its ``dense_twin`` also builds ``<out>.dense.plan`` without SPARSE_WEIGHTS for
    ``nmdeploy bench``. ``samples``: a folder that also gets TensorRT's raw inspector JSON and
    build log (``engine_info_<version>.json``, ``build_<version>.log``), the texts the layer-report
    tests are checked against. No ``config``: the defaults. Raises
    :class:`~nmdeploy.errors.EngineUnavailable` where TensorRT or a GPU is missing.
    """
    config = config or EngineConfig()
    onnx_path, out = Path(onnx), Path(out)
    if not onnx_path.is_file():
        raise InputError(f"{onnx_path}: no such ONNX file")
    if out.suffix not in (".plan", ".engine"):
        raise ConfigError(f"engine path {out} should end in .plan or .engine")
    profile = make_profile(onnx_inputs(onnx_path), config.batch, min_shapes, opt_shapes, max_shapes, config.shapes)
    qdq = has_qdq(onnx_path)
    verify_data = load_verify(verify, onnx_path)
    trt = probe()
    caps = detect_capabilities(trt)
    plan = plan_build(caps, config, qdq)
    cache = Path(config.timing_cache) if config.timing_cache is not None else None
    began = time.perf_counter()
    plan_bytes, lines = _build_once(trt, onnx_path, profile, plan, config, cache)
    seconds = time.perf_counter() - began
    write_atomic(out, plan_bytes)
    inspector = _inspect(trt, plan_bytes)
    schema, layers = parse_inspector(inspector)
    sparsity = parse_build_log(lines)
    if samples is not None:
        Path(samples).mkdir(parents=True, exist_ok=True)
        write_atomic(Path(samples) / f"engine_info_{caps.version}.json", inspector)
        write_atomic(Path(samples) / f"build_{caps.version}.log", "\n".join(lines) + "\n")
    twin = None
    files = engine_files(out, config)
    if "twin" in files:
        dense_plan = plan_build(caps, dataclasses.replace(config, sparse=False), qdq)
        twin_bytes, _ = _build_once(trt, onnx_path, profile, dense_plan, config, cache)
        twin = str(files["twin"])
        write_atomic(twin, twin_bytes)
    report = EngineReport(
        str(out),
        caps.version,
        plan,
        profile,
        seconds,
        schema,
        sparsity.eligible,
        sparsity.picked,
        tuple(join_layers(verify_data, layers, sparsity)),
        twin,
        plan.notes,
    )
    write_atomic(
        Path(report_path) if report_path else files["report"],
        json.dumps(report.to_dict(), indent=2) + "\n",
    )
    return report

"""Build the engine here when TensorRT and a GPU are present, else write the target bundle.

One function serves ``nmdeploy engine`` and the engine stage of ``nmdeploy build``: the
shapes and options are checked first (so bad input fails the same way on every machine),
then the build is tried, and :class:`EngineUnavailable` turns into a bundle for the target.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nmdeploy.engine.build import EngineReport, build_engine, engine_files, has_qdq, load_verify
from nmdeploy.engine.bundle import write_bundle
from nmdeploy.engine.config import EngineConfig
from nmdeploy.engine.shapes import Shape, make_profile, onnx_inputs
from nmdeploy.errors import ConfigError, EngineUnavailable, InputError

__all__ = ["DeployResult", "build_or_bundle"]


@dataclass(frozen=True)
class DeployResult:
    report: EngineReport | None  # the engine was built here
    bundle: Path | None  # or the target bundle was written
    reason: str  # why there is no engine here, and the fix ("" when built)
    files: tuple[Path, ...]
    problem: str = ""  # the reason without the fix: what is missing here


def build_or_bundle(
    onnx: str | Path,
    plan: str | Path,
    bundle: str | Path,
    config: EngineConfig,
    *,
    min_shapes: Mapping[str, Shape] | None = None,
    opt_shapes: Mapping[str, Shape] | None = None,
    max_shapes: Mapping[str, Shape] | None = None,
    verify: str | Path | Mapping[str, Any] | None = None,
    manifest: Mapping[str, Any] | None = None,
) -> DeployResult:
    onnx = Path(onnx)
    if not onnx.is_file():
        raise InputError(f"{onnx}: no such ONNX file")
    if Path(plan).suffix not in (".plan", ".engine"):
        raise ConfigError(f"engine path {plan} should end in .plan or .engine")
    profile = make_profile(
        onnx_inputs(onnx), config.batch, min_shapes, opt_shapes, max_shapes, config.shapes
    )  # bad shapes fail here, anywhere
    verify_data = load_verify(verify, onnx)
    try:
        report = build_engine(
            onnx, plan, config, min_shapes=min_shapes, opt_shapes=opt_shapes, max_shapes=max_shapes, verify=verify_data
        )
    except EngineUnavailable as exc:
        files = write_bundle(bundle, onnx, profile, config, qdq=has_qdq(onnx), verify=verify_data, manifest=manifest)
        return DeployResult(None, Path(bundle), str(exc), tuple(files), exc.problem)
    return DeployResult(report, None, "", tuple(engine_files(report.plan, config).values()))

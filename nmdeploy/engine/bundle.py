"""The target bundle: everything needed to build the engine on the GPU it will run on.

Engines are tied to the GPU's compute capability and the TensorRT version (docs/design/tensorrt.md §7),
so where nmdeploy runs without TensorRT or a GPU, the engine stage writes a folder to copy to
the target instead: the ONNX, ``verify.json``, the manifest, ``bundle.json`` (the settings),
``build_engine.py`` with the engine code it needs (no torch), ``build_engine.sh`` (the same
build with trtexec, for TensorRT 10 and 11) and a README per target. The folder is written
beside its final place and renamed into it, so a half-written bundle never appears.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nmdeploy._atomic import staged_folder
from nmdeploy.engine.config import EngineConfig
from nmdeploy.engine.shapes import ShapeProfile
from nmdeploy.outputs import onnx_files

__all__ = ["BUNDLED_CODE", "MARKER", "trtexec_script", "write_bundle"]

_PACKAGE = Path(__file__).resolve().parents[1]  # nmdeploy/
# the modules build_engine.py imports, relative to nmdeploy/ (checked by a test: no torch among them)
BUNDLED_CODE = (
    "__init__.py",
    "_lazy.py",
    "errors.py",
    "config.py",
    "schemas.py",
    "timing.py",
    "_atomic.py",
    "_onnx.py",
    "engine/__init__.py",
    "engine/config.py",
    "engine/trt.py",
    "engine/plan.py",
    "engine/shapes.py",
    "engine/layers.py",
    "engine/build.py",
    "engine/bench.py",
    "engine/triton.py",
)
MARKER = "bundle.json"  # the settings file every bundle holds: what tells a bundle folder from any other
_TRTEXEC_LEVEL = {"none": None, "ampere_plus": "ampere+", "same_cc": "sameComputeCapability"}


def trtexec_script(onnx_name: str, profile: ShapeProfile, options: EngineConfig, qdq: bool) -> str:
    """``build_engine.sh``: the trtexec commands equivalent to build_engine.py, for TensorRT 10 and 11."""
    common = [
        f"--onnx={onnx_name}",
        *profile.trtexec_args(),
        "--timingCacheFile=timing.cache",
        "--profilingVerbosity=detailed",
        "--verbose",
    ]
    if options.workspace_mb:
        common.append(f"--memPoolSize=workspace:{options.workspace_mb}M")
    level = _TRTEXEC_LEVEL[options.hardware_compat]
    if level:
        common.append(f"--hardwareCompatibilityLevel={level}")
    if options.version_compatible:
        common.append("--versionCompatible")
    sparse = ["--sparsity=enable"] if options.sparse else []
    ten = (
        ["--stronglyTyped"]
        if options.strongly_typed
        else (["--int8"] if qdq else []) + (["--fp16"] if options.fp16 else [])
    )

    def line(extra: list[str], plan: str, layers: str, log: str) -> str:
        args = " ".join(
            shlex.quote(a) for a in [*common, *extra, f"--saveEngine={plan}", f"--exportLayerInfo={layers}"]
        )
        return f"  trtexec {args} 2>&1 | tee {log}"

    lines = [
        "#!/usr/bin/env bash",
        "# The engine build of build_engine.py with trtexec. TensorRT 11 is strongly typed (no precision flags);",
        "# TensorRT 10 needs --int8 for a Q/DQ graph (weak typing). Afterwards:",
        "#   python build_engine.py --from-trtexec layers.json build.log   # engine_report.json from the trtexec output",
        "set -euo pipefail",
        'cd "$(dirname "$0")"',
        "major=${TRT_MAJOR:-$(python3 -c 'import tensorrt; print(tensorrt.__version__.split(\".\")[0])' 2>/dev/null || echo 11)}",
        'if [ "$major" -ge 11 ]; then',
        line(sparse, "model.plan", "layers.json", "build.log"),
    ]
    if options.dense_twin and options.sparse:
        lines.append(line([], "model.dense.plan", "layers.dense.json", "build.dense.log"))
    lines += ["else", line([*ten, *sparse], "model.plan", "layers.json", "build.log")]
    if options.dense_twin and options.sparse:
        lines.append(line(ten, "model.dense.plan", "layers.dense.json", "build.dense.log"))
    lines += ["fi", ""]
    return "\n".join(lines)


def _readme(onnx_name: str, profile: ShapeProfile) -> str:
    shapes = "; ".join(f"`{name}` {'/'.join('x'.join(map(str, s)) for s in sh)}" for name, sh in profile.inputs.items())
    return f"""# nmdeploy target bundle

Build the sparse TensorRT engine of `{onnx_name}` on the GPU it will run on (engines are tied to
the GPU's compute capability and to the TensorRT version). Shapes min/opt/max: {shapes}.
`verify.json` is nmdeploy's 2:4 check of the weights; `manifest.json` records how the model was made.

    python3 build_engine.py            # model.plan and engine_report.json; with the dense twin (bundle.json's
                                       # dense_twin, or --dense-twin) also model.dense.plan and sparse vs dense timing
    bash build_engine.sh               # the same with trtexec; then: python3 build_engine.py --from-trtexec layers.json build.log
    python3 build_engine.py --triton ../triton   # in a build folder: also put the plan into its Triton repository

`build_engine.py` needs `tensorrt`, `onnx` and `numpy` (timing also `polygraphy`); the engine code
is in `nmdeploy/` beside it. `engine_report.json` lists per layer: 2:4 verified, eligible for sparse
kernels, and whether TensorRT picked one (it keeps a dense kernel when that is faster, usually
below ~256 channels).

## A100 / A10 / RTX 30xx server (TensorRT 11 from PyPI)

    pip install tensorrt onnx numpy polygraphy   # TensorRT 11.x wheels for CUDA 12/13 on x86_64 and SBSA
    python3 build_engine.py

TensorRT 11 is strongly typed: the Q/DQ nodes decide what runs in INT8, the rest runs as the ONNX says.

## Jetson Orin on JetPack 6 (TensorRT 10.x)

Use the TensorRT that JetPack ships (a pip wheel may lack sm_87); `pip install onnx polygraphy`.

    python3 build_engine.py            # sets BuilderFlag.INT8 for the Q/DQ graph
    python3 build_engine.py --fp16     # also FP16 for the layers left in float

## Jetson Orin on JetPack 7.2.2 or newer (TensorRT 11.x)

JetPack >= 7.2.2 brings TensorRT 11 to AGX Orin; build as on a server: `python3 build_engine.py`.
"""


def _copy_code(dest: Path) -> None:
    for rel in BUNDLED_CODE:
        target = dest / "nmdeploy" / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(_PACKAGE / rel, target)
    shutil.copyfile(Path(__file__).with_name("target_script.py"), dest / "build_engine.py")


def write_bundle(
    dest: str | Path,
    onnx: str | Path,
    profile: ShapeProfile,
    options: EngineConfig,
    *,
    qdq: bool,
    verify: Mapping[str, Any] | None = None,
    manifest: Mapping[str, Any] | None = None,
) -> list[Path]:
    """Write the bundle folder ``dest`` (replacing an older one); returns its files.

    ``bundle.json`` holds the ONNX file name, every field of ``options`` (the
    ``EngineConfig`` the target builds with), the batch range and the shape profile.
    """
    dest, onnx = Path(dest), Path(onnx)
    with staged_folder(dest) as stage:
        shutil.copyfile(onnx, stage / onnx.name)
        for data in onnx_files(onnx)[1:]:  # external data (a model past 2 GB) travels with it; copied, since
            shutil.copyfile(data, stage / data.name)  # onnx refuses a data file with several hard links
        settings = {
            "onnx": onnx.name,
            "batch": list(options.batch),
            **dataclasses.asdict(options),
            "profile": profile.to_dict(),
        }
        (stage / MARKER).write_text(json.dumps(settings, indent=2) + "\n")
        if verify is not None:
            (stage / "verify.json").write_text(json.dumps(verify, indent=2) + "\n")
        if manifest is not None:
            (stage / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        (stage / "build_engine.sh").write_text(trtexec_script(onnx.name, profile, options, qdq))
        os.chmod(stage / "build_engine.sh", 0o755)
        (stage / "README.md").write_text(_readme(onnx.name, profile))
        _copy_code(stage)
    return sorted(p for p in dest.rglob("*") if p.is_file())

"""The target bundle: its files, trtexec lines for TensorRT 10 and 11, and a build_engine.py that
answers without TensorRT or torch (what a target box without nmdeploy installed has)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

from nmdeploy.engine.bundle import BUNDLED_CODE, trtexec_script, write_bundle
from nmdeploy.engine.config import EngineConfig
from nmdeploy.engine.shapes import make_profile, onnx_inputs
from tests.engine.test_layers import SAMPLES, STATUSES, VERIFY

BLOCKED = ("torch", "onnxruntime", "tensorrt", "polygraphy")


def _run_in_bundle(bundle: Path, *args: str) -> subprocess.CompletedProcess:
    """Run bundle/build_engine.py from another folder, with torch, onnxruntime, tensorrt and polygraphy unimportable."""
    code = textwrap.dedent(f"""
        import runpy, sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {BLOCKED!r}:
                    raise ImportError("No module named " + repr(name))
        sys.meta_path.insert(0, Block())
        sys.argv = [{str(bundle / "build_engine.py")!r}, *{list(args)!r}]
        runpy.run_path(sys.argv[0], run_name="__main__")
    """)
    env = {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, "COLUMNS": "400"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd="/", env=env)


def _bundle(tmp_path: Path, cnn_onnx: Path, **options) -> tuple[Path, list[Path]]:
    profile = make_profile(onnx_inputs(cnn_onnx), (1, 8, 64))
    dest = tmp_path / "target-bundle"
    config = EngineConfig(**options, dense_twin=True, min_batch=1, opt_batch=8, max_batch=64)
    files = write_bundle(dest, cnn_onnx, profile, config, qdq=True, verify=VERIFY, manifest={"schema": "m"})
    return dest, files


def test_bundle_contents(tmp_path, cnn_onnx):
    dest, files = _bundle(tmp_path, cnn_onnx, workspace_mb=512, hardware_compat="ampere_plus")
    names = sorted(p.relative_to(dest).as_posix() for p in files)
    assert names == sorted(
        [
            "README.md",
            "build_engine.py",
            "build_engine.sh",
            "bundle.json",
            cnn_onnx.name,
            "manifest.json",
            "verify.json",
            *(f"nmdeploy/{rel}" for rel in BUNDLED_CODE),
        ]
    )
    assert (dest / cnn_onnx.name).read_bytes() == cnn_onnx.read_bytes()
    settings = json.loads((dest / "bundle.json").read_text())
    assert (
        settings["batch"] == [1, 8, 64]
        and settings["workspace_mb"] == 512
        and settings["hardware_compat"] == "ampere_plus"
    )
    assert settings["profile"]["x"]["opt"] == [8, 1, 28, 28]
    assert json.loads((dest / "verify.json").read_text()) == VERIFY
    assert os.access(dest / "build_engine.sh", os.X_OK)
    readme = (dest / "README.md").read_text()
    for heading in (
        "## A100 / A10 / RTX 30xx server (TensorRT 11 from PyPI)",
        "## Jetson Orin on JetPack 6 (TensorRT 10.x)",
        "## Jetson Orin on JetPack 7.2.2 or newer (TensorRT 11.x)",
    ):
        assert heading in readme
    assert [p.name for p in tmp_path.iterdir()] == ["target-bundle"]  # no staging folder left behind
    dest2, _ = _bundle(tmp_path, cnn_onnx)  # a second bundle replaces the first
    assert json.loads((dest2 / "bundle.json").read_text())["workspace_mb"] is None


def test_the_bundle_builds_with_every_engine_setting_it_was_given(tmp_path, cnn_onnx):
    """bundle.json carries the whole EngineConfig (fp16 and strongly_typed too), which build_engine.py starts from."""
    import dataclasses

    dest, _ = _bundle(tmp_path, cnn_onnx, fp16=True, workspace_mb=64, version_compatible=True)
    settings = json.loads((dest / "bundle.json").read_text())
    names = {f.name for f in dataclasses.fields(EngineConfig)}
    assert EngineConfig(**{k: v for k, v in settings.items() if k in names}) == EngineConfig(
        fp16=True, workspace_mb=64, version_compatible=True, dense_twin=True, min_batch=1, opt_batch=8, max_batch=64
    )


def test_trtexec_lines_for_both_generations(cnn_onnx):
    profile = make_profile(onnx_inputs(cnn_onnx), (1, 8, 64))
    script = trtexec_script("model.int8.onnx", profile, EngineConfig(workspace_mb=256, dense_twin=True), qdq=True)
    lines = [line.strip() for line in script.splitlines() if line.strip().startswith("trtexec")]
    assert len(lines) == 4  # sparse and dense twin, for TensorRT 11 then 10
    common = (
        "--onnx=model.int8.onnx --minShapes=x:1x1x28x28 --optShapes=x:8x1x28x28 --maxShapes=x:64x1x28x28 "
        "--timingCacheFile=timing.cache --profilingVerbosity=detailed --verbose --memPoolSize=workspace:256M"
    )
    assert (
        lines[0]
        == f"trtexec {common} --sparsity=enable --saveEngine=model.plan --exportLayerInfo=layers.json 2>&1 | tee build.log"
    )
    assert (
        lines[1]
        == f"trtexec {common} --saveEngine=model.dense.plan --exportLayerInfo=layers.dense.json 2>&1 | tee build.dense.log"
    )
    assert (
        lines[2]
        == f"trtexec {common} --int8 --sparsity=enable --saveEngine=model.plan --exportLayerInfo=layers.json 2>&1 | tee build.log"
    )
    assert "--int8" not in lines[0] and "--int8" in lines[3]
    typed = trtexec_script(
        "m.onnx",
        profile,
        EngineConfig(strongly_typed=True, hardware_compat="ampere_plus", version_compatible=True, dense_twin=False),
        qdq=True,
    )
    ten = [line for line in typed.splitlines() if "trtexec" in line and "--stronglyTyped" in line]
    assert len(ten) == 1 and "--hardwareCompatibilityLevel=ampere+" in ten[0] and "--versionCompatible" in ten[0]
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0  # the script parses


def test_build_engine_py_answers_without_tensorrt_or_torch(tmp_path, cnn_onnx):
    dest, _ = _bundle(tmp_path, cnn_onnx)
    helped = _run_in_bundle(dest, "--help")
    assert helped.returncode == 0, helped.stderr
    assert (
        helped.stdout.startswith("usage: build_engine.py") and "--from-trtexec LAYERS_JSON BUILD_LOG" in helped.stdout
    )
    assert f"(default: {dest / cnn_onnx.name})" in " ".join(helped.stdout.split())
    ran = _run_in_bundle(dest)
    assert ran.returncode == 3 and ran.stdout == ""
    assert ran.stderr == (
        "error: TensorRT is not importable here (No module named 'tensorrt'); pip install 'nmdeploy[trt]' "
        "(the tensorrt wheel) on an x86_64/SBSA server with an NVIDIA GPU, or use the TensorRT that "
        "JetPack ships on Jetson Orin\n"
    )


def test_report_from_trtexec_output(tmp_path, cnn_onnx):
    dest, _ = _bundle(tmp_path, cnn_onnx)
    shutil.copyfile(SAMPLES / "engine_info_11x.json", dest / "layers.json")
    shutil.copyfile(SAMPLES / "build_trtexec.log", dest / "build.log")
    ran = _run_in_bundle(dest, "--from-trtexec", str(dest / "layers.json"), str(dest / "build.log"))
    assert ran.returncode == 0, ran.stderr
    report = json.loads((dest / "engine_report.json").read_text())
    assert report["inspector_schema"] == "11.x" and [row["status"] for row in report["layers"]] == STATUSES
    assert "2:4 verified, eligible, sparse kernel picked" in ran.stdout


def test_the_target_puts_its_plan_into_the_build_s_triton_repository(tmp_path, cnn_onnx):
    from nmdeploy.engine.repository import write_repository
    from nmdeploy.engine.triton import PENDING_SUFFIX, ServeConfig

    dest, _ = _bundle(tmp_path, cnn_onnx)
    repo = write_repository(tmp_path / "triton", cnn_onnx, ServeConfig(), name="cnn", pending_plan=True).path
    missing = _run_in_bundle(dest, "--triton", str(tmp_path / "nowhere"))  # refused before any build
    assert missing.returncode == 2 and missing.stdout == ""
    assert missing.stderr == (
        f"error: --triton: {tmp_path / 'nowhere'}: no such Triton model repository; pass the triton/ folder nmdeploy wrote\n"
    )
    shutil.copyfile(SAMPLES / "engine_info_11x.json", dest / "layers.json")
    shutil.copyfile(SAMPLES / "build_trtexec.log", dest / "build.log")
    (dest / "model.plan").write_bytes(b"the plan trtexec wrote")  # build_engine.sh's --saveEngine
    ran = _run_in_bundle(
        dest, "--from-trtexec", str(dest / "layers.json"), str(dest / "build.log"), "--triton", str(repo)
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.endswith(f"wrote {repo / 'cnn/config.pbtxt'}\nwrote {repo / 'cnn/1/model.plan'}\n")
    assert (repo / "cnn/1/model.plan").read_bytes() == b"the plan trtexec wrote"
    assert not (repo / f"cnn{PENDING_SUFFIX}").exists() and (repo / "cnn/config.pbtxt").is_file()

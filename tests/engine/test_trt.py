"""nmdeploy.engine imports without TensorRT (or torch), and says what to install when it is needed."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from nmdeploy.engine.trt import import_tensorrt, probe
from nmdeploy.errors import EngineUnavailable


def test_the_engine_package_needs_neither_tensorrt_nor_torch():
    code = textwrap.dedent("""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("torch", "tensorrt", "onnxruntime", "polygraphy"):
                    raise ImportError("blocked: " + name)
        sys.meta_path.insert(0, Block())
        import nmdeploy.engine.build, nmdeploy.engine.bench, nmdeploy.engine.bundle, nmdeploy.engine.deploy, nmdeploy.engine.layers
        import nmdeploy.engine
        print(nmdeploy.engine.build_engine.__name__, sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "tensorrt")))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "build_engine []\n"


@pytest.mark.skipif(
    "tensorrt" in sys.modules or __import__("importlib").util.find_spec("tensorrt") is not None,
    reason="TensorRT is installed here",
)
def test_missing_tensorrt_names_the_extra_and_jetpack():
    for call in (import_tensorrt, probe):
        with pytest.raises(EngineUnavailable) as info:
            call()
        assert info.value.exit_code == 3
        assert str(info.value).startswith(
            "TensorRT is not importable here (No module named 'tensorrt'); pip install 'nmdeploy[trt]'"
        )
        assert "JetPack" in str(info.value)

"""Optional dependencies and config helpers."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from nmdeploy._deps import require
from nmdeploy.config import build_config, env_flag
from nmdeploy.errors import ConfigError, MissingDependencyError


def test_require_returns_the_module():
    import json

    assert require("json") is json


def test_require_names_the_extra_when_missing():
    with pytest.raises(MissingDependencyError) as info:
        require("nmdeploy_no_such_module", extra="trt")
    assert str(info.value) == (
        "nmdeploy_no_such_module is not importable (No module named 'nmdeploy_no_such_module'); install nmdeploy[trt]"
    )


def test_tensorrt_hint():
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        with pytest.raises(MissingDependencyError, match=r"install nmdeploy\[trt\] on a machine with an NVIDIA GPU"):
            require("tensorrt", extra="trt")
    else:
        pytest.skip("tensorrt is installed here")


@dataclass(frozen=True)
class _Cfg:
    a: int = 1
    b: str = "x"


def test_build_config_rejects_unknown_keys():
    assert build_config(_Cfg, {"a": 2}, "test") == _Cfg(2, "x")
    with pytest.raises(ConfigError, match=r"^unknown key\(s\) 'c', 'd' in recipe; allowed: a, b$"):
        build_config(_Cfg, {"c": 1, "d": 2}, "recipe")


@pytest.mark.parametrize(
    "value, expected", [(None, False), ("", False), ("1", True), ("TRUE", True), ("0", False), ("false", False)]
)
def test_env_flag(value, expected):
    assert env_flag(value, "X") is expected


def test_env_flag_rejects_other_words():
    with pytest.raises(ConfigError, match=r"environment variable X='on' is not a boolean; use 1/0/true/false"):
        env_flag("on", "X")

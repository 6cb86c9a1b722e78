"""Shared fixtures. GPU tests carry the ``gpu`` marker and are skipped when CUDA is absent."""

from __future__ import annotations

import importlib.util
import os

import pytest
from hypothesis import HealthCheck, settings

# CI replays the same examples every run (no flaky submissions); local runs explore new ones.
settings.register_profile(
    "nmdeploy",
    deadline=None,
    max_examples=80,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=os.environ.get("CI", "").lower() in ("1", "true"),
)
settings.register_profile("thorough", parent=settings.get_profile("nmdeploy"), max_examples=1500)
settings.load_profile(os.environ.get("NMDEPLOY_HYPOTHESIS", "nmdeploy"))  # "thorough" for long hunts


def _cuda_available() -> bool:
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return torch.cuda.is_available()


CUDA = _cuda_available()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU (torch.cuda.is_available() is False)")
    nightly = "nightly" in (config.getoption("-m") or "") or os.environ.get("NMDEPLOY_NIGHTLY") == "1"
    later = pytest.mark.skip(reason="nightly: run with -m nightly or NMDEPLOY_NIGHTLY=1")
    for item in items:
        if "gpu" in item.keywords and not CUDA:
            item.add_marker(skip)
        if "nightly" in item.keywords and not nightly:
            item.add_marker(later)


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def device(request: pytest.FixtureRequest) -> str:
    """Runs a test body on the CPU and, where a GPU exists, again on CUDA."""
    return request.param


from tests.hf_models import hf_text  # noqa: E402,F401  (session fixture: a tiny transformers folder and text files)
from tests.pipeline.tiny import task_files  # noqa: E402,F401  (session fixture shared by pipeline and cli tests)
from tests.quant.models import cnn_onnx, mlp_onnx  # noqa: E402,F401  (session fixtures shared by quant and cli tests)

"""Finding TensorRT: import it lazily, probe for a usable GPU, and read what its API offers.

TensorRT is an optional extra (``pip install 'nmdeploy[trt]'``; on Jetson it comes with
JetPack). Nothing here imports it at module level, so ``nmdeploy.engine`` imports on every
machine; :func:`import_tensorrt` raises :class:`EngineUnavailable` with the fix when it is
missing, and :func:`probe` also catches the "library present, no GPU/driver" case, which
TensorRT reports as ``pybind11::init(): factory function returned nullptr`` (docs/design/tensorrt.md §1.2).

The API generation is told by feature detection, never by parsing the version alone
(docs/design/tensorrt.md §1): 10.x still has ``BuilderFlag.INT8`` and the calibrators; 11.x has neither.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nmdeploy.errors import EngineUnavailable, first_line

__all__ = ["Capabilities", "INSTALL_HINT", "detect_capabilities", "import_tensorrt", "probe"]

INSTALL_HINT = (
    "pip install 'nmdeploy[trt]' (the tensorrt wheel) on an x86_64/SBSA server with an NVIDIA GPU, "
    "or use the TensorRT that JetPack ships on Jetson Orin"
)


def import_tensorrt() -> Any:
    """``import tensorrt``, or :class:`EngineUnavailable` naming the extra and the JetPack route."""
    try:
        import tensorrt
    except ImportError as exc:
        detail = first_line(exc)
        raise EngineUnavailable(f"TensorRT is not importable here ({detail})", INSTALL_HINT) from None
    return tensorrt


def probe() -> Any:
    """The tensorrt module once a Builder could be made (a GPU and a driver TensorRT can use)."""
    trt = import_tensorrt()
    try:
        trt.Builder(trt.Logger(trt.Logger.ERROR))
    except Exception as exc:  # no device / old driver: TensorRT's factory returns nullptr
        detail = first_line(exc)
        raise EngineUnavailable(
            f"TensorRT {getattr(trt, '__version__', '?')} is installed but cannot create a builder ({detail}): "
            "no NVIDIA GPU or a driver too old for it",
            "build on the target GPU",
        ) from None
    return trt


def _members(enum: Any) -> frozenset[str]:
    members = getattr(enum, "__members__", None)
    return frozenset(members) if members is not None else frozenset()


@dataclass(frozen=True)
class Capabilities:
    """What the installed TensorRT Python API offers, read by feature detection."""

    version: str
    builder_flags: frozenset[str]
    network_flags: frozenset[str]
    hardware_levels: frozenset[str]
    has_calibrators: bool

    @property
    def generation(self) -> str:
        """``"10"``: weak typing and precision flags exist; ``"11"``: strongly typed only."""
        return "10" if "INT8" in self.builder_flags else "11"


def detect_capabilities(trt: Any) -> Capabilities:
    """Read the enums of the ``tensorrt`` module (or anything with the same attribute layout)."""
    return Capabilities(
        version=str(getattr(trt, "__version__", "unknown")),
        builder_flags=_members(getattr(trt, "BuilderFlag", None)),
        network_flags=_members(getattr(trt, "NetworkDefinitionCreationFlag", None)),
        hardware_levels=_members(getattr(trt, "HardwareCompatibilityLevel", None)),
        has_calibrators=hasattr(trt, "IInt8EntropyCalibrator2"),
    )

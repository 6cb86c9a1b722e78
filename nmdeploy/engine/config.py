"""``EngineConfig``: how the TensorRT engine is built, one frozen dataclass.

What ``nmdeploy.engine.build_engine`` takes whole, a recipe's ``engine`` section and the
settings a target bundle carries (``bundle.json``). Standard library only: the bundle's
``build_engine.py`` imports it on the target without torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from nmdeploy.config import check_types, setting
from nmdeploy.errors import ConfigError

__all__ = ["EngineConfig", "HARDWARE_COMPAT", "check_batch", "check_shapes"]

# recipe / CLI spelling -> trt.HardwareCompatibilityLevel member
HARDWARE_COMPAT = {"none": "NONE", "ampere_plus": "AMPERE_PLUS", "same_cc": "SAME_COMPUTE_CAPABILITY"}


def check_batch(batch: tuple[int, int, int]) -> None:
    """Raise unless the profile's batch sizes are ``1 <= min <= opt <= max``."""
    if not 1 <= batch[0] <= batch[1] <= batch[2]:
        raise ConfigError(f"batch sizes min/opt/max = {'/'.join(map(str, batch))}: need 1 <= min <= opt <= max")


def check_shapes(shapes: Mapping[str, tuple[int, ...]] | None) -> None:
    """Raise unless every ``engine.shapes`` range is ``[min, opt, max]`` with ``1 <= min <= opt <= max``
    and none is the batch (which min/opt/max_batch set)."""
    for name, sizes in (shapes or {}).items():
        if len(sizes) != 3 or not 1 <= sizes[0] <= sizes[1] <= sizes[2]:
            raise ConfigError.setting(
                EngineConfig.SECTION,
                f"shapes: {name} = {list(sizes)}: give [min, opt, max] with 1 <= min <= opt <= max",
            )
        if name == "batch":
            raise ConfigError.setting(
                EngineConfig.SECTION, "shapes: batch is set by {section}.min_batch/opt_batch/max_batch; remove it here"
            )


@dataclass(frozen=True)
class EngineConfig:
    """TensorRT build settings; where TensorRT is missing, the bundle builds with them on the target."""

    SECTION: ClassVar[str] = "engine"

    enabled: bool = setting(
        True,
        "Run the engine stage: build the TensorRT plan here, or write `target-bundle/` where TensorRT or a GPU "
        "is missing.",
    )
    sparse: bool = setting(True, "Build with `SPARSE_WEIGHTS`.")
    min_batch: int = setting(1, "Smallest batch of the optimisation profile.")
    opt_batch: int = setting(32, "Batch the engine is tuned for.")
    max_batch: int = setting(256, "Largest batch of the profile.")
    shapes: dict[str, tuple[int, ...]] | None = setting(
        None,
        "min/opt/max of every dynamic dim besides the batch, by the ONNX's dim name, e.g. `{sequence: [1, 128, 256]}`; "
        "null = a build's text models get `sequence: [1, data.max_length, data.max_length]`.",
    )
    dense_twin: bool = setting(
        True, "Also build the engine without `SPARSE_WEIGHTS` (`model.dense.plan`) to time against."
    )
    workspace_mb: int | None = setting(None, "Workspace memory limit in MiB (none: TensorRT's default, the whole GPU).")
    timing_cache: str | None = setting(None, "Timing cache file, read when present and saved after the build.")
    hardware_compat: str = setting(
        "none",
        "Hardware compatibility: `none`, `ampere_plus` (one plan for Ampere and newer) or `same_cc` (for GPUs of the same compute capability).",
        choices=tuple(HARDWARE_COMPAT),
    )
    version_compatible: bool = setting(False, "A plan that runs on newer TensorRT of the same major version.")
    fp16: bool = setting(False, "TensorRT 10.x: FP16 for layers without Q/DQ (11.x: convert the ONNX instead).")
    strongly_typed: bool = setting(False, "TensorRT 10.x: a strongly typed network instead of the INT8 flag.")

    def __post_init__(self) -> None:
        check_types(self, self.SECTION)
        try:
            check_batch(self.batch)
        except ConfigError as exc:
            raise ConfigError.setting(
                self.SECTION,
                f"min_batch/opt_batch/max_batch = {'/'.join(map(str, self.batch))}: need 1 <= min <= opt <= max",
                plural=True,
                original=exc,
            ) from None
        check_shapes(self.shapes)
        if self.hardware_compat not in HARDWARE_COMPAT:
            raise ConfigError.setting(
                self.SECTION,
                f"hardware_compat: hardware compatibility {self.hardware_compat!r} is "
                f"unknown; use one of {', '.join(HARDWARE_COMPAT)}",
            )
        if self.workspace_mb is not None and self.workspace_mb < 1:
            raise ConfigError.setting(
                self.SECTION,
                f"workspace_mb: workspace {self.workspace_mb} MiB must be at least 1; use null for TensorRT's default",
            )

    @property
    def batch(self) -> tuple[int, int, int]:
        """(min, opt, max) batch of the profile's dynamic dim 0."""
        return (self.min_batch, self.opt_batch, self.max_batch)

"""``QuantizeConfig``: INT8 quantisation settings (``nmdeploy.quantize_int8``). Standard library only."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from nmdeploy.config import check_types, setting
from nmdeploy.errors import ConfigError

__all__ = ["METHODS", "QuantizeConfig"]

# onnxruntime's calibration methods, best first on our own measurement (benchmarks/RESULTS.md, "INT8")
METHODS = ("minmax", "entropy", "percentile")


DEFAULT_COUNT = 512  # calibration samples: ample for min-max ranges on ImageNet-size CNNs and BERT


@dataclass(frozen=True)
class QuantizeConfig:
    """INT8 Q/DQ settings; ``enabled``, ``calibration``, ``count`` and ``seed`` are for a build,
    which calibrates on a class-balanced draw of the data."""

    SECTION: ClassVar[str] = "quantize"

    enabled: bool = setting(True, "Run the INT8 stage.")
    method: str = setting(
        "minmax", "Calibration method (onnxruntime's): `minmax`, `entropy` or `percentile`.", choices=METHODS
    )
    calibration: str | None = setting(None, "Data SPEC the calibration set is drawn from (none: `data.train`).")
    count: int | None = setting(
        None,
        f"Calibration samples (class-balanced draw); null = {DEFAULT_COUNT}, or every sample when the "
        "calibration data holds fewer. A number larger than the data is an error.",
    )
    seed: int = setting(0, "Seed of the calibration draw.")
    percentile: float = setting(99.999, "Cut-off of the `percentile` method, in percent.")
    per_channel: bool = setting(True, "Per-output-channel weight scales (else one scale per layer).")
    output_qdq_on_sparse: bool = setting(
        False, "Also quantise the outputs of N:M layers (INT8-in/INT8-out sparse kernels; time both on your GPU)."
    )
    keep_float_weights: bool = setting(
        False, "Float weights behind Q→DQ instead of int8 initializers (TensorRT 8.6, JetPack 5-6)."
    )
    exclude: tuple[str, ...] = setting((), "Globs on ONNX node or weight names kept in float.")
    batch_size: int = setting(
        32,
        "Calibration batch size, at most: onnxruntime's calibrator holds every activation of a batch at once "
        "(BERT-base at 128 tokens: about 0.4 GB per sample), so batches are cut to fit 2 GiB of activations "
        "(estimated from the ONNX's shapes). Min-max ranges do not depend on it.",
    )

    def __post_init__(self) -> None:
        check_types(self, self.SECTION)
        if self.method not in METHODS:
            raise ConfigError.setting(
                self.SECTION,
                f"method = {self.method!r}: use one of {', '.join(METHODS)}",
                original=ConfigError(
                    f"calibration method {self.method!r} does not exist; use one of {', '.join(METHODS)}"
                ),
            )
        if not 0 < self.percentile <= 100:
            raise ConfigError.setting(
                self.SECTION, f"percentile: percentile {self.percentile} must be in (0, 100], e.g. 99.999"
            )
        if self.seed < 0:
            raise ConfigError.setting(self.SECTION, f"seed = {self.seed}: use an integer >= 0")
        if self.count is not None and self.count < 1:
            raise ConfigError.setting(
                self.SECTION, f"count = {self.count}: give a positive number of samples, e.g. 512"
            )
        if self.batch_size < 1:
            raise ConfigError.setting(self.SECTION, f"batch_size: batch size {self.batch_size} must be >= 1")

    def draw_count(self) -> int:
        """The calibration samples to draw: ``count``, or DEFAULT_COUNT when it is null (and then at
        most what the data holds: ``at_most`` of ``make_calibration_set``)."""
        return DEFAULT_COUNT if self.count is None else self.count

"""Latency rows: p50/p90/p99 and throughput of one model at one batch size, from its run times.

Shared by the TensorRT timing (``nmdeploy.engine.bench``, copied into the target bundle) and
the onnxruntime timing (``nmdeploy.quant.timing``). Standard library only.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from nmdeploy.errors import ConfigError

__all__ = ["BenchRow", "latency_stats"]


@dataclass(frozen=True)
class BenchRow:
    engine: str
    batch: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    throughput: float  # samples per second at the median latency

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _quantile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank quantile of an ascending list (what latency reports usually mean)."""
    index = min(
        len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values) - 1e-9) - 1)
    )  # -1e-9: 0.07 * 100 is 7.000000000000001
    return sorted_values[index]


def latency_stats(engine: str, batch: int, seconds: Sequence[float]) -> BenchRow:
    if not seconds:
        raise ConfigError("no timings to summarise; run at least one iteration")
    ordered = sorted(seconds)
    median = statistics.median(ordered)
    return BenchRow(
        engine,
        batch,
        1e3 * median,
        1e3 * _quantile(ordered, 0.90),
        1e3 * _quantile(ordered, 0.99),
        batch / median if median > 0 else float("inf"),
    )

"""Timing summaries (pure maths) and bench's refusal where TensorRT is absent."""

from __future__ import annotations

import importlib.util

import pytest

from nmdeploy.engine.bench import bench_engines, latency_stats
from nmdeploy.errors import ConfigError, EngineUnavailable


def test_latency_stats_nearest_rank():
    seconds = [i / 1000 for i in range(100, 0, -1)]  # 1..100 ms, unordered
    row = latency_stats("sparse", 32, seconds)
    assert (row.p50_ms, row.p90_ms, row.p99_ms) == pytest.approx((50.5, 90.0, 99.0))
    assert row.throughput == pytest.approx(32 / 0.0505)
    assert latency_stats("x", 1, [0.002]).p99_ms == pytest.approx(2.0)
    with pytest.raises(ConfigError, match="no timings to summarise"):
        latency_stats("x", 1, [])


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here")
def test_bench_needs_tensorrt(tmp_path):
    with pytest.raises(ConfigError, match=r"warmup -1 / iterations 0: need warmup >= 0 and iterations >= 1"):
        bench_engines({"a": tmp_path / "a.plan"}, (1,), warmup=-1, iterations=0)
    with pytest.raises(EngineUnavailable, match="TensorRT is not importable here"):
        bench_engines({"a": tmp_path / "a.plan"}, (1,))

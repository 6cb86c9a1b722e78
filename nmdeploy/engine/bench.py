"""Time TensorRT engines side by side: latency p50/p90/p99 and throughput per batch size.

Engines are timed interleaved in one process (each round runs every engine once), so a
noisy GPU or host hits all of them alike and the sparse/dense ratio stays meaningful.
Inputs are random, placed on the GPU once; outputs stay on the GPU, so the figures are the
engine's execution, not host copies. Uses Polygraphy's ``TrtRunner`` (and its CUDA wrapper
for device buffers), which needs TensorRT and a GPU.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from nmdeploy.engine.trt import probe
from nmdeploy.errors import ConfigError, EngineUnavailable, InputError
from nmdeploy.timing import BenchRow, latency_stats

__all__ = ["BenchRow", "bench_engines", "latency_stats"]


def _feed(trt: Any, engine: Any, batch: int) -> dict[str, Any]:
    import numpy as np
    from polygraphy import cuda
    from polygraphy.datatype import DataType

    rng = np.random.default_rng(0)
    feed = {}
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        if engine.get_tensor_mode(name) != trt.TensorIOMode.INPUT:
            continue
        shape = [batch if d < 0 and axis == 0 else d for axis, d in enumerate(engine.get_tensor_shape(name))]
        if any(d < 0 for d in shape):
            raise ConfigError(f"input {name!r} has dynamic dims besides the batch; bench supports a dynamic batch only")
        host = rng.standard_normal(shape).astype(trt.nptype(engine.get_tensor_dtype(name)))
        feed[name] = cuda.DeviceArray(shape=host.shape, dtype=DataType.from_dtype(host.dtype)).copy_from(host)
    return feed


def bench_engines(
    plans: Mapping[str, str | Path], batch_sizes: Sequence[int] = (1, 32), warmup: int = 20, iterations: int = 200
) -> list[BenchRow]:
    """Rows per (engine, batch) for the named plans; the dynamic batch must cover ``batch_sizes``."""
    if warmup < 0 or iterations < 1:
        raise ConfigError(f"warmup {warmup} / iterations {iterations}: need warmup >= 0 and iterations >= 1")
    trt = probe()
    try:
        from polygraphy.backend.trt import TrtRunner
    except ImportError as exc:
        raise EngineUnavailable(f"timing needs polygraphy ({exc})", "pip install polygraphy") from None
    runtime = trt.Runtime(trt.Logger(trt.Logger.ERROR))
    engines = {}
    for name, path in plans.items():
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise InputError(f"cannot read engine {path}: {exc.strerror}") from None
        engine = runtime.deserialize_cuda_engine(data)
        if engine is None:
            raise InputError(f"{path} is not a TensorRT plan for this TensorRT version and GPU; rebuild it here")
        engines[name] = engine
    rows = []
    runners = {name: TrtRunner(engine) for name, engine in engines.items()}
    for runner in runners.values():
        runner.activate()
    try:
        for batch in batch_sizes:
            feeds = {name: _feed(trt, engines[name], batch) for name in engines}
            times: dict[str, list[float]] = {name: [] for name in engines}
            for step in range(warmup + iterations):
                for name, runner in runners.items():
                    runner.infer(feeds[name], check_inputs=False, copy_outputs_to_host=False)
                    if step >= warmup:
                        times[name].append(runner.last_inference_time())
            rows += [latency_stats(name, batch, times[name]) for name in engines]
    finally:
        for runner in runners.values():
            runner.deactivate()
    return rows

"""Time ONNX models side by side on onnxruntime (``nmdeploy bench MODEL.onnx ... --provider``).

The same interleaving as the TensorRT timing: each round runs every model once, so a noisy
host or GPU hits all of them alike and their ratio stays meaningful. Inputs are random, of
each input's dtype and shape (a dynamic dim besides the batch takes ``length``); the time is
``session.run`` as a caller sees it, output copies to the host included.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nmdeploy.errors import ConfigError
from nmdeploy.quant.providers import start_session
from nmdeploy.quant.reader import ORT_DTYPES
from nmdeploy.timing import BenchRow, latency_stats

__all__ = ["bench_onnx", "random_feed"]


def random_feed(session: Any, batch: int, length: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs for one run: floats from N(0, 1), integer ids 0 and masks 1, dim 0 = ``batch``."""
    rng = np.random.default_rng(seed)
    feed = {}
    for meta in session.get_inputs():
        if meta.type not in ORT_DTYPES:
            raise ConfigError(f"input {meta.name!r} is {meta.type}, which bench cannot fill; time this model elsewhere")
        dims = [d if isinstance(d, int) and d > 0 else (batch if i == 0 else length) for i, d in enumerate(meta.shape)]
        dtype = ORT_DTYPES[meta.type]
        if np.issubdtype(dtype, np.floating):
            feed[meta.name] = rng.standard_normal(dims).astype(dtype)
        else:
            feed[meta.name] = np.full(dims, 1 if "mask" in meta.name.lower() or dtype == np.bool_ else 0, dtype)
    return feed


def bench_onnx(
    models: Mapping[str, str | Path],
    provider: str = "cpu",
    batch_sizes: Sequence[int] = (1, 32),
    warmup: int = 20,
    iterations: int = 200,
    length: int = 128,
) -> list[BenchRow]:
    """Rows per (model, batch) for the named ONNX files on ``provider``."""
    if warmup < 0 or iterations < 1:
        raise ConfigError(f"warmup {warmup} / iterations {iterations}: need warmup >= 0 and iterations >= 1")
    sessions = {name: start_session(path, provider) for name, path in models.items()}
    rows = []
    for batch in batch_sizes:
        feeds = {name: random_feed(s, batch, length) for name, s in sessions.items()}
        times: dict[str, list[float]] = {name: [] for name in sessions}
        for step in range(warmup + iterations):
            for name, session in sessions.items():
                began = time.perf_counter()
                session.run(None, feeds[name])
                if step >= warmup:
                    times[name].append(time.perf_counter() - began)
        rows += [latency_stats(name, batch, times[name]) for name in sessions]
    return rows

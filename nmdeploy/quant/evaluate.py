"""Accuracy of an ONNX model on onnxruntime (the CPU, or ``--provider cuda|tensorrt``): top-1 for classifiers, cosine to a reference.

The data is read chunk by chunk (:func:`onnx_batches`), so an evaluation set of any size
streams through; only the running counts are kept.

Top-1 is read from the first output when it is ``[N, classes]`` and the data has labels.
Cosine is computed per sample (each sample's output flattened) and averaged, per output:
a mean over samples is far more sensitive to a broken layer than one cosine over the
whole concatenated output.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nmdeploy import schemas
from nmdeploy.data import ArrayData
from nmdeploy.errors import InputError
from nmdeploy.quant.reader import bind_inputs, fitting_batch, ort_session

__all__ = ["EvalReport", "OutputCosine", "cosine", "cosines", "evaluate_onnx", "onnx_batches", "run_onnx", "top1"]


@dataclass(frozen=True)
class OutputCosine:
    name: str
    mean: float
    min: float


@dataclass(frozen=True)
class EvalReport:
    model: str
    data: str
    samples: int
    top1: float | None
    reference: str | None = None
    reference_top1: float | None = None
    cosine: tuple[OutputCosine, ...] = field(default=())
    provider: str = "cpu"  # the onnxruntime execution provider both models ran on

    def to_dict(self) -> dict[str, Any]:
        return {"schema": schemas.EVAL, **asdict(self)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


def _static_batch(model_inputs: list) -> int | None:
    """The fixed batch dim of a model's inputs (the smallest), or None when dim 0 is dynamic."""
    dims = [m.shape[0] for m in model_inputs if m.shape and isinstance(m.shape[0], int) and m.shape[0] > 0]
    return min(dims) if dims else None


def onnx_batches(
    path: str | Path, data: Any, batch_size: int = 256, workers: int = 0, progress: Any = None, session: Any = None
) -> Iterator[tuple[ArrayData, list[np.ndarray]]]:
    """``(chunk, outputs)`` for consecutive chunks of ``data`` (any source), read as they are run.

    Each chunk is checked against the model's inputs (names, shapes, dtypes, NaN) before it
    runs; a model with a fixed batch gets chunks of exactly that size (a short tail is dropped).
    ``progress(k)`` is told the samples of each chunk.
    """
    from nmdeploy.data.loader import read_chunks

    session = session or ort_session(str(path))
    metas = session.get_inputs()
    fixed = _static_batch(metas)
    # a static batch takes chunks of exactly its size; a dynamic one as many as fit the activation budget
    size = fixed or fitting_batch(path, batch_size, getattr(data, "max_length", 128))
    ran = False
    tail = None
    for chunk in read_chunks(data, size, workers, f"data {data.source!r}"):
        if fixed is not None and len(chunk) < fixed:
            tail = chunk  # a static batch dim cannot take a short last chunk
            continue
        bound = bind_inputs(chunk, metas)
        feed = {name: np.ascontiguousarray(array) for name, array in bound.arrays.items()}
        outputs = [np.asarray(v) for v in session.run(None, feed)]
        ran = True
        if progress is not None:
            progress(len(chunk))
        yield chunk, outputs
    if not ran:
        if tail is not None:
            bind_inputs(tail, metas)  # raises: fewer samples than the model's fixed batch
        raise InputError(f"data {data.source!r} is empty; it needs at least one sample")


def run_onnx(
    path: str | Path, data: Any, batch_size: int = 256, progress: Any = None
) -> tuple[list[str], list[np.ndarray]]:
    """All outputs of ``path`` on ``data`` (concatenated over batches), with their names."""
    session = ort_session(str(path))
    names = [o.name for o in session.get_outputs()]
    chunks: list[list[np.ndarray]] = [[] for _ in names]
    for _, outputs in onnx_batches(path, data, batch_size, 0, progress, session):
        for store, value in zip(chunks, outputs):
            store.append(value)
    return names, [np.concatenate(c) if c else np.empty((0,)) for c in chunks]


def _applies(logits: np.ndarray, labels: np.ndarray | None) -> bool:
    return (
        labels is not None
        and logits.ndim == 2
        and labels.ndim == 1
        and np.issubdtype(labels.dtype, np.integer)
        and len(labels) == len(logits)
        and len(labels) > 0
    )


def top1(logits: np.ndarray, labels: np.ndarray | None) -> float | None:
    """Share of samples whose arg-max class is the label; None when it does not apply."""
    if not _applies(logits, labels):
        return None  # not class labels (e.g. a distillation target): top-1 does not apply
    return float(np.mean(np.argmax(logits, axis=1) == labels))


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The cosine between each sample's flattened outputs (1 where both are all zero and equal)."""
    a = a.reshape(len(a), -1).astype(np.float64)
    b = b.reshape(len(b), -1).astype(np.float64)
    dot = (a * b).sum(1)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    both_zero = norms == 0
    return np.where(both_zero, np.all(a == b, axis=1).astype(np.float64), dot / np.where(both_zero, 1.0, norms))


def cosine(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(mean, min) over samples of the cosine between each sample's flattened outputs."""
    values = cosines(a, b)
    return float(values.mean()), float(values.min())


class _Tally:
    """Top-1 counts and per-output cosine sums, added up chunk by chunk."""

    def __init__(self) -> None:
        self.samples = 0
        self.correct: dict[str, int] = {}
        self.labelled = True
        self.cos_sum: list[float] = []
        self.cos_min: list[float] = []

    def add_top1(self, key: str, logits: np.ndarray, labels: np.ndarray | None) -> None:
        if not _applies(logits, labels):
            self.labelled = False
            return
        self.correct[key] = self.correct.get(key, 0) + int(np.sum(np.argmax(logits, axis=1) == labels))

    def add_cosines(self, outputs: list[np.ndarray], reference: list[np.ndarray]) -> None:
        if not self.cos_sum:
            self.cos_sum, self.cos_min = [0.0] * len(outputs), [math.inf] * len(outputs)
        for k, (o, r) in enumerate(zip(outputs, reference)):
            values = cosines(o, r)
            self.cos_sum[k] += float(values.sum())
            self.cos_min[k] = min(self.cos_min[k], float(values.min()))

    def top1(self, key: str) -> float | None:
        if not self.labelled or key not in self.correct or not self.samples:
            return None
        return self.correct[key] / self.samples


def evaluate_onnx(
    path: str | Path,
    data: Any,
    reference: str | Path | None = None,
    batch_size: int = 256,
    progress: Any = None,
    workers: int = 0,
    provider: str = "cpu",
) -> EvalReport:
    """Top-1 of ``path`` on ``data`` (any source, read chunk by chunk) and, with a ``reference``
    ONNX, its top-1 and the per-output cosine to it.

    ``progress(done, total)`` counts samples over both runs (``total`` is 0 for a stream).
    ``provider``: ``cpu``, ``cuda`` or ``tensorrt`` (:mod:`nmdeploy.quant.providers`); both models run there.
    """
    from nmdeploy.data.source import Stream

    total = 0 if isinstance(data, Stream) else len(data) * (1 if reference is None else 2)
    done = [0]

    def advance(k: int) -> None:
        done[0] += k
        progress(done[0], total)

    tally = _Tally()
    ref_session = None if reference is None else ort_session(str(reference), provider=provider)
    session = ort_session(str(path), provider=provider)
    names = [o.name for o in session.get_outputs()]
    for chunk, outputs in onnx_batches(path, data, batch_size, workers, advance if progress else None, session):
        tally.samples += len(chunk)
        tally.add_top1("model", outputs[0], chunk.labels)
        if ref_session is None:
            continue
        ref_outputs = [np.asarray(v) for v in ref_session.run(None, _feed(chunk, ref_session))]
        if progress is not None:
            advance(len(chunk))
        if len(ref_outputs) != len(outputs) or any(r.shape != o.shape for r, o in zip(ref_outputs, outputs)):
            raise InputError(
                f"{reference} does not produce the outputs of {path} "
                f"({[list(r.shape) for r in ref_outputs]} vs {[list(o.shape) for o in outputs]}); compare models of the same network"
            )
        tally.add_top1("reference", ref_outputs[0], chunk.labels)
        tally.add_cosines(outputs, ref_outputs)
    if reference is None:
        return EvalReport(str(path), data.source, tally.samples, tally.top1("model"), provider=provider)
    cos = tuple(OutputCosine(n, s / max(1, tally.samples), m) for n, s, m in zip(names, tally.cos_sum, tally.cos_min))
    return EvalReport(
        str(path),
        data.source,
        tally.samples,
        tally.top1("model"),
        str(reference),
        tally.top1("reference"),
        cos,
        provider,
    )


def _feed(chunk: ArrayData, session: Any) -> dict[str, np.ndarray]:
    bound = bind_inputs(chunk, session.get_inputs())
    return {name: np.ascontiguousarray(array) for name, array in bound.arrays.items()}

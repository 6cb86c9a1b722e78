"""Accuracy of an ONNX model on onnxruntime (CPU): top-1 for classifiers, cosine to a reference.

Top-1 is read from the first output when it is ``[N, classes]`` and the data has labels.
Cosine is computed per sample (each sample's output flattened) and averaged, per output:
a mean over samples is far more sensitive to a broken layer than one cosine over the
whole concatenated output.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nmdeploy import schemas
from nmdeploy.data import ArrayData
from nmdeploy.errors import InputError
from nmdeploy.quant.reader import bind_inputs, iter_batches, ort_session

__all__ = ["EvalReport", "OutputCosine", "evaluate_onnx", "run_onnx", "top1", "cosine"]


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

    def to_dict(self) -> dict[str, Any]:
        return {"schema": schemas.EVAL, **asdict(self)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


def run_onnx(
    path: str | Path, data: ArrayData, batch_size: int = 256, progress: Any = None
) -> tuple[list[str], list[np.ndarray]]:
    """All outputs of ``path`` on ``data`` (concatenated over batches), with their names."""
    session = ort_session(str(path))
    bound = bind_inputs(data, session.get_inputs())
    names = [o.name for o in session.get_outputs()]
    chunks: list[list[np.ndarray]] = [[] for _ in names]
    for feed in iter_batches(bound, batch_size):
        for store, value in zip(chunks, session.run(None, feed)):
            store.append(np.asarray(value))
        if progress is not None:
            progress(len(next(iter(feed.values()))))
    return names, [np.concatenate(c) if c else np.empty((0,)) for c in chunks]


def top1(logits: np.ndarray, labels: np.ndarray | None) -> float | None:
    """Share of samples whose arg-max class is the label; None when it does not apply."""
    if (
        labels is None
        or logits.ndim != 2
        or labels.ndim != 1
        or not np.issubdtype(labels.dtype, np.integer)
        or len(labels) != len(logits)
        or not len(labels)
    ):
        return None  # not class labels (e.g. a distillation target): top-1 does not apply
    return float(np.mean(np.argmax(logits, axis=1) == labels))


def cosine(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(mean, min) over samples of the cosine between each sample's flattened outputs."""
    a = a.reshape(len(a), -1).astype(np.float64)
    b = b.reshape(len(b), -1).astype(np.float64)
    dot = (a * b).sum(1)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    both_zero = norms == 0
    values = np.where(both_zero, np.all(a == b, axis=1).astype(np.float64), dot / np.where(both_zero, 1.0, norms))
    return float(values.mean()), float(values.min())


def evaluate_onnx(
    path: str | Path, data: ArrayData, reference: str | Path | None = None, batch_size: int = 256, progress: Any = None
) -> EvalReport:
    """Top-1 of ``path`` on ``data`` and, with a ``reference`` ONNX, per-output cosine to it.

    ``progress(done, total)`` counts samples over both runs.
    """
    total = len(data) * (1 if reference is None else 2)
    done = [0]
    tell = progress

    def advance(k: int) -> None:
        done[0] += k
        tell(done[0], total)

    counter = advance if tell is not None else None
    names, outputs = run_onnx(path, data, batch_size, counter)
    got_labels = data.labels if data.labels is None else data.labels[: len(outputs[0])]
    accuracy = top1(outputs[0], got_labels)
    if reference is None:
        return EvalReport(str(path), data.source, len(outputs[0]), accuracy)
    ref_names, ref_outputs = run_onnx(reference, data, batch_size, counter)
    if len(ref_outputs) != len(outputs) or any(r.shape != o.shape for r, o in zip(ref_outputs, outputs)):
        raise InputError(
            f"{reference} does not produce the outputs of {path} "
            f"({[list(r.shape) for r in ref_outputs]} vs {[list(o.shape) for o in outputs]}); compare models of the same network"
        )
    cosines = tuple(OutputCosine(n, *cosine(o, r)) for n, o, r in zip(names, outputs, ref_outputs))
    return EvalReport(
        str(path), data.source, len(outputs[0]), accuracy, str(reference), top1(ref_outputs[0], got_labels), cosines
    )

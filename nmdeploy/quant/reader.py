"""Feed arrays to onnxruntime: bind them to a model's inputs, check them, stream batches.

Every check happens before any inference starts, so a wrong name, shape or dtype, an empty
set or a NaN fails in a second with one line instead of deep inside calibration.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nmdeploy.data import ArrayData
from nmdeploy.errors import InputError

__all__ = [
    "ACTIVATION_BUDGET",
    "ORT_DTYPES",
    "BoundInputs",
    "CalibrationReader",
    "activation_bytes",
    "bind_inputs",
    "fitting_batch",
    "image_input_shape",
    "iter_batches",
    "ort_session",
]

ORT_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}


ACTIVATION_BUDGET = 2 << 30  # bytes of activations one batch may take (calibration holds them all at once)
_BYTES = {1: 4, 2: 1, 3: 1, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 16: 2}  # ONNX elem_type -> bytes


def activation_bytes(path: str | Path, tokens: int = 128) -> int:
    """Bytes of all of one sample's intermediate tensors, from ONNX shape inference: what onnxruntime's
    calibrator holds per sample (it keeps a batch's every activation), an upper bound for a plain run.

    The batch dim counts as 1, any other symbolic dim (a text's tokens) as ``tokens``; the weights
    are not read. Cached per file and modification time.
    """
    stat = Path(path).stat()
    return _activation_bytes(str(path), stat.st_mtime_ns, stat.st_size, tokens)


@functools.lru_cache(maxsize=16)
def _activation_bytes(path: str, mtime: int, size: int, tokens: int) -> int:
    import onnx

    try:
        model = onnx.shape_inference.infer_shapes(onnx.load(path, load_external_data=False))
    except Exception:  # an op shape inference does not know: no estimate, the caller's batch stands
        return 0
    batch = {d.dim_param for v in model.graph.input for d in v.type.tensor_type.shape.dim[:1] if d.dim_param}
    total = 0
    for value in (*model.graph.value_info, *model.graph.output):
        kind = value.type.tensor_type
        count = 1
        for d in kind.shape.dim:
            count *= d.dim_value if d.HasField("dim_value") else (1 if d.dim_param in batch else tokens)
        total += count * _BYTES.get(kind.elem_type, 4)
    return total


def fitting_batch(path: str | Path, most: int, tokens: int = 128, budget: int = ACTIVATION_BUDGET) -> int:
    """``most``, or fewer samples where a batch's activations would pass ``budget`` bytes (a big model)."""
    per_sample = activation_bytes(path, tokens)
    return max(1, min(most, budget // per_sample)) if per_sample else most


def ort_session(path: str, threads: int = 0, provider: str = "cpu"):  # -> onnxruntime.InferenceSession
    """An onnxruntime session on ``provider`` (the CPU by default: the GPU build runs there too)."""
    from nmdeploy.quant.providers import start_session

    return start_session(path, provider, threads)


@dataclass(frozen=True)
class BoundInputs:
    """Arrays keyed by the model's input names, and the largest batch the model accepts."""

    arrays: Mapping[str, np.ndarray]
    max_batch: int | None  # None = dim 0 is dynamic
    count: int


def bind_inputs(data: ArrayData, model_inputs: list, what: str = "data") -> BoundInputs:
    """Match ``data`` to ``model_inputs`` (onnxruntime NodeArgs) by name, shape and dtype.

    A single unnamed array (``x``) binds to a single-input model whatever its name.
    """
    names = [i.name for i in model_inputs]
    arrays = dict(data.inputs)
    if len(arrays) == 1 and len(names) == 1 and names[0] not in arrays:
        arrays = {names[0]: next(iter(arrays.values()))}
    missing = [n for n in names if n not in arrays]
    if missing:
        raise InputError(
            f"{what} {data.source!r} has no array for model input {missing[0]!r} (it has {', '.join(sorted(arrays))}); "
            "store each input under the model's input name"
        )
    count = len(data)
    if count == 0:
        raise InputError(f"{what} {data.source!r} is empty; it needs at least one sample")
    max_batch = None
    for meta in model_inputs:
        array = arrays[meta.name]
        want = ORT_DTYPES.get(meta.type)
        if want is not None and array.dtype != want:
            raise InputError(
                f"{what} {data.source!r}: input {meta.name!r} is {array.dtype}, the model wants {np.dtype(want).name}; "
                f"convert it (array.astype('{np.dtype(want).name}'))"
            )
        shape = list(meta.shape)
        if array.ndim != len(shape):
            raise InputError(
                f"{what} {data.source!r}: input {meta.name!r} has shape {list(array.shape)}, the model wants "
                f"{_show(shape)} (samples along dim 0); reshape the data"
            )
        for axis, (have, want_dim) in enumerate(zip(array.shape, shape)):
            if axis == 0:
                if isinstance(want_dim, int) and want_dim > 0:
                    max_batch = want_dim if max_batch is None else min(max_batch, want_dim)
                continue
            if isinstance(want_dim, int) and want_dim > 0 and have != want_dim:
                raise InputError(
                    f"{what} {data.source!r}: input {meta.name!r} has shape {list(array.shape)}, the model wants "
                    f"{_show(shape)} (dim {axis}: {have} != {want_dim}); use data made for this model"
                )
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            bad = int(np.count_nonzero(~np.isfinite(array)))
            raise InputError(
                f"{what} {data.source!r}: input {meta.name!r} holds {bad} NaN/Inf value(s); clean the data"
            )
    if max_batch is not None and count < max_batch:
        raise InputError(
            f"{what} {data.source!r} has {count} sample(s), fewer than the model's fixed batch of {max_batch}; "
            "give more samples or export with a dynamic batch"
        )
    return BoundInputs({n: arrays[n] for n in names}, max_batch, count)


def image_input_shape(path: str | Path) -> tuple[int, int, int] | None:
    """``(C, H, W)`` of an ONNX model's single image input when it fixes them (C of 1 or 3), else None."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:
        return None  # whoever loads the model next says what is wrong with it
    weights = {init.name for init in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in weights]
    if len(inputs) != 1:
        return None
    dims = inputs[0].type.tensor_type.shape.dim
    if len(dims) != 4:
        return None
    c, h, w = (d.dim_value if d.HasField("dim_value") else 0 for d in dims[1:])
    return (c, h, w) if c in (1, 3) and h > 0 and w > 0 else None


def _show(shape: list) -> str:
    return (
        "["
        + ", ".join(
            str(d) if isinstance(d, int) and d > 0 else "N" if i == 0 else str(d or "?") for i, d in enumerate(shape)
        )
        + "]"
    )


def iter_batches(bound: BoundInputs, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
    """Consecutive batches of ``batch_size`` (capped by a static batch dim) as ORT feeds."""
    size = max(1, min(batch_size, bound.max_batch or batch_size))
    if bound.max_batch is not None and bound.count % size:
        # A static batch dim cannot take a short last batch: drop the remainder.
        stop = bound.count - bound.count % size
    else:
        stop = bound.count
    for start in range(0, stop, size):
        yield {name: np.ascontiguousarray(a[start : start + size]) for name, a in bound.arrays.items()}


class CalibrationReader:
    """onnxruntime's CalibrationDataReader protocol (``get_next`` / ``rewind``) over bound arrays."""

    def __init__(
        self, bound: BoundInputs, batch_size: int = 32, on_batch: Callable[[int, int], None] | None = None
    ) -> None:
        """``on_batch(samples_done, total)`` is called after each batch is handed out."""
        self.bound = bound
        self.on_batch = on_batch
        self._done = 0
        # Equal batches only: onnxruntime's histogram calibrators (percentile) fail on a short
        # last batch, so take the largest batch size <= batch_size that divides the count.
        size = max(1, min(batch_size, bound.max_batch or batch_size, bound.count))
        while bound.count % size:
            size -= 1
        self.batch_size = size
        self._batches = iter_batches(bound, self.batch_size)

    def get_next(self) -> dict[str, np.ndarray] | None:
        feed = next(self._batches, None)
        if feed is not None and self.on_batch is not None:
            self._done += len(next(iter(feed.values())))
            self.on_batch(self._done, self.bound.count)
        return feed

    def rewind(self) -> None:
        self._batches = iter_batches(self.bound, self.batch_size)
        self._done = 0

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        item = self.get_next()
        if item is None:
            raise StopIteration
        return item

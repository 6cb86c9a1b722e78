"""ONNX export of a (sparsified) PyTorch model, checked against PyTorch with onnxruntime.

The caller's model is never touched: a copy is finalized (masks folded into plain weights
with exact zeros) and exported in eval mode with the dynamo exporter, which keeps parameter
names (``layer1.0.conv1.weight``) so verify reports name the layers users know, and folds
BatchNorm into the convolutions (zeros survive: a per-channel scale keeps them at zero).
The file is written to a temporary folder beside the target and moved into place only after
``onnx.checker`` and the parity check pass, so a failed export leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from nmdeploy._atomic import atomic_output
from nmdeploy.config import from_arguments
from nmdeploy.errors import ConfigError, ExportError, describe, first_line
from nmdeploy.export.config import ExportConfig
from nmdeploy.sparsity.api import finalize

__all__ = ["ExportReport", "MIN_OPSET", "OutputParity", "check_onnx_path", "check_opset", "export_onnx"]

MIN_OPSET = 13  # per-axis Q/DQ, which INT8 for TensorRT needs, came with opset 13

_SINGLE_FILE_LIMIT = 1_800_000_000  # protobuf caps a file at 2 GB; keep a margin for the graph


@dataclass(frozen=True)
class OutputParity:
    name: str
    max_abs_error: float
    cosine: float


@dataclass(frozen=True)
class ExportReport:
    path: str
    opset: int
    external_data: bool
    size_bytes: int
    inputs: tuple[str, ...]
    parity: tuple[OutputParity, ...]


def _as_tuple(sample_input: torch.Tensor | tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    if isinstance(sample_input, torch.Tensor):
        sample_input = (sample_input,)
    if isinstance(sample_input, (tuple, list)) and all(isinstance(t, torch.Tensor) for t in sample_input):
        # Canonical strides: a tensor from numpy can carry odd strides on size-1 dims (still
        # "contiguous"), and torch.export then fails a dynamic batch with "Invalid ranges [2:1]".
        return tuple(t.clone(memory_format=torch.contiguous_format) for t in sample_input)
    raise ExportError(f"sample_input must be a tensor or a tuple of tensors, got {type(sample_input).__name__}")


@contextlib.contextmanager
def _quiet_logger(name: str):
    """Silence a library logger's warnings for a while (the exporter warns that torchvision is absent)."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _flatten(output: object) -> list[torch.Tensor]:
    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, (tuple, list)):
        return [t for item in output for t in _flatten(item)]
    if isinstance(output, dict):
        return [t for item in output.values() for t in _flatten(item)]
    raise ExportError(f"model output of type {type(output).__name__} is not a tensor, tuple or dict of tensors")


def _parity(
    reference: list[torch.Tensor], onnx_path: Path, args: tuple[torch.Tensor, ...]
) -> tuple[list[str], list[OutputParity]]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    outputs = session.run(None, {name: t.detach().cpu().numpy() for name, t in zip(names, args)})
    parity = []
    for meta, got, ref in zip(session.get_outputs(), outputs, reference):
        ref_np = ref.detach().cpu().numpy().astype(np.float64)
        got = np.asarray(got, dtype=np.float64)
        if got.shape != ref_np.shape:
            raise ExportError(f"ONNX output {meta.name!r} has shape {list(got.shape)}, PyTorch {list(ref_np.shape)}")
        denom = np.linalg.norm(got) * np.linalg.norm(ref_np)
        cosine = float((got * ref_np).sum() / denom) if denom else float(np.array_equal(got, ref_np))
        parity.append(OutputParity(meta.name, float(np.abs(got - ref_np).max(initial=0.0)), cosine))
    return names, parity


def check_onnx_path(path: str | Path) -> Path:
    """``path`` if it can name the ONNX file to write."""
    path = Path(path)
    if path.suffix != ".onnx":
        raise ExportError(f"output path {path} should end in .onnx")
    return path


def check_opset(opset: int | None) -> None:
    """Raise unless ``opset`` (None: the exporter's default) is one the exporter writes and INT8 can use."""
    import onnx

    newest = onnx.defs.onnx_opset_version()
    if opset is not None and not MIN_OPSET <= opset <= newest:
        raise ConfigError(
            f"opset {opset} is not one export writes: use {MIN_OPSET} to {newest}, or none for the exporter's default"
        )


def export_onnx(
    model: nn.Module,
    sample_input: torch.Tensor | tuple[torch.Tensor, ...],
    path: str | Path,
    dynamic_batch: bool = ExportConfig.dynamic_batch,
    opset: int | None = ExportConfig.opset,
    atol: float = ExportConfig.atol,
    rtol: float = ExportConfig.rtol,
    *,
    config: ExportConfig | None = None,
) -> ExportReport:
    """Export ``model`` to ``path`` and check it against PyTorch on ``sample_input``.

    A sparsified model is finalized on a copy first. ``dynamic_batch`` makes dim 0 of every
    input symbolic. Parity fails when an output differs by more than
    ``atol + rtol * max|reference|``; nothing is written then. ``config``: these settings
    as one :class:`ExportConfig` (a recipe's ``export`` section); the arguments are then
    not used.
    """
    if config is None:
        config = from_arguments(ExportConfig, dynamic_batch=dynamic_batch, opset=opset, atol=atol, rtol=rtol)
    check_opset(config.opset)
    args = _as_tuple(sample_input)
    path = check_onnx_path(path)
    work = finalize(copy.deepcopy(model)).eval()
    try:
        with torch.no_grad():
            reference = _flatten(work(*args))
    except ExportError:
        raise
    except Exception as exc:  # the user's model on the user's sample
        shapes = ", ".join(str(list(t.shape)) for t in args)
        raise ExportError(
            f"the model fails on the sample input {shapes} ({describe(exc)}); give an input shape the model takes"
        ) from exc
    size = sum(t.numel() * t.element_size() for t in work.state_dict().values())
    external = size > _SINGLE_FILE_LIMIT
    dynamic = tuple({0: torch.export.Dim("batch", min=1)} for _ in args) if config.dynamic_batch else None
    log = io.StringIO()
    with atomic_output(path) as tmp:  # published (fsync + rename) only if every check below passes
        target = tmp / path.name
        try:
            with contextlib.redirect_stdout(log), warnings.catch_warnings(), _quiet_logger("torch.onnx"):
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    work,
                    args,
                    str(target),
                    dynamo=True,
                    dynamic_shapes=dynamic,
                    opset_version=config.opset,
                    external_data=external,
                )
        except Exception as exc:
            detail = first_line(exc)
            raise ExportError(f"torch.onnx.export failed: {detail}") from None
        import onnx

        try:
            onnx.checker.check_model(str(target))
        except Exception as exc:
            raise ExportError(f"the exported model fails onnx.checker: {first_line(exc)}") from None
        names, parity = _parity(reference, target, args)
        for ref, p in zip(reference, parity):
            limit = config.atol + config.rtol * float(ref.detach().abs().max()) if ref.numel() else config.atol
            if not p.max_abs_error <= limit:
                raise ExportError(
                    f"ONNX output {p.name!r} differs from PyTorch by {p.max_abs_error:.3g} (cosine {p.cosine:.6f}), "
                    f"above the tolerance {limit:.3g}; nothing was written"
                )
        opset_version = next(
            (
                o.version
                for o in onnx.load(str(target), load_external_data=False).opset_import
                if o.domain in ("", "ai.onnx")
            ),
            0,
        )
        if config.opset is not None and opset_version != config.opset:  # the exporter falls back without a word
            raise ExportError(
                f"torch.onnx.export wrote opset {opset_version}, not the {config.opset} asked for (it cannot convert this "
                "model to it); use another opset, or none for the exporter's default; nothing was written"
            )
        size_bytes = sum(f.stat().st_size for f in tmp.iterdir())  # the model and, above 2 GB, its external data
    return ExportReport(str(path), opset_version, external, size_bytes, tuple(names), tuple(parity))

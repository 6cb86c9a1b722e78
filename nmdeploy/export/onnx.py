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
from nmdeploy._onnx import SINGLE_FILE_LIMIT
from nmdeploy.config import from_arguments
from nmdeploy.errors import ConfigError, ExportError, describe, first_line
from nmdeploy.export.config import ExportConfig
from nmdeploy.sparsity.api import finalize

__all__ = [
    "ExportReport",
    "MIN_OPSET",
    "OutputParity",
    "argument_names",
    "axis_name",
    "check_onnx_path",
    "check_opset",
    "export_onnx",
    "exported_dims",
    "resolve_axes",
]

MIN_OPSET = 13  # per-axis Q/DQ, which INT8 for TensorRT needs, came with opset 13


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


def argument_names(model: nn.Module, count: int) -> tuple[str, ...]:
    """The names of ``model.forward``'s first ``count`` arguments: what the exporter names the ONNX inputs."""
    import inspect

    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    params = [p.name for p in inspect.signature(model.forward).parameters.values() if p.kind in kinds]
    params = [p for p in params if p != "self"]
    return tuple(params[:count]) if len(params) >= count else tuple(f"input_{i}" for i in range(count))


def resolve_axes(
    config: ExportConfig, names: tuple[str, ...], args: tuple[torch.Tensor, ...]
) -> dict[str, tuple[int, ...]]:
    """Input name -> its dynamic dims: ``config.dynamic_axes`` or the default (batch; tokens of text inputs)."""
    if config.dynamic_axes is not None:
        unknown = sorted(set(config.dynamic_axes) - set(names))
        if unknown:
            raise ConfigError(
                f"export.dynamic_axes names {unknown[0]!r}, which is not an input of the model ({', '.join(names)})"
            )
        for name, t in zip(names, args):
            bad = [d for d in config.dynamic_axes.get(name, ()) if d >= t.ndim]
            if bad:
                raise ConfigError(f"export.dynamic_axes: input {name!r} has {t.ndim} dims, no dim {bad[0]}")
        return {name: tuple(sorted(config.dynamic_axes.get(name, ()))) for name in names}
    return {name: _default_dims(config, t) for name, t in zip(names, args)}


def _default_dims(config: ExportConfig, t: torch.Tensor) -> tuple[int, ...]:
    """The dynamic dims of an input with no ``export.dynamic_axes``: the batch, and the tokens of text."""
    tokens = t.ndim == 2 and not t.is_floating_point()  # token ids and masks: the sequence length varies
    return (*((0,) if config.dynamic_batch else ()), *((1,) if tokens else ()))


def exported_dims(config: ExportConfig, args: tuple[torch.Tensor, ...]) -> set[int]:
    """Every dim the export makes dynamic in some input (what an engine profile must give a range)."""
    if config.dynamic_axes is not None:
        return {d for dims in config.dynamic_axes.values() for d in dims}
    return {d for t in args for d in _default_dims(config, t)}


def axis_name(dim: int) -> str:
    """The symbolic name an exported dynamic dim gets (and an engine profile is keyed by)."""
    return {0: "batch", 1: "sequence"}.get(dim, f"dim{dim}")


def _longest_input(model: nn.Module) -> int | None:
    """A transformer's longest input (``max_position_embeddings``), the cap of its token axis; None for others."""
    limit = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    return limit if isinstance(limit, int) else None


def _dynamic_shapes(axes: dict[str, tuple[int, ...]], names: tuple[str, ...], limit: int | None) -> tuple:
    dims = {}
    for dim in sorted({d for ds in axes.values() for d in ds}):
        top = limit if dim == 1 else None
        dims[dim] = torch.export.Dim(axis_name(dim), min=1, max=top) if top else torch.export.Dim(axis_name(dim), min=1)
    return tuple({d: dims[d] for d in axes[name]} or None for name in names)


def _other_length(
    axes: dict[str, tuple[int, ...]], names: tuple[str, ...], args: tuple[torch.Tensor, ...], limit: int | None
) -> tuple[torch.Tensor, ...] | None:
    """``args`` at another length of every dynamic dim 1, if any is dynamic: half as long again by zero
    padding (pad tokens, masked out), or cut by that much where the model's longest input forbids it."""
    dynamic = [name for name in names if 1 in axes[name]]
    if not dynamic:
        return None
    length = dict(zip(names, args))[dynamic[0]].shape[1]
    step = max(1, length // 2)
    longer = limit is None or length + step <= limit
    if not longer and length <= 1:
        return None
    out = []
    for name, t in zip(names, args):
        if 1 in axes[name]:
            if longer:
                t = torch.cat([t, torch.zeros((t.shape[0], step, *t.shape[2:]), dtype=t.dtype)], dim=1)
            else:
                t = t[:, : length - min(step, length - 1)].contiguous()
        out.append(t)
    return tuple(out)


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
    external = size > SINGLE_FILE_LIMIT
    names = argument_names(work, len(args))
    axes = resolve_axes(config, names, args)
    limit = _longest_input(work)
    dynamic = _dynamic_shapes(axes, names, limit) if any(axes.values()) else None
    checks = [(args, reference)]
    longer = _other_length(axes, names, args, limit)
    if longer is not None:  # a second sequence length: the symbolic dim must really be symbolic
        with torch.no_grad():
            checks.append((longer, _flatten(work(*longer))))
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
                    output_names=list(getattr(work, "nm_outputs", ()) or []) or None,
                )
        except Exception as exc:
            detail = first_line(exc)
            raise ExportError(f"torch.onnx.export failed: {detail}") from None
        import onnx

        try:
            onnx.checker.check_model(str(target))
        except Exception as exc:
            raise ExportError(f"the exported model fails onnx.checker: {first_line(exc)}") from None
        worst: list[OutputParity] = []
        for sample, expected in checks:
            names, parity = _parity(expected, target, sample)
            for ref, p in zip(expected, parity):
                limit = config.atol + config.rtol * float(ref.detach().abs().max()) if ref.numel() else config.atol
                if not p.max_abs_error <= limit:
                    shapes = "x".join(map(str, sample[0].shape))
                    raise ExportError(
                        f"ONNX output {p.name!r} differs from PyTorch by {p.max_abs_error:.3g} (cosine {p.cosine:.6f}) "
                        f"on a {shapes} input, above the tolerance {limit:.3g}; nothing was written"
                    )
            worst = parity if not worst else [max(a, b, key=lambda q: q.max_abs_error) for a, b in zip(worst, parity)]
        parity = worst
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

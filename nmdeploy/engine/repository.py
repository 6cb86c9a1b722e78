"""A Triton model repository from an ONNX model and, where there is one, its TensorRT plan.

``write_repository`` writes one folder, whole or not at all (staged beside it and renamed):

- ``<name>/``: a ``tensorrt_plan`` model, ``1/model.plan`` the engine; where the plan is built
  later on the target, its config waits at the root (``<name>.tensorrt_plan.pbtxt``, which
  Triton ignores) until ``build_engine.py --triton`` moves it in with the plan;
- ``<name>_onnx/``: an ``onnxruntime_onnx`` model of the (INT8) ONNX with the TensorRT
  execution accelerator (INT8 for a Q/DQ graph, sparse weights, engine cache), the fallback
  that needs no build step;
- ``README.md`` (how to serve it) and ``client.py`` (one request over HTTP with ``tritonclient``).

Inputs, outputs, dtypes and dims come from the ONNX; a plan is checked against them (with
TensorRT where it is installed, else with the ``engine_report.json`` written beside it).
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nmdeploy._atomic import staged_folder
from nmdeploy._onnx import graph_has_qdq
from nmdeploy.engine.config import EngineConfig
from nmdeploy.engine.shapes import make_profile
from nmdeploy.engine.triton import PENDING_SUFFIX, ServeConfig, TensorSpec, check_model_name, render_config
from nmdeploy.errors import ConfigError, EngineUnavailable, InputError
from nmdeploy.outputs import onnx_files

__all__ = ["MARKER", "OnnxTensor", "Repository", "check_plan", "default_name", "onnx_io", "write_repository"]

MARKER = "client.py"  # every repository nmdeploy writes holds it (what lets --force replace one)

# ONNX TensorProto element type -> (Triton TYPE_*, numpy dtype)
_TYPES = {
    1: ("TYPE_FP32", "float32"),
    2: ("TYPE_UINT8", "uint8"),
    3: ("TYPE_INT8", "int8"),
    4: ("TYPE_UINT16", "uint16"),
    5: ("TYPE_INT16", "int16"),
    6: ("TYPE_INT32", "int32"),
    7: ("TYPE_INT64", "int64"),
    8: ("TYPE_STRING", "object"),
    9: ("TYPE_BOOL", "bool"),
    10: ("TYPE_FP16", "float16"),
    11: ("TYPE_FP64", "float64"),
    12: ("TYPE_UINT32", "uint32"),
    13: ("TYPE_UINT64", "uint64"),
    16: ("TYPE_BF16", "bfloat16"),
}


@dataclass(frozen=True)
class OnnxTensor:
    name: str
    dtype: str  # numpy name
    triton: str  # TYPE_*
    dims: tuple[int | str, ...]  # int, or the symbol of a dynamic dim


@dataclass(frozen=True)
class Repository:
    path: Path
    models: tuple[str, ...]  # the model names written (a pending plan model included)
    pending: str | None  # the model that waits for its plan on the target
    files: tuple[Path, ...]


def _tensor(value: Any, path: Path) -> OnnxTensor:
    kind = value.type.tensor_type
    if kind.elem_type not in _TYPES:
        raise InputError(f"{path}: {value.name!r} has ONNX element type {kind.elem_type}, which Triton cannot serve")
    if not kind.HasField("shape"):
        raise InputError(
            f"{path}: {value.name!r} has no shape in the ONNX; add it (onnx.shape_inference.infer_shapes) and retry"
        )
    dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in kind.shape.dim)
    return OnnxTensor(value.name, _TYPES[kind.elem_type][1], _TYPES[kind.elem_type][0], dims)


@dataclass(frozen=True)
class _Graph:
    """What the repository needs of an ONNX file, read once (a model under 2 GB is one big file)."""

    inputs: tuple[OnnxTensor, ...]
    outputs: tuple[OnnxTensor, ...]
    qdq: bool


def _read(path: Path) -> _Graph:
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise InputError(f"{path} is not a readable ONNX model ({type(exc).__name__}); pass a .onnx file") from None
    weights = {init.name for init in model.graph.initializer}
    inputs = tuple(_tensor(v, path) for v in model.graph.input if v.name not in weights)
    return _Graph(inputs, tuple(_tensor(v, path) for v in model.graph.output), graph_has_qdq(model))


def onnx_io(path: str | Path) -> tuple[tuple[OnnxTensor, ...], tuple[OnnxTensor, ...]]:
    """The graph's inputs (initializers excluded) and outputs."""
    graph = _read(Path(path))
    return graph.inputs, graph.outputs


def default_name(onnx: str | Path) -> str:
    """A Triton model name from a file name: ``model.int8.onnx`` -> ``model``."""
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", Path(onnx).name.split(".")[0])
    return stem if stem and stem[0].isalnum() else f"model{stem}"


def _batch_of(
    inputs: tuple[OnnxTensor, ...], outputs: tuple[OnnxTensor, ...], wanted: int | None, default: int, path: Path
) -> int:
    """Triton's max_batch_size: ``wanted`` (None: ``default``), or 0 when the model's batch is fixed."""
    fixed = [t for t in (*inputs, *outputs) if not t.dims or isinstance(t.dims[0], int) and t.dims[0] > 0]
    if wanted == 0:
        return 0
    if fixed:
        if wanted is not None:
            t = fixed[0]
            raise ConfigError(
                f"serve.max_batch = {wanted}, but {path} has a fixed batch ({t.name!r} is {list(t.dims)}); "
                "set serve.max_batch: 0, or export with a dynamic batch (export.dynamic_batch: true)"
            )
        return 0
    return wanted if wanted is not None else default


def _specs(tensors: tuple[OnnxTensor, ...], batched: bool) -> tuple[TensorSpec, ...]:
    return tuple(
        TensorSpec(t.name, t.triton, tuple(d if isinstance(d, int) and d > 0 else -1 for d in t.dims[int(batched) :]))
        for t in tensors
    )


# -- the plan against the ONNX ---------------------------------------------------------------------------


def _plan_with_tensorrt(plan: Path) -> dict[str, dict[str, Any]] | None:
    """name -> {mode, dtype, dims, min, opt, max} read from the engine, or None where TensorRT cannot open it here."""
    import numpy as np

    from nmdeploy.engine.trt import import_tensorrt

    try:
        trt = import_tensorrt()
        engine = trt.Runtime(trt.Logger(trt.Logger.ERROR)).deserialize_cuda_engine(plan.read_bytes())
    except (EngineUnavailable, RuntimeError, TypeError):
        return None
    if engine is None:
        return None
    found = {}
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
        entry = {
            "input": is_input,
            "dtype": str(np.dtype(trt.nptype(engine.get_tensor_dtype(name)))),
            "dims": tuple(engine.get_tensor_shape(name)),
        }
        if is_input:
            low, opt, high = engine.get_tensor_profile_shape(name, 0)
            entry.update(min=tuple(low), opt=tuple(opt), max=tuple(high))
        found[name] = entry
    return found


def _plan_from_report(plan: Path) -> dict[str, dict[str, Any]] | None:
    """The inputs' profile ranges from the ``engine_report.json`` beside the plan, or None without one."""
    report_path = plan.with_name("engine_report.json")
    if not report_path.is_file():
        return None
    try:
        report = json.loads(report_path.read_text())
    except (OSError, ValueError):
        return None
    described = {Path(p).name for p in (report.get("plan"), report.get("dense_twin")) if p}
    if plan.name not in described:
        raise InputError(
            f"{report_path} describes {', '.join(sorted(described)) or 'no plan'}, not {plan.name}; keep each plan "
            "beside its own engine_report.json"
        )
    profile = report.get("profile") or {}
    return {
        name: {
            "input": True,
            "min": tuple(s["min"]),
            "opt": tuple(s.get("opt", s["min"])),
            "max": tuple(s["max"]),
            "dims": tuple(s["min"]),
        }
        for name, s in profile.items()
    }


def check_plan(
    plan: str | Path, onnx: str | Path, max_batch: int | None, graph: _Graph | None = None
) -> tuple[str, int, dict]:
    """Raise :class:`InputError` unless ``plan`` serves the inputs (and outputs) of ``onnx`` at batch
    1..``max_batch`` (None: its own largest batch, 0: a fixed batch); returns how it was checked
    (``tensorrt`` or ``engine_report.json``), the max batch, and the plan's inputs (name -> min/opt/max).
    ``graph``: ``onnx`` already read (so the repository reads it once)."""
    plan, onnx = Path(plan), Path(onnx)
    if not plan.is_file():
        raise InputError(f"{plan}: no such TensorRT plan; build it with nmdeploy engine, or drop --plan")
    graph = graph or _read(onnx)
    inputs, outputs = graph.inputs, graph.outputs
    found, how = _plan_with_tensorrt(plan), "tensorrt"
    if found is None:
        found, how = _plan_from_report(plan), "engine_report.json"
    if found is None:
        raise EngineUnavailable(
            f"cannot check {plan} against {onnx} here: TensorRT cannot open it on this machine and there is no "
            "engine_report.json beside it",
            "run this where the plan was built, or keep the engine_report.json that nmdeploy engine wrote beside it",
        )
    plan_inputs = {n for n, e in found.items() if e["input"]}
    want = {t.name for t in inputs}
    if plan_inputs != want:
        raise InputError(
            f"{plan} does not match {onnx}: its inputs are {sorted(plan_inputs)}, the ONNX's {sorted(want)}; "
            "build the plan from this ONNX (nmdeploy engine)"
        )
    if how == "tensorrt":
        plan_outputs = {n for n, e in found.items() if not e["input"]}
        if plan_outputs != {t.name for t in outputs}:
            raise InputError(
                f"{plan} does not match {onnx}: its outputs are {sorted(plan_outputs)}, the ONNX's "
                f"{sorted(t.name for t in outputs)}; build the plan from this ONNX (nmdeploy engine)"
            )
    if max_batch is None:
        max_batch = min(found[t.name]["max"][0] for t in inputs) if inputs else 0
    for t in inputs:
        entry = found[t.name]
        if "dtype" in entry and entry["dtype"] != t.dtype:
            raise InputError(
                f"{plan} does not match {onnx}: input {t.name!r} is {entry['dtype']} in the plan, {t.dtype} in the "
                "ONNX; build the plan from this ONNX (nmdeploy engine)"
            )
        low, high = entry["min"], entry["max"]
        if len(low) != len(t.dims) or any(
            isinstance(d, int) and d > 0 and not lo <= d <= hi for d, lo, hi in zip(t.dims, low, high)
        ):
            raise InputError(
                f"{plan} does not match {onnx}: input {t.name!r} is {list(t.dims)} in the ONNX, the plan takes "
                f"{list(low)} to {list(high)}; build the plan from this ONNX (nmdeploy engine)"
            )
        if max_batch > 0 and not (low[0] <= 1 and high[0] >= max_batch):
            raise InputError(
                f"{plan} takes batch {low[0]}..{high[0]} on input {t.name!r}, but Triton sends it 1..{max_batch} "
                f"(serve.max_batch); rebuild with engine.min_batch 1 and engine.max_batch >= {max_batch}, or lower "
                "serve.max_batch"
            )
    return how, max_batch, {name: entry for name, entry in found.items() if entry["input"]}


# -- the repository --------------------------------------------------------------------------------------


def _accelerator(
    qdq: bool,
    inputs: tuple[OnnxTensor, ...],
    name: str,
    max_batch: int,
    serve: ServeConfig,
    engine: EngineConfig,
    plan_inputs: Mapping[str, Mapping[str, tuple[int, ...]]] | None = None,
) -> dict[str, str]:
    """The onnxruntime backend's TensorRT parameters (the backend's names; it maps them to trt_* options).

    The optimisation profile comes from ``engine.shapes`` (a build's token range), else from the
    plan's own profile (``plan_inputs``), else it is left out."""
    params = {"precision_mode": "INT8" if qdq else ("FP16" if engine.fp16 else "FP32")}
    params["trt_sparsity_enable"] = "1" if engine.sparse else "0"
    if engine.workspace_mb:
        params["max_workspace_size_bytes"] = str(engine.workspace_mb << 20)
    cache = f"{serve.trt_cache.rstrip('/')}/{name}"
    params.update(
        trt_engine_cache_enable="1",
        trt_engine_cache_path=cache,
        trt_timing_cache_enable="1",
        trt_timing_cache_path=cache,
    )
    if max_batch > 0:  # one profile for every batch Triton may send, so no request rebuilds the engine
        batch = (1, max(1, min(engine.opt_batch, max_batch)), max_batch)
        try:
            shapes = make_profile({t.name: t.dims for t in inputs}, batch, dims=engine.shapes).inputs
        except ConfigError:
            if not plan_inputs:
                return params  # other dims without a range: the accelerator builds per shape it meets
            shapes = {  # the plan's ranges of the other dims, over the batches Triton sends
                t.name: tuple((b, *plan_inputs[t.name][key][1:]) for b, key in zip(batch, ("min", "opt", "max")))
                for t in inputs
            }
        for key, k in (("min", 0), ("opt", 1), ("max", 2)):
            params[f"trt_profile_{key}_shapes"] = ",".join(f"{n}:{'x'.join(map(str, s[k]))}" for n, s in shapes.items())
    return params


def write_repository(
    dest: str | Path,
    onnx: str | Path,
    serve: ServeConfig,
    engine: EngineConfig | None = None,
    *,
    name: str,
    plan: str | Path | None = None,
    pending_plan: bool = False,
    facts: Mapping[str, Any] | None = None,
) -> Repository:
    """Write the repository ``dest`` (replacing an older one); see the module docstring.

    ``plan``: the built engine (checked against ``onnx``); ``pending_plan``: no plan here, the
    target bundle builds it (its config waits at the root); ``facts``: what the README says
    about the model (sparsity, INT8, TensorRT version).
    """
    from nmdeploy.engine.client_script import client_script, repository_readme

    dest, onnx = Path(dest), Path(onnx)
    engine = engine or EngineConfig()
    check_model_name(name)
    graph = _read(onnx)
    inputs, outputs = graph.inputs, graph.outputs
    max_batch = _batch_of(inputs, outputs, serve.max_batch, engine.max_batch, onnx)
    plan_inputs = None
    if plan is not None:
        _, max_batch, plan_inputs = check_plan(plan, onnx, serve.max_batch if max_batch else 0, graph)
    preferred = serve.preferred_batch if serve.preferred_batch is not None else (engine.opt_batch,)
    preferred = tuple(b for b in preferred if b <= max_batch)
    batched = max_batch > 0
    ins, outs = _specs(inputs, batched), _specs(outputs, batched)
    header = [f"written by nmdeploy from {onnx.name}"]
    onnx_name = f"{name}_onnx"
    check_model_name(onnx_name, "the ONNX model's name")
    models = [onnx_name]
    with staged_folder(dest) as stage:
        accelerator = _accelerator(graph.qdq, inputs, onnx_name, max_batch, serve, engine, plan_inputs)
        (stage / onnx_name / "1").mkdir(parents=True)
        for file in onnx_files(onnx):  # a model past 2 GB keeps its external data beside it
            shutil.copyfile(file, stage / onnx_name / "1" / ("model.onnx" if file == onnx else file.name))
        (stage / onnx_name / "config.pbtxt").write_text(
            render_config(onnx_name, "onnxruntime_onnx", ins, outs, max_batch, serve, preferred, accelerator, header)
        )
        pending = None
        if plan is not None or pending_plan:
            text = render_config(name, "tensorrt_plan", ins, outs, max_batch, serve, preferred, header=header)
            if plan is not None:
                (stage / name / "1").mkdir(parents=True)
                shutil.copyfile(plan, stage / name / "1" / "model.plan")
                (stage / name / "config.pbtxt").write_text(text)
            else:
                pending = name
                (stage / f"{name}{PENDING_SUFFIX}").write_text(text)
            models.insert(0, name)
        described = {  # what client.py sends: every model takes the same inputs
            "max_batch": max_batch,
            "inputs": [{"name": s.name, "dtype": t.dtype, "dims": list(s.dims)} for t, s in zip(inputs, ins)],
            "outputs": [t.name for t in outputs],
        }
        first = onnx_name if pending else models[0]  # a model that loads as it is
        (stage / "client.py").write_text(client_script({m: described for m in models}, first))
        (stage / "README.md").write_text(
            repository_readme(models, pending, onnx_name, max_batch, serve, dict(facts or {}))
        )
    files = tuple(sorted(p for p in dest.rglob("*") if p.is_file()))
    return Repository(dest, tuple(models), pending, files)

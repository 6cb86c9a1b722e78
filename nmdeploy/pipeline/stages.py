"""The build's stages, in order: dense, sparse, export, verify, quantize, engine, serve.

Each stage is a :class:`Stage`: its name, what it reads (the recipe parts and artifacts
whose hashes decide whether it must run again), the artifacts it may write, and ``run``,
which does the work and returns a :class:`StageResult` (the files written, what it
measured, its status). :func:`run_stages` runs them, keeps a stage whose inputs and outputs
are unchanged, and records each result in the manifest. Artifacts are written atomically
by the library calls (``export_onnx``, ``quantize_int8``, ``_atomic.write_atomic``), so an
interrupted or failed stage leaves either the previous artifact or none.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nmdeploy._atomic import write_atomic
from nmdeploy.data import open_data
from nmdeploy.engine.config import EngineConfig
from nmdeploy.errors import ExportError
from nmdeploy.export.loading import load_checkpoint
from nmdeploy.pipeline.context import BuildContext
from nmdeploy.pipeline.manifest import StageRecord, inputs_key
from nmdeploy.pipeline.recipe import Recipe
from nmdeploy.quant.calibset import make_calibration_set
from nmdeploy.quant.config import DEFAULT_COUNT
from nmdeploy.train.loop import EpochMetrics, fit
from nmdeploy.train.tasks import Classification

__all__ = ["BUNDLE", "STAGES", "Stage", "StageInputs", "StageResult", "run_stages", "stage_names"]

BUNDLE = "target-bundle"


@dataclass(frozen=True)
class StageInputs:
    """What a stage's result depends on: recipe parts (by name) and artifact files."""

    settings: Mapping[str, Any]
    files: Mapping[str, Path] = field(default_factory=dict)


@dataclass(frozen=True)
class StageResult:
    """What a stage did: the files it wrote, what it measured, and its status.

    ``status`` is ``done``, or ``bundled`` for an engine stage that wrote the target bundle
    instead of an engine; ``note`` says why in the manifest.
    """

    outputs: tuple[Path, ...]
    metrics: Mapping[str, Any]
    status: str = "done"
    note: str = ""


@dataclass(frozen=True)
class Stage:
    """One step of the build. ``run(ctx, key)`` gets the hash of the stage's inputs (its
    checkpoints are named after it, so a changed input never resumes a stale one)."""

    name: str
    reads: Callable[[BuildContext], StageInputs]
    writes: tuple[str, ...]
    run: Callable[[BuildContext, str], StageResult]
    enabled: Callable[[Recipe], bool] = lambda recipe: True
    training: bool = False  # runs on every process under torchrun


# -- helpers --------------------------------------------------------------------------------------


def _format(metric: str, value: float) -> str:
    return f"{value:.2%}" if metric == "top-1" else f"{value:.4f}"


def _epoch_line(stage: str, total: int, m: EpochMetrics, metric: str) -> str:
    val = f", val {_format(metric, m.val_score)}" if m.val_score is not None else ""
    return f"{stage} epoch {m.epoch}/{total}: loss {m.train_loss:.4f}, train {_format(metric, m.train_score)}{val} ({m.seconds:.1f} s)"


def _train(
    ctx: BuildContext, stage: str, model: nn.Module, config: Any, key: str, sparsifier: Any = None
) -> list[dict[str, Any]]:
    """Run the fine-tune loop with a checkpoint named after the stage's inputs (so it resumes)."""
    ctx.work.mkdir(parents=True, exist_ok=True)
    checkpoint = ctx.work / f"{stage}-{key[:16]}.ckpt"
    model.to(ctx.device)
    label = f"{stage} training"
    task = ctx.task
    result = fit(
        model,
        ctx.data("train"),
        ctx.data("val"),
        config,
        sparsifier,
        checkpoint,
        on_epoch=lambda m: ctx.say(_epoch_line(stage, config.epochs, m, task.metric)),
        on_step=(lambda done, total: ctx.progress(label, done, total)) if ctx.progress else None,
        task=task,
        teacher=ctx.teacher() if stage != "dense" else None,
        distill=ctx.distill if stage != "dense" else None,
        workers=ctx.recipe.data.workers,
        names=("data.train", "data.val"),
    )
    if result.resumed_step:
        ctx.say(
            f"{stage}: resumed in epoch {result.resumed_from + 1} after step {result.resumed_step} from {checkpoint}"
        )
    elif result.resumed_from:
        ctx.say(f"{stage}: resumed after epoch {result.resumed_from} from {checkpoint}")
    model.cpu()
    if ctx.main:
        checkpoint.unlink(missing_ok=True)
    return [dataclasses.asdict(m) for m in result.history]


def _skipped(ctx: BuildContext) -> dict[str, Any]:
    """``data_skipped`` for the manifest: what ``data.skip_bad`` skipped so far (this process's share under torchrun)."""
    skipped = ctx.skipped()
    if skipped:
        ctx.say(
            "data: skipped unreadable files: "
            + ", ".join(f"{which} {info['count']} (first: {info['first'][0]})" for which, info in skipped.items())
        )
    return {"data_skipped": skipped} if skipped else {}


def _save_weights(path: Path, payload: dict[str, Any]) -> None:
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    write_atomic(path, buffer.getvalue())


def _as_dict(config: Any) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(config)))  # tuples as lists: the hash of what the recipe file says


def _data_key(recipe: Recipe) -> dict[str, Any]:
    """The data settings a stage's result depends on: all but the worker count, which changes nothing."""
    settings = _as_dict(recipe.data)
    settings.pop("workers")
    return settings


def _onnx_score(ctx: BuildContext, path: Path) -> float:
    """The task's score of an ONNX model on the validation data (ONNX Runtime, CPU), streamed in batches."""
    from nmdeploy.data.loader import resolve_workers
    from nmdeploy.quant.evaluate import onnx_batches

    task, teacher, data = ctx.task, ctx.teacher(), ctx.data("val")
    total, count = 0.0, 0
    for chunk, outputs in onnx_batches(path, data, workers=resolve_workers(ctx.recipe.data.workers, data)):
        inputs = tuple(torch.from_numpy(a) for a in chunk.inputs.values())
        labels = None if chunk.labels is None else torch.from_numpy(chunk.labels)
        targets = task.targets(teacher, inputs, labels)
        total += task.score_sum(torch.from_numpy(outputs[0]).float(), targets)
        count += len(chunk)
    return total / max(1, count)


def _tensorrt_here() -> str:
    """What TensorRT this machine offers the engine stage (part of its inputs: installing it redoes the stage)."""
    from nmdeploy.engine.trt import probe
    from nmdeploy.errors import EngineUnavailable

    try:
        return f"tensorrt {probe().__version__}"
    except EngineUnavailable:
        return "none"


# -- dense ------------------------------------------------------------------------------------------


def _hf_key(ctx: BuildContext) -> dict[str, Any]:
    """An ``hf:`` model's task and config overrides, where set (absent otherwise, so other builds keep their stage keys)."""
    m = ctx.recipe.model
    return {
        **({"model.hf_task": m.hf_task} if m.hf_task else {}),
        **({"model.hf_config": m.hf_config} if m.hf_config else {}),
    }


def _dense_reads(ctx: BuildContext) -> StageInputs:
    model = ctx.recipe.model
    settings = {
        "model.spec": model.spec,
        "data": _data_key(ctx.recipe),
        "task": {
            k: v for k, v in _as_dict(ctx.recipe.task).items() if not k.startswith("distill")
        },  # the teacher's own
        "model.pretrained": model.pretrained,
        **_hf_key(ctx),
    }
    if model.checkpoint:
        return StageInputs(settings, {"checkpoint": Path(model.checkpoint)})
    if not model.pretrained:
        settings["dense"] = _as_dict(ctx.recipe.dense)
    return StageInputs(settings)


def _dense_run(ctx: BuildContext, key: str) -> StageResult:
    checkpoint, pretrained = ctx.recipe.model.checkpoint, ctx.recipe.model.pretrained
    model = ctx.new_model()
    history: list[dict[str, Any]] = []
    if checkpoint:
        load_checkpoint(model, checkpoint)
        from nmdeploy.sparsity import finalize

        finalize(model)  # a checkpoint saved mid-sparsification becomes plain weights
        ctx.say(f"dense: pretrained weights from {checkpoint} (dense pre-training skipped)")
    elif pretrained:
        ctx.say(f"dense: the weights {ctx.recipe.model.spec} comes with (dense pre-training skipped)")
    else:
        history = _train(ctx, "dense", model, ctx.recipe.dense, key)
    path = ctx.out / "dense.pt"
    if ctx.main:
        _save_weights(path, {"model": model.state_dict()})
    score = ctx.score(model) if isinstance(ctx.task, Classification) else 1.0  # the dense model is the teacher
    model.cpu()
    source = "checkpoint" if checkpoint else "pretrained" if pretrained else "trained"
    metrics = {"val_score": score, "metric": ctx.task.metric, "history": history, "source": source}
    return StageResult((path,), {**metrics, **_skipped(ctx)})


# -- sparse -----------------------------------------------------------------------------------------


def _sparse_reads(ctx: BuildContext) -> StageInputs:
    r = ctx.recipe
    return StageInputs(
        {
            "model.spec": r.model.spec,
            "data": _data_key(r),
            "task": _as_dict(r.task),
            "sparsity": _as_dict(r.sparsity),
            "finetune": _as_dict(r.finetune),
            **_hf_key(ctx),
        },
        {"dense": ctx.out / "dense.pt"},
    )


def _sparse_run(ctx: BuildContext, key: str) -> StageResult:
    from nmdeploy.sparsity import finalize, sparsify

    s = ctx.recipe.sparsity.with_end_for(ctx.recipe.finetune.epochs)
    model = load_checkpoint(ctx.new_model(), ctx.out / "dense.pt")
    examples = tuple(torch.from_numpy(a) for a in ctx.sample("val", 8).inputs.values()) if s.permute else None
    sp = sparsify(model, config=s, example_inputs=examples)
    ctx.say(
        f"sparse: {s.method} {s.pattern} on {len(sp.sparse_layers)} layer(s); "
        f"{len(sp.targets) - len(sp.sparse_layers)} kept dense"
    )
    if sp.permutation is not None:
        ctx.say(f"sparse: {_permutation_line(sp.permutation)}")
    one_shot = ctx.recipe.finetune.epochs == 0
    if one_shot:
        ctx.say(f"sparse: one-shot {s.method} {s.pattern} (finetune.epochs = 0): pruned by magnitude, not fine-tuned")
        history: list[dict[str, Any]] = []
    else:
        if ctx.distill is not None:
            d = ctx.distill
            ctx.say(
                f"sparse: learning from the dense model's logits too (weight {d.weight:g}, temperature {d.temperature:g})"
            )
        history = _train(ctx, "sparse", model, ctx.recipe.finetune, key, sp)
    finalize(model)
    score = ctx.score(model)
    model.cpu()
    path = ctx.out / "sparse.pt"
    if ctx.main:
        _save_weights(
            path,
            {"model": model.state_dict(), "pattern": s.pattern, "method": s.method, "layers": list(sp.sparse_layers)},
        )
    metrics = {
        "val_score": score,
        "metric": ctx.task.metric,
        "history": history,
        "sparse_layers": list(sp.sparse_layers),
        "one_shot": one_shot,
        "permutation": sp.permutation.to_dicts() if sp.permutation is not None else None,
        "distill": dataclasses.asdict(ctx.distill) if ctx.distill is not None and not one_shot else None,
    }
    return StageResult((path,), {**metrics, **_skipped(ctx)})


def _permutation_line(report: Any) -> str:
    """One line on what channel permutation did: how many layers, and the mean gain in kept magnitude."""
    gains = [r.gain for r in report if r.permuted]
    mean = f", kept magnitude {sum(gains) / len(gains):+.2%} on average" if gains else ""
    return f"channel permutation on {len(gains)} of {len(report.rows)} sparse layer(s){mean} ({report.seconds:.1f} s)"


# -- export and verify ------------------------------------------------------------------------------


def _export_reads(ctx: BuildContext) -> StageInputs:
    m = ctx.recipe.model
    return StageInputs(
        {
            "model.spec": m.spec,
            "model.input_shape": ctx.input_shape,
            "export": _as_dict(ctx.recipe.export),
            **_hf_key(ctx),
        },
        {"sparse": ctx.out / "sparse.pt"},
    )


def _export_run(ctx: BuildContext, key: str) -> StageResult:
    from nmdeploy.export.onnx import export_onnx

    model = load_checkpoint(ctx.new_model(), ctx.out / "sparse.pt").eval()
    batch = ctx.input_shape[0]
    from nmdeploy.data.loader import to_batch

    sample = to_batch(ctx.sample("val", batch)).inputs
    report = export_onnx(model, sample, ctx.out / "model.onnx", config=ctx.recipe.export)
    worst = max(report.parity, key=lambda p: p.max_abs_error)
    ctx.say(f"export: model.onnx (opset {report.opset}), ONNX Runtime vs PyTorch max |diff| {worst.max_abs_error:.2e}")
    return StageResult(
        (Path(report.path),), {"opset": report.opset, "max_abs_error": worst.max_abs_error, "cosine": worst.cosine}
    )


def _verify_reads(ctx: BuildContext) -> StageInputs:
    return StageInputs({"sparsity.pattern": ctx.recipe.sparsity.pattern}, {"onnx": ctx.out / "model.onnx"})


def _verify_run(ctx: BuildContext, key: str) -> StageResult:
    from nmdeploy.export.verify import verify_onnx

    report = verify_onnx(ctx.out / "model.onnx", ctx.recipe.sparsity.pattern)
    path = ctx.out / "verify.json"
    write_atomic(path, report.to_json() + "\n")
    required = [layer for layer in report.layers if layer.required]
    if not report.ok:
        bad = report.failures[0]
        raise ExportError(
            f"verify FAILED: {len(report.failures)} layer(s) of model.onnx are not {report.pattern} "
            f"(first: {bad.weight}, {bad.violations} bad group(s)); see {path}"
        )
    ctx.say(f"verify: {report.pattern} PASSED on {len(required)} layer(s), {len(report.layers) - len(required)} dense")
    return StageResult(
        (path,),
        {
            "layers": len(report.layers),
            "nm_layers": len(required),
            "hw_2of4_layers": sum(1 for layer in required if layer.hw_2of4),
        },
    )


# -- quantize ---------------------------------------------------------------------------------------


def _calibration_spec(recipe: Recipe) -> str:
    return recipe.quantize.calibration or recipe.data.train


def _quantize_reads(ctx: BuildContext) -> StageInputs:
    r = ctx.recipe
    return StageInputs(
        {
            "quantize": _as_dict(r.quantize),
            "calibration": _calibration_spec(r),
            "data": _data_key(r),
            "task": _as_dict(r.task),
            "sparsity.pattern": r.sparsity.pattern,
        },
        {"onnx": ctx.out / "model.onnx", "dense": ctx.out / "dense.pt"},
    )


def _quantize_run(ctx: BuildContext, key: str) -> StageResult:
    from nmdeploy.quant.int8 import quantize_int8

    q = ctx.recipe.quantize
    pattern = ctx.recipe.sparsity.pattern
    from nmdeploy.data.loader import resolve_workers

    source = open_data(_calibration_spec(ctx.recipe), "train", ctx.recipe.data)  # all of it, not augmented
    workers = resolve_workers(ctx.recipe.data.workers, source)
    calib, _ = make_calibration_set(source, q.draw_count(), q.seed, workers, at_most=q.count is None)
    if q.count is None and len(calib) < DEFAULT_COUNT:
        ctx.say(
            f"quantize: calibrating on all {len(calib)} samples of the calibration data (fewer than {DEFAULT_COUNT})"
        )
    report = quantize_int8(
        ctx.out / "model.onnx", ctx.out / "model.int8.onnx", calib, config=q, pattern=pattern, progress=ctx.progress
    )
    acc = report.accuracy
    metric = ctx.task.metric
    onnx_score, int8_score = (_onnx_score(ctx, ctx.out / name) for name in ("model.onnx", "model.int8.onnx"))
    ctx.say(
        f"quantize: model.int8.onnx, {len(report.quantized)} INT8 layer(s), {len(report.sparse_layers)} kept "
        f"{pattern}; {metric} FP32 {_format(metric, onnx_score)} -> INT8 {_format(metric, int8_score)}"
    )
    return StageResult(
        (Path(report.path),),
        {
            "onnx_score": onnx_score,
            "int8_score": int8_score,
            "metric": metric,
            "cosine_int8_vs_fp32": acc.cosine[0].mean if acc.cosine else None,
            "int8_layers": len(report.quantized),
            "nm_layers": len(report.sparse_layers),
            "calibration_samples": report.calibration_samples,
            **({"calibration_skipped": len(calib.skipped)} if calib.skipped else {}),
        },
    )


# -- engine -----------------------------------------------------------------------------------------


def _engine_source(ctx: BuildContext) -> Path:
    return ctx.out / ("model.int8.onnx" if ctx.recipe.quantize.enabled else "model.onnx")


def _engine_config(ctx: BuildContext) -> EngineConfig:
    """``engine``, with the token axis of a text model ranging over 1..data.max_length where engine.shapes is null."""
    config = ctx.recipe.engine
    length = ctx.sequence_length
    if config.shapes is None and length:
        config = dataclasses.replace(config, shapes={"sequence": (1, length, length)})
    return config


def _engine_reads(ctx: BuildContext) -> StageInputs:
    return StageInputs(
        {"engine": _as_dict(_engine_config(ctx)), "tensorrt": _tensorrt_here()},
        {"onnx": _engine_source(ctx), "verify": ctx.out / "verify.json"},
    )


def _engine_run(ctx: BuildContext, key: str) -> StageResult:
    from nmdeploy.engine.deploy import build_or_bundle

    result = build_or_bundle(
        _engine_source(ctx),
        ctx.out / "model.plan",
        ctx.out / BUNDLE,
        _engine_config(ctx),
        verify=ctx.out / "verify.json",
        manifest=ctx.manifest.to_dict(),
    )
    if result.report is None:
        ctx.say(
            f"engine: bundled for target in {BUNDLE}/ ({result.problem}); "
            f"on the target GPU run: python3 {ctx.out / BUNDLE}/build_engine.py"
        )
        return StageResult(
            result.files,
            {"built": False, "bundle": BUNDLE, "reason": result.reason, "problem": result.problem},
            "bundled",
            "bundled for target",
        )
    report = result.report
    picked = sum(1 for row in report.layers if row.picked)
    eligible = sum(1 for row in report.layers if row.eligible)
    ctx.say(
        f"engine: model.plan (TensorRT {report.tensorrt}); sparse kernels picked for {picked} of {eligible} eligible layer(s)"
    )
    return StageResult(
        result.files,
        {
            "built": True,
            "tensorrt": report.tensorrt,
            "flags": list(report.build.builder_flags),
            "eligible_layers": eligible,
            "picked_layers": picked,
            "seconds_build": report.seconds,
        },
    )


# -- serve ------------------------------------------------------------------------------------------

TRITON = "triton"


def _plan_state(ctx: BuildContext) -> str:
    """``built`` (model.plan is here), ``bundled`` (the target builds it) or ``none`` (engine stage off)."""
    if not ctx.recipe.engine.enabled:
        return "none"
    record = ctx.manifest.stages.get("engine")
    status = record.status if record is not None else (ctx.manifest.previous.get("engine") or {}).get("status")
    if status in ("done", "skipped") and (ctx.out / "model.plan").is_file():
        return "built"
    return "bundled" if (ctx.out / BUNDLE / "bundle.json").is_file() else "none"


# factory names that say nothing of the model: its module names it instead (mymodels:build -> mymodels)
_GENERIC_FACTORIES = frozenset(
    f"{verb}{noun}"
    for verb in ("build", "create", "make", "get", "load", "new")
    for noun in ("", "_model", "_net", "_network")
) | {"model", "main", "factory", "net", "network"}


def serve_name(spec: str, name: str | None = None) -> str:
    """``serve.name``, else the model's: ``fashion-resnet``, an ``hf:`` folder's name, a factory's name
    (its module's last part when the factory is called ``build``, ``create_model`` and the like)."""
    from nmdeploy.engine.repository import default_name

    if name:
        return name
    spec = spec.removeprefix("hf:").rstrip("/").rsplit("/", 1)[-1]
    module, _, factory = spec.rpartition(":")
    if module and factory.lower() in _GENERIC_FACTORIES:
        factory = module.rsplit(".", 1)[-1]
    return default_name(factory or module)


def _serve_name(ctx: BuildContext) -> str:
    return serve_name(ctx.recipe.model.spec, ctx.recipe.serve.name)


def _serve_reads(ctx: BuildContext) -> StageInputs:
    files = {"onnx": _engine_source(ctx)}
    state = _plan_state(ctx)
    if state == "built":
        files.update(plan=ctx.out / "model.plan", report=ctx.out / "engine_report.json")
    return StageInputs(
        {
            "serve": _as_dict(ctx.recipe.serve),
            "engine": _as_dict(_engine_config(ctx)),
            "name": _serve_name(ctx),
            "plan": state,
        },
        files,
    )


def _serve_run(ctx: BuildContext, key: str) -> StageResult:
    from nmdeploy.engine.repository import write_repository

    state = _plan_state(ctx)
    sp, engine = ctx.recipe.sparsity, ctx.manifest.stages.get("engine")
    facts = {"sparsity": f"{sp.pattern} ({sp.method})", "INT8": "yes" if ctx.recipe.quantize.enabled else "no"}
    if engine is not None and engine.metrics.get("tensorrt"):
        facts["TensorRT"] = engine.metrics["tensorrt"]
    repo = write_repository(
        ctx.out / TRITON,
        _engine_source(ctx),
        ctx.recipe.serve,
        _engine_config(ctx),
        name=_serve_name(ctx),
        plan=ctx.out / "model.plan" if state == "built" else None,
        pending_plan=state == "bundled",
        facts=facts,
    )
    waits = (
        f"; {repo.pending} waits for its plan (python3 {BUNDLE}/build_engine.py --triton {TRITON})"
        if repo.pending
        else ""
    )
    ctx.say(f"serve: Triton model repository {TRITON}/ with {', '.join(repo.models)}{waits}")
    return StageResult(repo.files, {"repository": TRITON, "models": list(repo.models), "pending": repo.pending})


STAGES: tuple[Stage, ...] = (
    Stage("dense", _dense_reads, ("dense.pt",), _dense_run, training=True),
    Stage("sparse", _sparse_reads, ("sparse.pt",), _sparse_run, training=True),
    Stage("export", _export_reads, ("model.onnx",), _export_run),
    Stage("verify", _verify_reads, ("verify.json",), _verify_run),
    Stage("quantize", _quantize_reads, ("model.int8.onnx",), _quantize_run, enabled=lambda r: r.quantize.enabled),
    Stage(
        "engine",
        _engine_reads,
        ("model.plan", "model.dense.plan", "engine_report.json", BUNDLE),
        _engine_run,
        enabled=lambda r: r.engine.enabled,
    ),
    Stage("serve", _serve_reads, (TRITON,), _serve_run, enabled=lambda r: r.serve.triton),
)


def stage_names(training: bool | None = None) -> tuple[str, ...]:
    """The stages' names in build order; only the training (or the other) ones when asked."""
    return tuple(s.name for s in STAGES if training is None or s.training == training)


def run_stages(ctx: BuildContext, names: tuple[str, ...]) -> None:
    """Run the stages in ``names`` in order, keeping each one whose inputs and outputs are unchanged."""
    for stage in (s for s in STAGES if s.name in names):
        if not stage.enabled(ctx.recipe):
            ctx.manifest.record(stage.name, StageRecord("disabled", note=f"{stage.name}.enabled is false"))
            continue
        reads = stage.reads(ctx)
        inputs = inputs_key(reads.settings, reads.files)
        kept = ctx.manifest.reusable(stage.name, inputs)
        if kept is not None:
            ctx.say(f"{stage.name}: inputs unchanged since the last build, kept")
            if ctx.main:
                ctx.manifest.record(stage.name, kept)
            continue
        began = time.perf_counter()
        result = stage.run(ctx, hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest())
        seconds = time.perf_counter() - began
        if ctx.world > 1:
            torch.distributed.barrier()  # the other ranks read what rank 0 just wrote
        if ctx.main:
            ctx.manifest.record(
                stage.name,
                StageRecord(
                    result.status,
                    inputs,
                    ctx.manifest.outputs_of(result.outputs),
                    seconds,
                    dict(result.metrics),
                    result.note,
                ),
            )

"""The build's stages, in order: dense, sparse, export, verify, quantize, engine.

Each stage is a function of the :class:`BuildContext`. It names the recipe parts and the
artifacts it reads (their hashes decide whether it must run again) and returns the files
it wrote and what it measured. Artifacts are written atomically by the library calls
(``export_onnx``, ``quantize_int8``, ``_atomic.write_atomic``), so an interrupted or failed
stage leaves either the previous artifact or none.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from nmdeploy._atomic import write_atomic
from nmdeploy.data import ArrayData, load_data
from nmdeploy.errors import ExportError, InputError
from nmdeploy.export.loading import build_model, load_checkpoint
from nmdeploy.pipeline.manifest import Manifest, StageRecord, inputs_key
from nmdeploy.pipeline.recipe import Recipe
from nmdeploy.quant.calibset import draw_indices, make_calibration_set
from nmdeploy.train.loop import EpochMetrics, evaluate, fit
from nmdeploy.train.tasks import Classification, Distillation, Task, load_task

__all__ = ["BuildContext", "STAGES", "TRAINING_STAGES", "run_stages"]

Progress = Callable[[str, int, int], None]


@dataclass
class BuildContext:
    recipe: Recipe
    out: Path
    manifest: Manifest
    device: torch.device
    say: Callable[[str], None] = print
    progress: Progress | None = None
    rank: int = 0
    world: int = 1
    _data: dict[str, ArrayData] = field(default_factory=dict)
    _targets: dict[str, torch.Tensor] = field(default_factory=dict)
    _teacher: nn.Module | None = None

    @property
    def main(self) -> bool:
        """Only the first process writes artifacts (the others train alongside it under torchrun)."""
        return self.rank == 0

    @property
    def work(self) -> Path:
        return self.out / ".work"  # resumable training checkpoints, removed when their stage is done

    @property
    def task(self) -> Task:
        t = self.recipe.task
        return Distillation(t.mse_weight) if t.spec == "distillation" else load_task(t.spec)

    def data(self, which: str) -> ArrayData:
        """The train or val data of the recipe (its class-balanced subset when one is asked for)."""
        if which not in self._data:
            spec = self.recipe.data.train if which == "train" else self.recipe.data.val
            data = load_data(spec, "train" if which == "train" else "test")
            key = "data.train" if which == "train" else "data.val"
            if data.labels is None and isinstance(self.task, Classification):
                raise InputError(f"{key} = {spec!r} has no labels; classification needs integer labels (y)")
            subset = getattr(self.recipe.data, f"{which}_subset")
            if subset and subset < len(data):
                data = data.take(np.sort(draw_indices(subset, len(data), data.labels, 0)))
            self._data[which] = data
        return self._data[which]

    def inputs(self, which: str) -> tuple[torch.Tensor, ...]:
        """The model's inputs, in the data's order: float arrays as float32, integer arrays (token ids) as int64."""
        return tuple(torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64 if np.issubdtype(a.dtype, np.integer) else np.float32))
                     for a in self.data(which).inputs.values())

    def targets(self, which: str) -> torch.Tensor:
        """What the task trains towards and scores against: the labels, or the dense model's outputs."""
        if which not in self._targets:
            labels = self.data(which).labels
            label_tensor = None if labels is None else torch.from_numpy(np.asarray(labels))
            teacher = None
            if not isinstance(self.task, Classification):
                if self._teacher is None:  # loaded once for the train and the val targets
                    self._teacher = load_checkpoint(self.new_model(), self.out / "dense.pt").to(self.device)
                teacher = self._teacher
            self._targets[which] = self.task.targets(teacher, self.inputs(which), label_tensor)
        return self._targets[which]

    def score(self, model: nn.Module, which: str = "val") -> float:
        return evaluate(model.to(self.device), self.inputs(which), self.targets(which), self.task)

    def new_model(self) -> nn.Module:
        torch.manual_seed(self.recipe.dense.seed)  # the same initial weights on every run and rank
        return build_model(self.recipe.model.spec)


def check_inputs(ctx: BuildContext) -> None:
    """Fail before any work when the model, its input shape and the data do not fit together."""
    recipe = ctx.recipe
    task = ctx.task
    model = ctx.new_model().eval()
    shape = list(recipe.model.input_shape)
    arrays = list(ctx.data("val").inputs.values())
    dtypes = [torch.int64 if np.issubdtype(a.dtype, np.integer) else torch.float32 for a in arrays]
    sample = [torch.zeros(shape, dtype=dtypes[0])] + [torch.zeros([shape[0], *a.shape[1:]], dtype=d) for a, d in zip(arrays[1:], dtypes[1:])]
    try:
        with torch.no_grad():
            logits = model(*sample)
    except Exception as exc:
        detail = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise InputError(f"model.input_shape = {shape} does not fit model {recipe.model.spec!r} ({detail}); set the shape the model takes") from None
    classify = isinstance(task, Classification)
    if not isinstance(logits, torch.Tensor) or (classify and logits.ndim != 2):
        got = list(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise InputError(f"model {recipe.model.spec!r} returns {got}; the classification trainer needs logits [batch, classes]")
    checkpoint = recipe.model.checkpoint
    if checkpoint:
        if not Path(checkpoint).is_file():
            raise InputError(f"model.checkpoint = {checkpoint!r}: no such file; give the path of the pretrained weights or null to train")
        load_checkpoint(model, checkpoint)  # a checkpoint of another model fails here, naming the file
    for which in ("train", "val"):
        data = ctx.data(which)
        x = next(iter(data.inputs.values()))
        spec = getattr(recipe.data, which)
        if list(x.shape[1:]) != shape[1:]:
            raise InputError(f"data.{which} = {spec!r} has samples of shape {list(x.shape[1:])} but model.input_shape is {shape}; "
                             "make them agree")
        if classify and (data.labels.min(initial=0) < 0 or data.labels.max(initial=0) >= logits.shape[1]):
            raise InputError(f"data.{which} = {spec!r} has labels up to {int(data.labels.max())} but the model has {logits.shape[1]} outputs; "
                             f"give labels 0..{logits.shape[1] - 1} or a model with more outputs")


def _format(metric: str, value: float) -> str:
    return f"{value:.2%}" if metric == "top-1" else f"{value:.4f}"


def _epoch_line(stage: str, total: int, m: EpochMetrics, metric: str) -> str:
    val = f", val {_format(metric, m.val_score)}" if m.val_score is not None else ""
    return f"{stage} epoch {m.epoch}/{total}: loss {m.train_loss:.4f}, train {_format(metric, m.train_score)}{val} ({m.seconds:.1f} s)"


def _train(ctx: BuildContext, stage: str, model: nn.Module, config: Any, key: str, sparsifier: Any = None) -> list[dict[str, Any]]:
    """Run the fine-tune loop with a checkpoint named after the stage's inputs (so it resumes)."""
    ctx.work.mkdir(parents=True, exist_ok=True)
    checkpoint = ctx.work / f"{stage}-{key[:16]}.ckpt"
    model.to(ctx.device)
    label = f"{stage} training"
    task = ctx.task
    result = fit(
        model, (ctx.inputs("train"), ctx.targets("train")), (ctx.inputs("val"), ctx.targets("val")), config, sparsifier,
        checkpoint, on_epoch=lambda m: ctx.say(_epoch_line(stage, config.epochs, m, task.metric)),
        on_step=(lambda done, total: ctx.progress(label, done, total)) if ctx.progress else None, task=task,
    )
    if result.resumed_step:
        ctx.say(f"{stage}: resumed in epoch {result.resumed_from + 1} after step {result.resumed_step} from {checkpoint}")
    elif result.resumed_from:
        ctx.say(f"{stage}: resumed after epoch {result.resumed_from} from {checkpoint}")
    model.cpu()
    if ctx.main:
        checkpoint.unlink(missing_ok=True)
    return [dataclasses.asdict(m) for m in result.history]


def _save_weights(path: Path, payload: dict[str, Any]) -> None:
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    write_atomic(path, buffer.getvalue())


# -- the stages: each returns (config parts, input files, body) -----------------------------------

def dense_stage(ctx: BuildContext) -> tuple[dict[str, Any], dict[str, Path], Callable[[str], tuple[list[Path], dict[str, Any]]]]:
    r = ctx.recipe.to_dict()
    checkpoint = ctx.recipe.model.checkpoint
    pretrained = ctx.recipe.model.pretrained
    config = {"model.spec": r["model"]["spec"], "data": r["data"], "task": r["task"], "model.pretrained": pretrained}
    files: dict[str, Path] = {}
    if checkpoint:
        files["checkpoint"] = Path(checkpoint)
    elif not pretrained:
        config["dense"] = r["dense"]

    def body(key: str) -> tuple[list[Path], dict[str, Any]]:
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
        return [path], {"val_score": score, "metric": ctx.task.metric, "history": history, "source": source}

    return config, files, body


def sparse_stage(ctx: BuildContext) -> tuple[dict[str, Any], dict[str, Path], Callable[[str], tuple[list[Path], dict[str, Any]]]]:
    r = ctx.recipe.to_dict()
    config = {"model.spec": r["model"]["spec"], "data": r["data"], "task": r["task"], "sparsity": r["sparsity"],
              "finetune": r["finetune"]}

    def body(key: str) -> tuple[list[Path], dict[str, Any]]:
        from nmdeploy.sparsity import finalize, sparsify
        from nmdeploy.sparsity.methods import get_method

        s = ctx.recipe.sparsity
        model = load_checkpoint(ctx.new_model(), ctx.out / "dense.pt")
        accepted = {f.name for f in dataclasses.fields(get_method(s.method).config_class)}
        options = {k: v for k, v in (("decay", s.decay), ("tau", s.tau), ("rescale", s.rescale)) if k in accepted}
        sp = sparsify(model, s.pattern, s.method, s.schedule, s.start_epoch, s.end_epoch,
                      include=list(s.include) if s.include is not None else None,
                      exclude=s.exclude if isinstance(s.exclude, str) else list(s.exclude), options=options)
        ctx.say(f"sparse: {s.method} {s.pattern} on {len(sp.sparse_layers)} layer(s); "
                f"{len(sp.targets) - len(sp.sparse_layers)} kept dense")
        history = _train(ctx, "sparse", model, ctx.recipe.finetune, key, sp)
        finalize(model)
        score = ctx.score(model)
        model.cpu()
        path = ctx.out / "sparse.pt"
        if ctx.main:
            _save_weights(path, {"model": model.state_dict(), "pattern": s.pattern, "method": s.method,
                                 "layers": list(sp.sparse_layers)})
        return [path], {"val_score": score, "metric": ctx.task.metric, "history": history, "sparse_layers": list(sp.sparse_layers)}

    return config, {"dense": ctx.out / "dense.pt"}, body


def export_stage(ctx: BuildContext) -> tuple[dict[str, Any], dict[str, Path], Callable[[str], tuple[list[Path], dict[str, Any]]]]:
    r = ctx.recipe.to_dict()
    config = {"model.spec": r["model"]["spec"], "model.input_shape": r["model"]["input_shape"], "export": r["export"]}

    def body(key: str) -> tuple[list[Path], dict[str, Any]]:
        from nmdeploy.export.onnx import export_onnx

        model = load_checkpoint(ctx.new_model(), ctx.out / "sparse.pt").eval()
        batch = ctx.recipe.model.input_shape[0]
        sample = tuple(t[:batch] for t in ctx.inputs("val"))
        report = export_onnx(model, sample, ctx.out / "model.onnx", ctx.recipe.export.dynamic_batch, ctx.recipe.export.opset)
        worst = max(report.parity, key=lambda p: p.max_abs_error)
        ctx.say(f"export: model.onnx (opset {report.opset}), ONNX Runtime vs PyTorch max |diff| {worst.max_abs_error:.2e}")
        return [Path(report.path)], {"opset": report.opset, "max_abs_error": worst.max_abs_error, "cosine": worst.cosine}

    return config, {"sparse": ctx.out / "sparse.pt"}, body


def verify_stage(ctx: BuildContext) -> tuple[dict[str, Any], dict[str, Path], Callable[[str], tuple[list[Path], dict[str, Any]]]]:
    config = {"sparsity.pattern": ctx.recipe.sparsity.pattern}

    def body(key: str) -> tuple[list[Path], dict[str, Any]]:
        from nmdeploy.export.verify import verify_onnx

        report = verify_onnx(ctx.out / "model.onnx", ctx.recipe.sparsity.pattern)
        path = ctx.out / "verify.json"
        write_atomic(path, report.to_json() + "\n")
        required = [layer for layer in report.layers if layer.required]
        if not report.ok:
            bad = report.failures[0]
            raise ExportError(f"verify FAILED: {len(report.failures)} layer(s) of model.onnx are not {report.pattern} "
                              f"(first: {bad.weight}, {bad.violations} bad group(s)); see {path}")
        ctx.say(f"verify: {report.pattern} PASSED on {len(required)} layer(s), {len(report.layers) - len(required)} dense")
        return [path], {"layers": len(report.layers), "nm_layers": len(required),
                        "hw_2of4_layers": sum(1 for layer in required if layer.hw_2of4)}

    return config, {"onnx": ctx.out / "model.onnx"}, body


def quantize_stage(ctx: BuildContext) -> tuple[dict[str, Any], dict[str, Path], Callable[[str], tuple[list[Path], dict[str, Any]]]]:
    r = ctx.recipe.to_dict()
    calibration = ctx.recipe.quantize.calibration or ctx.recipe.data.train
    config = {"quantize": r["quantize"], "calibration": calibration, "data.val": [r["data"]["val"], r["data"]["val_subset"]],
              "task": r["task"], "sparsity.pattern": r["sparsity"]["pattern"]}
    files = {"onnx": ctx.out / "model.onnx", "dense": ctx.out / "dense.pt"}

    def body(key: str) -> tuple[list[Path], dict[str, Any]]:
        from nmdeploy.quant.int8 import quantize_int8

        q = ctx.recipe.quantize
        calib, _ = make_calibration_set(load_data(calibration, "train"), q.count, q.seed)
        report = quantize_int8(ctx.out / "model.onnx", ctx.out / "model.int8.onnx", calib, q.method, q.per_channel,
                               exclude=q.exclude, percentile=q.percentile, pattern=ctx.recipe.sparsity.pattern,
                               progress=ctx.progress)
        acc = report.accuracy
        metric = ctx.task.metric
        onnx_score, int8_score = (_onnx_score(ctx, ctx.out / name) for name in ("model.onnx", "model.int8.onnx"))
        ctx.say(f"quantize: model.int8.onnx, {len(report.quantized)} INT8 layer(s), {len(report.sparse_layers)} kept "
                f"{ctx.recipe.sparsity.pattern}; {metric} FP32 {_format(metric, onnx_score)} -> INT8 {_format(metric, int8_score)}")
        return [Path(report.path)], {"onnx_score": onnx_score, "int8_score": int8_score, "metric": metric,
                                     "cosine_int8_vs_fp32": acc.cosine[0].mean if acc.cosine else None,
                                     "int8_layers": len(report.quantized), "nm_layers": len(report.sparse_layers),
                                     "calibration_samples": report.calibration_samples}

    return config, files, body


def _onnx_score(ctx: BuildContext, path: Path) -> float:
    """The task's score of an ONNX model on the validation data (ONNX Runtime, CPU)."""
    from nmdeploy.quant.evaluate import run_onnx

    _, outputs = run_onnx(path, ctx.data("val"))
    targets = ctx.targets("val")
    return ctx.task.score_sum(torch.from_numpy(outputs[0]).float(), targets) / max(1, len(targets))


def _tensorrt_here() -> str:
    """What TensorRT this machine offers the engine stage (part of its inputs: installing it redoes the stage)."""
    from nmdeploy.engine.trt import probe
    from nmdeploy.errors import EngineUnavailable

    try:
        return f"tensorrt {probe().__version__}"
    except EngineUnavailable:
        return "none"


def engine_stage(ctx: BuildContext) -> tuple[dict[str, Any], dict[str, Path], Callable[[str], tuple[Any, ...]]]:
    r = ctx.recipe.to_dict()
    source = ctx.out / ("model.int8.onnx" if ctx.recipe.quantize.enabled else "model.onnx")
    config = {"engine": r["engine"], "tensorrt": _tensorrt_here()}

    def body(key: str) -> tuple[Any, ...]:
        from nmdeploy.engine.deploy import build_or_bundle
        from nmdeploy.engine.plan import BuildOptions

        e = ctx.recipe.engine
        options = BuildOptions(e.sparse, e.fp16, e.strongly_typed, e.hardware_compat, e.version_compatible, e.workspace_mb)
        result = build_or_bundle(source, ctx.out / "model.plan", ctx.out / BUNDLE, options,
                                 batch=(e.min_batch, e.opt_batch, e.max_batch), timing_cache=e.timing_cache,
                                 dense_twin=e.dense_twin, verify=ctx.out / "verify.json", manifest=ctx.manifest.to_dict())
        if result.report is None:
            ctx.say(f"engine: bundled for target in {BUNDLE}/ ({result.problem}); "
                    f"on the target GPU run: python3 {ctx.out / BUNDLE}/build_engine.py")
            return list(result.files), {"built": False, "bundle": BUNDLE, "reason": result.reason, "problem": result.problem}, \
                "bundled", "bundled for target"
        report = result.report
        picked = sum(1 for row in report.layers if row.picked)
        eligible = sum(1 for row in report.layers if row.eligible)
        ctx.say(f"engine: model.plan (TensorRT {report.tensorrt}); sparse kernels picked for {picked} of {eligible} eligible layer(s)")
        return list(result.files), {"built": True, "tensorrt": report.tensorrt, "flags": list(report.build.builder_flags),
                                    "eligible_layers": eligible, "picked_layers": picked, "seconds_build": report.seconds}

    return config, {"onnx": source, "verify": ctx.out / "verify.json"}, body


BUNDLE = "target-bundle"
TRAINING_STAGES = ("dense", "sparse")
STAGES: dict[str, Callable[[BuildContext], Any]] = {
    "dense": dense_stage, "sparse": sparse_stage, "export": export_stage, "verify": verify_stage,
    "quantize": quantize_stage, "engine": engine_stage,
}


def run_stages(ctx: BuildContext, names: tuple[str, ...]) -> None:
    """Run ``names`` in order, skipping each stage whose inputs and outputs are unchanged."""
    for name in names:
        if (name == "quantize" and not ctx.recipe.quantize.enabled) or (name == "engine" and not ctx.recipe.engine.enabled):
            ctx.manifest.record(name, StageRecord("disabled", note=f"{name}.enabled is false"))
            continue
        config, files, body = STAGES[name](ctx)
        inputs = inputs_key(config, files)
        kept = ctx.manifest.reusable(name, inputs)
        if kept is not None:
            ctx.say(f"{name}: inputs unchanged since the last build, kept")
            if ctx.main:
                ctx.manifest.record(name, kept)
            continue
        began = time.perf_counter()
        outcome = body(hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest())
        outputs, metrics = outcome[0], outcome[1]
        status, note = outcome[2:4] if len(outcome) > 2 else ("done", "")  # the engine stage may only bundle
        seconds = time.perf_counter() - began
        if ctx.world > 1:
            torch.distributed.barrier()  # the other ranks read what rank 0 just wrote
        if ctx.main:
            ctx.manifest.record(name, StageRecord(status, inputs, ctx.manifest.outputs_of(outputs), seconds, metrics, note))

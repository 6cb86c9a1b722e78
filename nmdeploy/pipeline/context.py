"""What every stage of a build shares: the recipe, the output folder, the data, the task.

:class:`BuildContext` loads each data split once (its class-balanced subset when the recipe
asks for one) and computes the task's targets once (for distillation: the dense model's
outputs). :func:`check_inputs` fails before any work when model, input shape, checkpoint
and data do not fit together, so bad input leaves nothing behind.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from nmdeploy.data import ArrayData, load_data
from nmdeploy.errors import ConfigError, InputError, LayerSelectionError, first_line
from nmdeploy.export.loading import build_model, load_checkpoint
from nmdeploy.pipeline.manifest import Manifest
from nmdeploy.pipeline.recipe import Recipe
from nmdeploy.quant.calibset import draw_indices
from nmdeploy.train.loop import evaluate
from nmdeploy.train.tasks import Classification, Task, make_task

__all__ = ["BuildContext", "Progress", "check_inputs"]

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
    _sizes: dict[str, int] = field(default_factory=dict)  # samples of each split before its subset
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
        return make_task(self.recipe.task)

    def data(self, which: str) -> ArrayData:
        """The train or val data of the recipe (its class-balanced subset when one is asked for)."""
        if which not in self._data:
            spec = self.recipe.data.train if which == "train" else self.recipe.data.val
            data = load_data(spec, "train" if which == "train" else "test")
            key = "data.train" if which == "train" else "data.val"
            classify = isinstance(self.task, Classification)
            if data.labels is None and classify:
                raise InputError(f"{key} = {spec!r} has no labels; classification needs integer labels (y)")
            if classify:
                data.class_labels()  # one integer class per sample, or a one-line error
            self._sizes[which] = len(data)
            subset = getattr(self.recipe.data, f"{which}_subset")
            if subset and subset < len(data):
                classes = data.labels if data.has_class_labels else None  # balanced where there are classes
                data = data.take(np.sort(draw_indices(subset, len(data), classes, 0)))
            self._data[which] = data
        return self._data[which]

    def inputs(self, which: str) -> tuple[torch.Tensor, ...]:
        """The model's inputs, in the data's order: float arrays as float32, integer arrays (token ids) as int64."""
        return tuple(
            torch.from_numpy(
                np.ascontiguousarray(a, dtype=np.int64 if np.issubdtype(a.dtype, np.integer) else np.float32)
            )
            for a in self.data(which).inputs.values()
        )

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
    sample = [torch.zeros(shape, dtype=dtypes[0])] + [
        torch.zeros([shape[0], *a.shape[1:]], dtype=d) for a, d in zip(arrays[1:], dtypes[1:])
    ]
    try:
        with torch.no_grad():
            logits = model(*sample)
    except Exception as exc:
        detail = first_line(exc, 160)
        raise InputError(
            f"model.input_shape = {shape} does not fit model {recipe.model.spec!r} ({detail}); set the shape the model takes"
        ) from None
    classify = isinstance(task, Classification)
    if not isinstance(logits, torch.Tensor) or (classify and logits.ndim != 2):
        got = list(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise InputError(
            f"model {recipe.model.spec!r} returns {got}; the classification trainer needs logits [batch, classes]"
        )
    _check_sparsity(recipe, model)  # on the fresh model: a checkpoint may carry masks
    checkpoint = recipe.model.checkpoint
    if checkpoint:
        if not Path(checkpoint).is_file():
            raise InputError(
                f"model.checkpoint = {checkpoint!r}: no such file; give the path of the pretrained weights or null to train"
            )
        load_checkpoint(model, checkpoint)  # a checkpoint of another model fails here, naming the file
    for which in ("train", "val"):
        data = ctx.data(which)
        spec = getattr(recipe.data, which)
        _check_sample_shape(data, f"data.{which}", spec, shape)
        if classify and (data.labels.min(initial=0) < 0 or data.labels.max(initial=0) >= logits.shape[1]):
            raise InputError(
                f"data.{which} = {spec!r} has labels up to {int(data.labels.max())} but the model has {logits.shape[1]} outputs; "
                f"give labels 0..{logits.shape[1] - 1} or a model with more outputs"
            )
    _check_calibration(ctx, shape)
    _check_export(recipe)


def _check_sample_shape(data: ArrayData, key: str, spec: str, shape: list[int]) -> None:
    """The data's first input must have the model's input shape past the batch dim."""
    x = next(iter(data.inputs.values()))
    if list(x.shape[1:]) != shape[1:]:
        raise InputError(
            f"{key} = {spec!r} has samples of shape {list(x.shape[1:])} but model.input_shape is {shape}; make them agree"
        )


def _check_sparsity(recipe: Recipe, model: nn.Module) -> None:
    """The pattern and the include/exclude globs against the model's layers, as the sparse stage will see them."""
    from nmdeploy.sparsity.pattern import parse_pattern
    from nmdeploy.sparsity.targets import check_selection, select_layers, unmatched_patterns

    sp = recipe.sparsity
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the globs that match nothing are an error here, just below
        targets = select_layers(model, parse_pattern(sp.pattern).m, sp.include, sp.exclude)
    names = [t.name for t in targets]
    for what, glob in unmatched_patterns(names, sp.include, sp.exclude):
        shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
        raise ConfigError(
            f"recipe key sparsity.{what}: {glob!r} matches no weighted layer of model {recipe.model.spec!r}; "
            f"its layers are {shown or '(none)'}"
        )
    try:
        check_selection(targets, sp.pattern)
    except LayerSelectionError as exc:
        raise ConfigError.setting("sparsity", f"pattern/include/exclude: {exc}", plural=True).in_recipe(
            "sparsity"
        ) from None


def _check_calibration(ctx: BuildContext, shape: list[int]) -> None:
    """The calibration data must exist, fit the model and hold enough samples, before training starts."""
    q = ctx.recipe.quantize
    if not q.enabled:
        return
    if not q.calibration:  # drawn from all of data.train
        ctx.data("train")
        available = ctx._sizes["train"]
    else:
        data = load_data(q.calibration, "train")
        _check_sample_shape(data, "quantize.calibration", q.calibration, shape)
        if data.labels is not None:
            data.class_labels()  # the draw is class-balanced: one integer class per sample
        available = len(data)
    if q.count > available:
        where = (
            f"quantize.calibration = {q.calibration!r}" if q.calibration else f"data.train = {ctx.recipe.data.train!r}"
        )
        raise InputError(f"quantize.count = {q.count} but {where} has only {available} samples; lower quantize.count")


def _check_export(recipe: Recipe) -> None:
    from nmdeploy.export.onnx import check_opset

    try:
        check_opset(recipe.export.opset)
    except ConfigError as exc:
        raise ConfigError(f"recipe key export.opset: {exc}") from None

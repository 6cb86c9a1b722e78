"""What every stage of a build shares: the recipe, the output folder, the data, the task.

:class:`BuildContext` opens each data split once, as a source read on demand (its
class-balanced subset when the recipe asks for one), and loads the teacher of a
distillation task once. :func:`check_inputs` fails before any work when model, input
shape, checkpoint and data do not fit together, so bad input leaves nothing behind; it
reads one sample of each data set for that, and the labels only where a source knows
them without reading its samples (an image folder, an ``.npz``); the others are checked
batch by batch while training.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from nmdeploy.data import ArrayData, Source, Stream, open_data
from nmdeploy.data.loader import head
from nmdeploy.errors import ConfigError, InputError, LayerSelectionError, first_line
from nmdeploy.export.loading import build_model, load_checkpoint
from nmdeploy.pipeline.manifest import Manifest
from nmdeploy.pipeline.recipe import Recipe
from nmdeploy.quant.calibset import draw_indices
from nmdeploy.train.scoring import evaluate
from nmdeploy.train.tasks import Classification, Distill, Task, make_distill, make_task

__all__ = ["BuildContext", "Progress", "check_inputs"]

Progress = Callable[[str, int, int], None]
_KEYS = {"train": "data.train", "val": "data.val"}


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
    _data: dict[str, Source | Stream] = field(default_factory=dict)
    _sizes: dict[str, int | None] = field(default_factory=dict)  # samples of each split before its subset
    _teacher: nn.Module | None = None
    _samples: dict[tuple[str, int], ArrayData] = field(default_factory=dict)

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

    def data(self, which: str) -> Source | Stream:
        """The train or val data of the recipe, read on demand (its class-balanced subset when one is asked for)."""
        if which not in self._data:
            d = self.recipe.data
            spec = d.train if which == "train" else d.val
            key = _KEYS[which]
            data = open_data(spec, "train" if which == "train" else "test", d, train=which == "train")
            subset = getattr(d, f"{which}_subset")
            if isinstance(data, Stream):
                if subset:
                    raise InputError(
                        f"{key} = {spec!r} is a stream (no length); data.{which}_subset needs a sized dataset: set it to 0"
                    )
                self._sizes[which] = None
            else:
                if isinstance(data, ArrayData) and isinstance(self.task, Classification):
                    if data.labels is None:
                        raise InputError(f"{key} = {spec!r} has no labels; classification needs integer labels (y)")
                    data.class_labels()  # one integer class per sample, or a one-line error
                self._sizes[which] = len(data)
                if subset and subset < len(data):
                    data = data.subset(np.sort(draw_indices(subset, len(data), data.known_labels(), 0)))
            self._data[which] = data
        return self._data[which]

    @property
    def distill(self) -> Distill | None:
        """The logit distillation of the sparse fine-tune (``task.distill``), or None."""
        return make_distill(self.recipe.task)

    def teacher(self) -> nn.Module | None:
        """The dense model (loaded once): a distillation task's targets, or the teacher of ``task.distill``.

        None for a classification build without distillation.
        """
        if isinstance(self.task, Classification) and self.distill is None:
            return None
        if self._teacher is None:
            self._teacher = load_checkpoint(self.new_model(), self.out / "dense.pt").to(self.device).eval()
        return self._teacher

    def sample(self, which: str, count: int = 1) -> ArrayData:
        """The first ``count`` samples of a data set, as arrays (a shape check, the export's sample batch);
        read once (the input shape, the export's dims and the engine's ranges all ask for them)."""
        if (which, count) not in self._samples:
            data = self.data(which)
            self._samples[which, count] = head(data, count, f"{_KEYS[which]} = {data.source!r}")
        return self._samples[which, count]

    def score(self, model: nn.Module, which: str = "val") -> float:
        """The task's score of ``model`` on a data set, streamed (each process scores its share)."""
        return evaluate(
            model.to(self.device),
            self.data(which),
            task=self.task,
            teacher=None if isinstance(self.task, Classification) else self.teacher(),  # labels score it
            workers=self.recipe.data.workers,
            shard=self.world > 1,
            what=_KEYS[which],
        )

    @property
    def input_shape(self) -> list[int]:
        """``model.input_shape``, or (null) the shape of the first validation sample with batch 1."""
        if self.recipe.model.input_shape is not None:
            return list(self.recipe.model.input_shape)
        first = next(iter(self.sample("val").inputs.values()))
        return [1, *first.shape[1:]]

    def dynamic_dims(self) -> set[str]:
        """The names of the symbolic dims the export will give the model's inputs besides the batch."""
        from nmdeploy.export.onnx import axis_name, exported_dims

        arrays = tuple(torch.from_numpy(a) for a in self.sample("val").inputs.values())
        return {axis_name(d) for d in exported_dims(self.recipe.export, arrays) if d != 0}

    @property
    def sequence_length(self) -> int | None:
        """The longest token axis the engine must take (data.max_length for text files), when it is dynamic."""
        if "sequence" not in self.dynamic_dims():
            return None
        if self.data("val").dynamic_dims:
            return self.recipe.data.max_length
        return int(next(iter(self.sample("val").inputs.values())).shape[1])

    def new_model(self) -> nn.Module:
        torch.manual_seed(self.recipe.dense.seed)  # the same initial weights on every run and rank
        m = self.recipe.model
        return build_model(m.spec, m.hf_task, m.hf_config)

    def skipped(self) -> dict[str, Any]:
        """What ``data.skip_bad`` skipped, per data set: the count and the first few items."""
        out = {}
        for which, data in self._data.items():
            bad = sorted(getattr(data, "bad", ()) or ())
            if bad:
                out[which] = {"count": len(bad), "first": [data.item_name(i) for i in bad[:10]]}
        return out


def check_inputs(ctx: BuildContext) -> None:
    """Fail before any work when the model, its input shape and the data do not fit together."""
    recipe = ctx.recipe
    task = ctx.task
    model = ctx.new_model().eval()
    shape = ctx.input_shape
    arrays = list(ctx.sample("val").inputs.values())
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
    if recipe.export.dynamic_axes is not None:
        from nmdeploy.export.onnx import argument_names, resolve_axes

        try:
            resolve_axes(recipe.export, argument_names(model, len(sample)), tuple(sample))
        except ConfigError as exc:
            raise ConfigError(f"recipe key {exc}") from None
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
        _check_sample_shape(ctx.sample(which), f"data.{which}", spec, shape, data.dynamic_dims)
        labels = None if isinstance(data, Stream) else data.known_labels()
        if classify and labels is not None and (labels.min(initial=0) < 0 or labels.max(initial=0) >= logits.shape[1]):
            raise InputError(
                f"data.{which} = {spec!r} has labels up to {int(labels.max())} but the model has {logits.shape[1]} outputs; "
                f"give labels 0..{logits.shape[1] - 1} or a model with more outputs"
            )
    _check_batches(ctx)
    _check_calibration(ctx, shape)
    _check_export(recipe)
    _check_shapes(ctx)


def _check_batches(ctx: BuildContext) -> None:
    """The training data must fill at least one batch of each training stage."""
    size = ctx._sizes.get("train")
    data = ctx.data("train")
    for section in ("dense", "finetune"):
        config = getattr(ctx.recipe, section)
        if section == "dense" and (ctx.recipe.model.checkpoint or ctx.recipe.model.pretrained):
            continue
        if config.epochs == 0:  # one-shot: nothing trains
            continue
        if size is None and not config.steps_per_epoch:
            raise InputError(
                f"data.train = {data.source!r} is a stream (no length); set {section}.steps_per_epoch "
                "to the optimizer steps of one epoch"
            )
        if size is not None and len(data) < config.batch_size:
            raise InputError(
                f"data.train = {ctx.recipe.data.train!r} has {len(data)} samples, fewer than one batch "
                f"({section}.batch_size = {config.batch_size}); lower {section}.batch_size or give more data"
            )


def _check_sample_shape(data: ArrayData, key: str, spec: str, shape: list[int], dynamic: tuple[int, ...] = ()) -> None:
    """The data's first input must have the model's input shape past the batch dim (and its ``dynamic`` dims:
    the token axis of text, padded per batch)."""
    x = next(iter(data.inputs.values()))
    fixed = [d for d in range(1, max(x.ndim, len(shape))) if d not in dynamic]
    if x.ndim != len(shape) or [x.shape[d] for d in fixed] != [shape[d] for d in fixed]:
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
        data = open_data(q.calibration, "train", ctx.recipe.data)
        first = head(data, 1, f"quantize.calibration = {q.calibration!r}")
        _check_sample_shape(first, "quantize.calibration", q.calibration, shape, data.dynamic_dims)
        if isinstance(data, ArrayData) and data.labels is not None:
            data.class_labels()  # the draw is class-balanced: one integer class per sample
        available = None if isinstance(data, Stream) else len(data)
    if available is not None and q.count is not None and q.count > available:  # null: all, when fewer
        where = (
            f"quantize.calibration = {q.calibration!r}" if q.calibration else f"data.train = {ctx.recipe.data.train!r}"
        )
        raise InputError(f"quantize.count = {q.count} but {where} has only {available} samples; lower quantize.count")


def _check_shapes(ctx: BuildContext) -> None:
    """``engine.shapes`` must name dims the exported model will have (their min <= opt <= max is the config's)."""
    shapes = ctx.recipe.engine.shapes
    if not shapes:
        return
    dims = ctx.dynamic_dims()
    unknown = sorted(set(shapes) - dims)
    if unknown:
        raise ConfigError(
            f"recipe key engine.shapes names {unknown[0]!r}, which is no dynamic dim of the exported model "
            f"(its dims besides the batch: {', '.join(sorted(dims)) or 'none'}); see export.dynamic_axes"
        )


def _check_export(recipe: Recipe) -> None:
    from nmdeploy.export.onnx import check_opset

    try:
        check_opset(recipe.export.opset)
    except ConfigError as exc:
        raise ConfigError(f"recipe key export.opset: {exc}") from None

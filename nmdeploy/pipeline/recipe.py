"""Recipes: one YAML file that names every stage's settings, checked before any work starts.

A recipe is a mapping of sections (``model``, ``data``, ``task``, ``dense``, ``sparsity``, ``finetune``,
``export``, ``quantize``, ``engine``) plus two top-level keys (``output``, ``device``). Every
key has a default, and the defaults *are* the built-in Fashion-MNIST example, so
``nmdeploy build`` with no recipe runs it. A recipe file or ``--set section.key=value``
overrides keys; an unknown key, a value of the wrong type or one out of range is a one-line
:class:`ConfigError` that names the key. YAML is read with ``yaml.safe_load`` only.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nmdeploy.errors import ConfigError, InputError
from nmdeploy.train.config import TrainConfig

__all__ = ["Recipe", "SECTIONS", "apply_overrides", "dump_recipe", "load_recipe", "recipe_from_mapping", "reference_rows"]


@dataclass(frozen=True)
class ModelSection:
    """The network and where its dense weights come from."""

    spec: str = "fashion-resnet"  # built-in name or package.module:callable returning an nn.Module
    checkpoint: str | None = None  # pretrained dense weights (weights_only load); skips dense pre-training
    pretrained: bool = False  # the model spec returns trained weights itself; skips dense pre-training
    input_shape: tuple[int, ...] = (1, 1, 28, 28)  # one sample batch; dim 0 is dynamic in the ONNX


@dataclass(frozen=True)
class DataSection:
    """Training and validation data: data SPECs (built-in[:split], .npz, ImageFolder dir, module:callable)."""

    train: str = "fashion-mnist:train"
    val: str = "fashion-mnist:test"
    train_subset: int = 0  # use this many class-balanced training samples; 0 = all
    val_subset: int = 0  # same for validation; 0 = all


@dataclass(frozen=True)
class TaskSection:
    """What training optimises and the reports score (``nmdeploy.train.tasks``)."""

    spec: str = "classification"  # classification, distillation (from the dense model), or package.module:callable
    mse_weight: float = 1.0  # distillation: loss = (1 - cosine) + mse_weight * MSE


@dataclass(frozen=True)
class SparsitySection:
    """How the fine-tune makes the model N:M sparse (``nmdeploy.sparsify`` arguments)."""

    pattern: str = "2:4"
    method: str = "maxq"  # maxq, srste, ste, asp
    schedule: str = "linear"  # MaxQ's incremental schedule: linear, cubic, cos, exp
    start_epoch: int = 0  # fine-tune epoch where the share of dense blocks starts to fall
    end_epoch: int = 3  # fine-tune epoch from which every block is N:M
    decay: float = 2e-4  # lambda: SR decay on pruned weights (maxq, srste)
    tau: float = 1e-2  # tau: MaxQ's sigmoid temperature
    rescale: bool = False  # MaxQ: start with the pretrained row norms (for networks without BatchNorm)
    include: tuple[str, ...] | None = None  # globs on module names; None = every eligible layer
    exclude: str | tuple[str, ...] = "auto"  # "auto" keeps the first and last layer dense; [] = none


@dataclass(frozen=True)
class ExportSection:
    opset: int | None = None  # None = the exporter's default
    dynamic_batch: bool = True


@dataclass(frozen=True)
class QuantizeSection:
    """INT8 Q/DQ (``nmdeploy.quantize_int8``), calibrated on a class-balanced draw of the data."""

    enabled: bool = True
    method: str = "minmax"  # minmax, entropy, percentile
    calibration: str | None = None  # data SPEC to draw from; None = data.train
    count: int = 512  # calibration samples
    seed: int = 0
    percentile: float = 99.999  # for method percentile
    per_channel: bool = True
    exclude: tuple[str, ...] = ()  # globs on ONNX node or weight names kept in float


@dataclass(frozen=True)
class EngineSection:
    """TensorRT engine (``nmdeploy.engine``); without TensorRT here, a bundle to build it on the target."""

    enabled: bool = True
    sparse: bool = True  # SPARSE_WEIGHTS
    min_batch: int = 1
    opt_batch: int = 32
    max_batch: int = 256
    dense_twin: bool = True  # also the same engine without SPARSE_WEIGHTS, to time against
    workspace_mb: int | None = None  # None = TensorRT's default
    timing_cache: str | None = None  # a file read and saved by the build
    hardware_compat: str = "none"  # none, ampere_plus, same_cc
    version_compatible: bool = False
    fp16: bool = False  # TensorRT 10.x only: FP16 for layers without Q/DQ
    strongly_typed: bool = False  # TensorRT 10.x only: instead of the INT8 flag


# dense pre-training and fine-tune defaults of the built-in example (benchmarks/RESULTS.md)
_DENSE = TrainConfig(epochs=8, lr=0.1)
_FINETUNE = TrainConfig(epochs=6, lr=0.02)


@dataclass(frozen=True)
class Recipe:
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    task: TaskSection = field(default_factory=TaskSection)
    dense: TrainConfig = _DENSE
    sparsity: SparsitySection = field(default_factory=SparsitySection)
    finetune: TrainConfig = _FINETUNE
    export: ExportSection = field(default_factory=ExportSection)
    quantize: QuantizeSection = field(default_factory=QuantizeSection)
    engine: EngineSection = field(default_factory=EngineSection)
    output: str = "build"  # output directory (the CLI's --out overrides it)
    device: str = "auto"  # auto (CUDA when present), cpu, cuda, cuda:N

    def to_dict(self) -> dict[str, Any]:
        return _plain(dataclasses.asdict(self))


_HINTS = typing.get_type_hints(Recipe)
SECTIONS: dict[str, type] = {name: hint for name, hint in _HINTS.items() if dataclasses.is_dataclass(hint)}
_TOP_LEVEL = tuple(f.name for f in dataclasses.fields(Recipe) if f.name not in SECTIONS)


def _plain(value: Any) -> Any:
    """Tuples -> lists, recursively, so the dict dumps as plain YAML/JSON."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _type_name(hint: Any) -> str:
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string", type(None): "null"}
    if hint in names:
        return names[hint]
    args = typing.get_args(hint)
    if typing.get_origin(hint) is tuple:
        return f"a list of {_type_name(args[0]).removeprefix('an ').removeprefix('a ')}s"
    return " or ".join(_type_name(a) for a in args)


def _coerce(value: Any, hint: Any) -> tuple[bool, Any]:
    """(fits, value as the field stores it): lists become tuples, ints are numbers too."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(hint):
            ok, out = _coerce(value, arg)
            if ok:
                return True, out
        return False, value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            return False, value
        items = [_coerce(v, typing.get_args(hint)[0]) for v in value]
        return all(ok for ok, _ in items), tuple(out for _, out in items)
    if hint is type(None):
        return value is None, value
    if hint is bool:
        return isinstance(value, bool), value
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool), float(value) if isinstance(value, (int, float)) else value
    return isinstance(value, hint), value


def _build(cls: type, values: Any, where: str, base: Any) -> Any:
    """``base`` with ``values`` applied; every key known and every value of the field's type."""
    if not isinstance(values, Mapping):
        raise ConfigError(f"recipe section {where!r} must be a mapping of keys, got {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    changes = {}
    for key, value in values.items():
        if key not in names:
            raise ConfigError(f"unknown recipe key {where}.{key}; {where} has: {', '.join(names)}")
        ok, coerced = _coerce(value, hints[key])
        if not ok:
            raise ConfigError(f"recipe key {where}.{key} = {value!r} has the wrong type: expected {_type_name(hints[key])}")
        changes[key] = coerced
    try:
        return dataclasses.replace(base, **changes)
    except ConfigError as exc:  # TrainConfig names its keys train.KEY; say which section they are in
        raise ConfigError(f"recipe key {str(exc).replace('train.', f'{where}.')}") from None


def recipe_from_mapping(values: Any, base: Recipe | None = None) -> Recipe:
    """``base`` (default: the built-in example) with ``values`` (a parsed recipe) applied, then checked."""
    recipe = base or Recipe()
    if values is None:
        values = {}
    if not isinstance(values, Mapping):
        raise ConfigError(f"a recipe must be a mapping of sections, got {type(values).__name__}")
    changes: dict[str, Any] = {}
    for key, value in values.items():
        if key in SECTIONS:
            changes[key] = _build(SECTIONS[key], value if value is not None else {}, key, getattr(recipe, key))
        elif key in _TOP_LEVEL:
            if not isinstance(value, str) or not value:
                raise ConfigError(f"recipe key {key} = {value!r} has the wrong type: expected a non-empty string")
            changes[key] = value
        else:
            raise ConfigError(f"unknown recipe section {key!r}; a recipe has: {', '.join([*SECTIONS, *_TOP_LEVEL])}")
    recipe = dataclasses.replace(recipe, **changes)
    check_recipe(recipe)
    return recipe


def check_recipe(recipe: Recipe) -> None:
    """Value rules that span keys or need the sparsity registry (types are already right)."""
    from nmdeploy.quant.int8 import METHODS as QUANT_METHODS
    from nmdeploy.sparsity.methods import get_method
    from nmdeploy.sparsity.pattern import parse_pattern
    from nmdeploy.sparsity.schedule import check_schedule

    sp = recipe.sparsity
    for key, check in (("pattern", parse_pattern), ("method", get_method), ("schedule", check_schedule)):
        try:
            check(getattr(sp, key))
        except ConfigError as exc:
            raise ConfigError(f"recipe key sparsity.{key}: {exc}") from None
    if sp.method == "dense":
        raise ConfigError("recipe key sparsity.method = 'dense' makes nothing sparse; use maxq, srste, ste or asp")
    if not 0 <= sp.start_epoch <= sp.end_epoch:
        raise ConfigError(f"recipe keys sparsity.start_epoch = {sp.start_epoch}, end_epoch = {sp.end_epoch}: need 0 <= start_epoch <= end_epoch")
    if get_method(sp.method).uses_schedule and sp.end_epoch >= recipe.finetune.epochs:
        raise ConfigError(
            f"recipe key sparsity.end_epoch = {sp.end_epoch} must be below finetune.epochs = {recipe.finetune.epochs}, "
            "so that the last fine-tune epoch trains the final N:M mask"
        )
    for key in ("decay", "tau"):
        if getattr(sp, key) < 0 or (key == "tau" and sp.tau == 0):
            raise ConfigError(f"recipe key sparsity.{key} = {getattr(sp, key)} is out of range: use a number > 0")
    if isinstance(sp.exclude, str) and sp.exclude != "auto":
        raise ConfigError(f"recipe key sparsity.exclude = {sp.exclude!r}: use 'auto' or a list of globs ([] = none)")
    task = recipe.task
    if task.mse_weight < 0:
        raise ConfigError(f"recipe key task.mse_weight = {task.mse_weight}: use a number >= 0")
    if task.spec == "distillation" and not (recipe.model.checkpoint or recipe.model.pretrained):
        raise ConfigError("recipe key task.spec = 'distillation' needs a trained dense model to learn from: "
                          "set model.checkpoint or model.pretrained: true")
    shape = recipe.model.input_shape
    if len(shape) < 2 or any(d < 1 for d in shape):
        raise ConfigError(f"recipe key model.input_shape = {list(shape)}: give [batch, ...] with every size >= 1, e.g. [1, 1, 28, 28]")
    for key in ("train_subset", "val_subset"):
        if getattr(recipe.data, key) < 0:
            raise ConfigError(f"recipe key data.{key} = {getattr(recipe.data, key)}: use 0 (all) or a positive count")
    q = recipe.quantize
    if q.method not in QUANT_METHODS:
        raise ConfigError(f"recipe key quantize.method = {q.method!r}: use one of {', '.join(QUANT_METHODS)}")
    if q.count < 1 or not 0 < q.percentile <= 100:
        raise ConfigError(f"recipe keys quantize.count = {q.count}, percentile = {q.percentile}: need count >= 1 and 0 < percentile <= 100")
    e = recipe.engine
    if not 1 <= e.min_batch <= e.opt_batch <= e.max_batch:
        raise ConfigError(f"recipe keys engine.min_batch/opt_batch/max_batch = {e.min_batch}/{e.opt_batch}/{e.max_batch}: need 1 <= min <= opt <= max")
    from nmdeploy.engine.plan import HARDWARE_COMPAT

    if e.hardware_compat not in HARDWARE_COMPAT:
        raise ConfigError(f"recipe key engine.hardware_compat = {e.hardware_compat!r}: use one of {', '.join(HARDWARE_COMPAT)}")
    if e.workspace_mb is not None and e.workspace_mb < 1:
        raise ConfigError(f"recipe key engine.workspace_mb = {e.workspace_mb}: use null (TensorRT's default) or a size >= 1")
    if recipe.device != "auto" and recipe.device != "cpu" and not recipe.device.startswith("cuda"):
        raise ConfigError(f"recipe key device = {recipe.device!r}: use auto, cpu, cuda or cuda:N")


def _recipe_loader() -> type:
    """``yaml.SafeLoader`` read the YAML 1.2 way for numbers: ``2:4`` a string, ``1e-4`` a float.

    PyYAML follows YAML 1.1, which reads ``pattern: 2:4`` as the base-60 integer 124 and
    ``decay: 1e-4`` as a string; both surprise anyone writing a recipe. Safe loading is kept.
    """
    import re

    import yaml

    class RecipeLoader(yaml.SafeLoader):
        pass

    numbers = ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")
    RecipeLoader.yaml_implicit_resolvers = {
        first: [(tag, re.compile(r"(?!.*:)" + rx.pattern, rx.flags) if tag in numbers else rx) for tag, rx in resolvers]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    RecipeLoader.add_implicit_resolver(
        "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789"))
    return RecipeLoader


def _parse_yaml(text: str, where: str) -> Any:
    import yaml

    try:
        return yaml.load(text, Loader=_recipe_loader())  # a SafeLoader: a recipe never builds Python objects
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{where} is not valid YAML{at}: {problem}") from None


def load_recipe(path: str | Path | None = None, overrides: Sequence[str] = ()) -> Recipe:
    """The built-in example, with the recipe file at ``path`` and then ``overrides`` applied."""
    recipe = Recipe()
    if path is not None:
        path = Path(path)
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"cannot read recipe {path} ({getattr(exc, 'strerror', None) or exc}); give the path of a YAML recipe, "
                             "or leave out --recipe for the built-in example") from None
        recipe = recipe_from_mapping(_parse_yaml(text, f"recipe {path}"), recipe)
    return apply_overrides(recipe, overrides)


def apply_overrides(recipe: Recipe, overrides: Sequence[str]) -> Recipe:
    """Apply ``section.key=value`` (or ``output=DIR``) strings; values are parsed as YAML scalars/lists."""
    values: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r} is not KEY=VALUE; e.g. --set finetune.epochs=2")
        value = _parse_yaml(raw, f"--set {item!r}") if raw else ""
        section, dot, name = key.strip().partition(".")
        if dot:
            if section not in SECTIONS:
                raise ConfigError(f"--set {item!r}: unknown recipe section {section!r}; a recipe has: {', '.join(SECTIONS)}")
            values.setdefault(section, {})[name] = value
        else:
            values[section] = value
    return recipe_from_mapping(values, recipe) if values else recipe


def dump_recipe(recipe: Recipe) -> str:
    """The recipe as YAML, every key present, in the order the stages run."""
    import yaml

    def scalar(value: Any) -> str:
        text = yaml.safe_dump(value, default_flow_style=True, width=1_000_000).strip()
        return text.removesuffix("...").strip()

    lines = ["# nmdeploy recipe: every key, in stage order (README: Recipe reference)"]
    for name, value in recipe.to_dict().items():
        if isinstance(value, dict):
            lines.append(f"{name}:")
            lines += [f"  {key}: {scalar(v)}" for key, v in value.items()]
        else:
            lines.append(f"{name}: {scalar(value)}")
    return "\n".join(lines) + "\n"


def reference_rows() -> list[tuple[str, str, str]]:
    """(key, default, type) for every recipe key: the README's recipe reference is checked against it."""
    rows = []
    defaults = Recipe().to_dict()
    for name in [f.name for f in dataclasses.fields(Recipe)]:
        if name in SECTIONS:
            hints = typing.get_type_hints(SECTIONS[name])
            for key, default in defaults[name].items():
                rows.append((f"{name}.{key}", _show(default), _type_name(hints[key])))
        else:
            rows.append((name, _show(defaults[name]), "a string"))
    return rows


def _show(value: Any) -> str:
    import json

    return json.dumps(value) if not isinstance(value, str) else value

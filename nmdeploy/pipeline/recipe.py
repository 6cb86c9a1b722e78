"""Recipes: one YAML file that names every stage's settings, checked before any work starts.

A recipe is a mapping of sections plus two top-level keys (``output``, ``device``). Each
section *is* its stage's config class: ``model`` and ``export`` (:mod:`nmdeploy.export.config`),
``data``, ``task``, ``dense`` and ``finetune`` (both :class:`~nmdeploy.train.config.TrainConfig`),
``sparsity``, ``quantize``, ``engine`` and ``serve``; every value is checked by that class. Every key has
a default, and the defaults *are* the built-in Fashion-MNIST example, so ``nmdeploy build``
with no recipe runs it. What this module adds is the YAML reading (``yaml.safe_load`` rules
only), turning YAML values into the declared types, recipe wording of the errors, and the
rules that span sections.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nmdeploy._hf import is_hf_spec
from nmdeploy.config import parse_yaml, setting, type_name, typed_values, unknown_keys
from nmdeploy.data.config import DataConfig
from nmdeploy.engine.config import EngineConfig
from nmdeploy.engine.triton import ServeConfig
from nmdeploy.errors import ConfigError, InputError
from nmdeploy.export.config import ExportConfig, ModelConfig
from nmdeploy.quant.config import QuantizeConfig
from nmdeploy.sparsity.config import SparsityConfig
from nmdeploy.train.config import TaskConfig, TrainConfig

__all__ = [
    "Recipe",
    "SECTIONS",
    "apply_overrides",
    "dump_recipe",
    "load_recipe",
    "recipe_from_mapping",
    "reference_rows",
]


@dataclass(frozen=True)
class Recipe:
    """Every stage's settings; the defaults are the built-in example (benchmarks/RESULTS.md)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    dense: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=8, lr=0.1))
    # The schedule ends at a quarter of the fine-tune (end_epoch null) and λ goes by pattern (2e-3 = 4x the
    # weight decay, the references' ratio, at 2:4; 5e-3 below half density): both measured better than the
    # sweep's first settings on Fashion-MNIST (benchmarks/RESULTS.md, distillation).
    sparsity: SparsityConfig = field(default_factory=lambda: SparsityConfig(end_epoch=None, decay=None))
    finetune: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=6, lr=0.02))
    export: ExportConfig = field(default_factory=ExportConfig)
    quantize: QuantizeConfig = field(default_factory=QuantizeConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    output: str = setting("build", "Output directory (`--out` overrides it).")
    device: str = setting("auto", "`auto` (CUDA when present), `cpu`, `cuda`, `cuda:N`.")

    def __post_init__(self) -> None:
        """The rules that span sections, or that only a build has."""
        from nmdeploy.sparsity.methods.registry import get_method

        sp = self.sparsity
        if sp.method == "dense":
            raise ConfigError("recipe key sparsity.method = 'dense' makes nothing sparse; use maxq, srste, ste or asp")
        if self.finetune.epochs == 0 and sp.method != "asp":
            raise ConfigError(
                f"recipe key finetune.epochs = 0 (one-shot pruning, no fine-tune) needs sparsity.method = 'asp'; "
                f"{sp.method} finds its mask while training: give finetune.epochs >= 1 or use asp"
            )
        if self.dense.epochs == 0 and not (self.model.checkpoint or self.model.pretrained):
            raise ConfigError(
                "recipe key dense.epochs = 0 leaves the dense model untrained: set model.checkpoint or "
                "model.pretrained: true, or give dense.epochs >= 1"
            )
        end = sp.with_end_for(self.finetune.epochs).end_epoch
        if get_method(sp.method).uses_schedule and end >= self.finetune.epochs:  # type: ignore[operator]
            key = "end_epoch" if sp.end_epoch is not None else "start_epoch"
            raise ConfigError(
                f"recipe key sparsity.{key} = {getattr(sp, key)} must be below finetune.epochs = {self.finetune.epochs}, "
                "so that the last fine-tune epoch trains the final N:M mask"
            )
        if self.task.spec == "distillation" and not (self.model.checkpoint or self.model.pretrained):
            raise ConfigError(
                "recipe key task.spec = 'distillation' needs a trained dense model to learn from: "
                "set model.checkpoint or model.pretrained: true"
            )
        if self.task.distill is True and self.task.spec != "classification":
            raise ConfigError(
                f"recipe key task.distill = true distils a classifier's logits, but task.spec = {self.task.spec!r}; "
                "use task.spec: classification, or task.distill: false"
                + (
                    " (the distillation task already learns from the dense model)"
                    if self.task.spec == "distillation"
                    else ""
                )
            )
        if self.data.tokenizer is None and is_hf_spec(self.model.spec):  # text is read with the model's tokenizer
            object.__setattr__(self, "data", dataclasses.replace(self.data, tokenizer=self.model.spec))
        if self.serve.triton and self.engine.enabled:
            if self.serve.max_batch is not None and self.serve.max_batch > self.engine.max_batch:
                raise ConfigError(
                    f"recipe key serve.max_batch = {self.serve.max_batch} exceeds engine.max_batch = "
                    f"{self.engine.max_batch}, the largest batch the plan takes; lower serve.max_batch or raise engine.max_batch"
                )
            if self.engine.min_batch > 1:
                raise ConfigError(
                    f"recipe key engine.min_batch = {self.engine.min_batch}: Triton sends batches from 1 up, which the "
                    "plan would refuse; set engine.min_batch: 1, or serve.triton: false"
                )
        for key in ("output", "device"):
            value = getattr(self, key)
            if not isinstance(value, str) or not value:
                raise ConfigError(f"recipe key {key} = {value!r} has the wrong type: expected a non-empty string")
        if self.device != "auto" and self.device != "cpu" and not self.device.startswith("cuda"):
            raise ConfigError(f"recipe key device = {self.device!r}: use auto, cpu, cuda or cuda:N")

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


def _section(cls: type, values: Any, where: str, base: Any) -> Any:
    """``base`` with ``values`` applied: YAML values in the declared types, then the config's own checks."""
    if not isinstance(values, Mapping):
        raise ConfigError(f"recipe section {where!r} must be a mapping of keys, got {type(values).__name__}")
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = unknown_keys(cls, values)
    if unknown:
        raise ConfigError(f"unknown recipe key {where}.{unknown[0]}; {where} has: {', '.join(names)}")
    try:
        changes = typed_values(cls, values, where, widen=True)  # YAML 1 is the number 1.0, a YAML list a tuple
        return dataclasses.replace(base, **changes)
    except ConfigError as exc:
        raise exc.in_recipe(where) from None


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
            changes[key] = _section(SECTIONS[key], value if value is not None else {}, key, getattr(recipe, key))
        elif key in _TOP_LEVEL:
            changes[key] = value
        else:
            raise ConfigError(f"unknown recipe section {key!r}; a recipe has: {', '.join([*SECTIONS, *_TOP_LEVEL])}")
    return dataclasses.replace(recipe, **changes)


def _override_values(overrides: Sequence[str]) -> dict[str, Any]:
    """``section.key=value`` (or ``output=DIR``) strings as a recipe mapping; values are parsed as YAML."""
    values: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r} is not KEY=VALUE; e.g. --set finetune.epochs=2")
        value = parse_yaml(raw, f"--set {item!r}") if raw else ""
        section, dot, name = key.strip().partition(".")
        if dot:
            if section not in SECTIONS:
                raise ConfigError(
                    f"--set {item!r}: unknown recipe section {section!r}; a recipe has: {', '.join(SECTIONS)}"
                )
            values.setdefault(section, {})[name] = value
        else:
            values[section] = value
    return values


def _merge(values: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The recipe mapping ``values`` with ``overrides`` on top, key by key inside each section."""
    merged = dict(values)
    for key, value in overrides.items():
        old = merged.get(key)
        if key in SECTIONS and isinstance(old, Mapping) and isinstance(value, Mapping):
            merged[key] = {**old, **value}
        else:
            merged[key] = value
    return merged


def load_recipe(path: str | Path | None = None, overrides: Sequence[str] = ()) -> Recipe:
    """The built-in example with the recipe file at ``path`` and then ``overrides`` applied.

    File and overrides are merged before anything is checked, so a file may rely on an
    override (and the other way round) for a rule that spans sections.
    """
    values: Any = {}
    if path is not None:
        path = Path(path)
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(
                f"cannot read recipe {path} ({getattr(exc, 'strerror', None) or exc}); give the path of a YAML recipe, "
                "or leave out --recipe for the built-in example"
            ) from None
        values = parse_yaml(text, f"recipe {path}")
        if values is not None and not isinstance(values, Mapping):
            return recipe_from_mapping(values)  # says it is not a mapping of sections
    return recipe_from_mapping(_merge(values or {}, _override_values(overrides)))


def apply_overrides(recipe: Recipe, overrides: Sequence[str]) -> Recipe:
    """Apply ``section.key=value`` (or ``output=DIR``) strings to ``recipe``."""
    values = _override_values(overrides)
    return recipe_from_mapping(values, recipe) if values else recipe


def dump_recipe(recipe: Recipe) -> str:
    """The recipe as YAML, every key present, in the order the stages run."""
    import yaml

    def scalar(value: Any) -> str:
        text = yaml.safe_dump(value, default_flow_style=True, width=1_000_000).strip()
        return text.removesuffix("...").strip()

    lines = ["# nmdeploy recipe: every key, in stage order (docs/recipe.md)"]
    for name, value in recipe.to_dict().items():
        if isinstance(value, dict):
            lines.append(f"{name}:")
            lines += [f"  {key}: {scalar(v)}" for key, v in value.items()]
        else:
            lines.append(f"{name}: {scalar(value)}")
    return "\n".join(lines) + "\n"


def reference_rows() -> list[tuple[str, str, str, str]]:
    """(key, default, type, meaning) for every recipe key, from the config classes' fields."""
    from nmdeploy.config import help_of

    rows = []
    defaults = Recipe().to_dict()
    for name in [f.name for f in dataclasses.fields(Recipe)]:
        if name in SECTIONS:
            cls = SECTIONS[name]
            hints = typing.get_type_hints(cls)
            for key, default in defaults[name].items():
                rows.append((f"{name}.{key}", _show(default), type_name(hints[key]), help_of(cls, key)))
        else:
            rows.append((name, _show(defaults[name]), "a string", help_of(Recipe, name)))
    return rows


def _show(value: Any) -> str:
    import json

    return json.dumps(value) if not isinstance(value, str) else value

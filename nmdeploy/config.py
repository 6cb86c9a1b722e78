"""What every stage's frozen config dataclass shares: documented fields, type checks, unknown keys.

Each stage owns one config class (``SparsityConfig``, ``TrainConfig``, ``ExportConfig``,
``QuantizeConfig``, ``EngineConfig``, ...), whose fields are declared with :func:`setting` so
that the recipe reference and the command-line help read their text from one place. A
config validates itself once, in ``__post_init__``, starting with :func:`check_types`; its
errors are :meth:`ConfigError.setting` errors that name ``section.key``.

Standard library only: the CLI reads these classes for ``--help`` without importing torch.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from nmdeploy.errors import ConfigError, first_line

__all__ = [
    "MAX_INT",
    "build_config",
    "check_types",
    "coerce",
    "env_flag",
    "field_of",
    "from_arguments",
    "help_of",
    "parse_yaml",
    "setting",
    "type_name",
    "unknown_keys",
    "yaml_loader",
]

T = TypeVar("T")


def setting(default: Any, help: str, **metadata: Any) -> Any:
    """A config field with its default and the one-line ``help`` shown in docs and ``--help``."""
    return dataclasses.field(default=default, metadata={"help": help, **metadata})


def field_of(cls: type, name: str) -> dataclasses.Field:
    """Field ``name`` of the config class ``cls``; a name that is not one is a programming error."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            return f
    raise AttributeError(f"{cls.__name__} has no field {name!r}")


def help_of(cls: type, name: str) -> str:
    """The help text :func:`setting` gave field ``name`` of the config class ``cls``."""
    return field_of(cls, name).metadata.get("help", "")


def type_name(hint: Any) -> str:
    """How an error message names the type ``hint`` asks for (``an integer``, ``a list of strings``)."""
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string", type(None): "null"}
    if hint in names:
        return names[hint]
    args = typing.get_args(hint)
    if typing.get_origin(hint) is tuple:
        return f"a list of {type_name(args[0]).removeprefix('an ').removeprefix('a ')}s"
    if typing.get_origin(hint) is dict:
        return f"a mapping of {type_name(args[0]).removeprefix('an ').removeprefix('a ')}s to {type_name(args[1]).removeprefix('an ').removeprefix('a ')}"
    return " or ".join(type_name(a) for a in args)


def coerce(value: Any, hint: Any, *, widen: bool = True) -> tuple[bool, Any]:
    """(fits, the value as the field stores it): lists become tuples; ``widen``: ints become floats."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(hint):
            ok, out = coerce(value, arg, widen=widen)
            if ok:
                return True, out
        return False, value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            return False, value
        items = [coerce(v, typing.get_args(hint)[0], widen=widen) for v in value]
        return all(ok for ok, _ in items), tuple(out for _, out in items)
    if origin is dict:  # stored as a plain dict; keys and values coerced like any field
        if not isinstance(value, Mapping):
            return False, value
        key_hint, value_hint = typing.get_args(hint)
        pairs = [(coerce(k, key_hint, widen=widen), coerce(v, value_hint, widen=widen)) for k, v in value.items()]
        return all(k[0] and v[0] for k, v in pairs), {k[1]: v[1] for k, v in pairs}
    if hint is type(None):
        return value is None, value
    if hint is bool:
        return isinstance(value, bool), value
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if hint is float:
        fits = isinstance(value, (int, float)) and not isinstance(value, bool)
        return fits, float(value) if fits and widen else value
    return isinstance(value, hint), value


def typed_values(cls: type, values: Mapping[str, Any], section: str, *, widen: bool = False) -> dict[str, Any]:
    """``values`` (field name -> value) in the types ``cls`` declares, or the error naming the first misfit.

    Lists become tuples; ``widen`` turns integers into floats where a number is declared (what a
    YAML ``1`` means), otherwise they are accepted and kept.
    """
    hints = typing.get_type_hints(cls)
    typed = {}
    for name, value in values.items():
        ok, typed[name] = coerce(value, hints[name], widen=widen)
        if not ok:
            raise ConfigError.setting(
                section, f"{name} = {value!r} has the wrong type: expected {type_name(hints[name])}"
            )
        for item in typed[name] if isinstance(typed[name], tuple) else (typed[name],):
            problem = _out_of_range(item)
            if problem:
                raise ConfigError.setting(section, f"{name} = {value!r} {problem}")
    return typed


MAX_INT = 2**63 - 1  # what torch and numpy take as an integer


def _out_of_range(value: Any) -> str:
    """What no setting can hold: NaN and infinities (which slip through ``x < 0`` checks), or integers past int64."""
    if isinstance(value, float) and not math.isfinite(value):
        return "is not a finite number; give a number"
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INT:
        return "is too large; give an integer below 2**63"
    return ""


def check_types(config: Any, section: str) -> None:
    """Raise unless every field of ``config`` holds its declared type; store lists as tuples.

    Integers are accepted (and kept) where a number is declared: ``lr=0`` stays ``0``.
    """
    current = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    for name, value in typed_values(type(config), current, section).items():
        if isinstance(current[name], (list, dict)):
            object.__setattr__(config, name, value)  # frozen: the tuple is the canonical form


def unknown_keys(cls: type, values: Mapping[str, Any]) -> list[str]:
    """The keys of ``values`` that are not init fields of ``cls``, sorted."""
    fields = {f.name for f in dataclasses.fields(cls) if f.init}
    return sorted(set(values) - fields)


def build_config(cls: type[T], values: Mapping[str, Any] | None, where: str) -> T:
    """Return ``cls(**values)`` after checking every key is a field of ``cls``.

    ``where`` names the place the values came from (e.g. ``"method 'maxq' options"``), so
    the error points the user at what to edit.
    """
    values = dict(values or {})
    unknown = unknown_keys(cls, values)
    if unknown:
        fields = [f.name for f in dataclasses.fields(cls) if f.init]  # type: ignore[arg-type]
        raise ConfigError(
            f"unknown key(s) {', '.join(map(repr, unknown))} in {where}; allowed: {', '.join(fields) or '(none)'}"
        )
    return cls(**values)


def from_arguments(cls: type[T], **values: Any) -> T:
    """``cls(**values)`` for a function that takes the settings as keyword arguments.

    Its errors speak of the arguments (``pattern "3:2" is invalid``) rather than of the
    config's fields (``sparsity.pattern: ...``) where the config kept that wording.
    """
    try:
        return cls(**values)
    except ConfigError as exc:
        raise (exc.original or exc) from None


def env_flag(value: str | None, name: str, default: bool = False) -> bool:
    """Parse an environment boolean strictly: only 1/0/true/false (any case) are accepted."""
    if value is None or value == "":
        return default
    lowered = value.strip().lower()
    if lowered in ("1", "true"):
        return True
    if lowered in ("0", "false"):
        return False
    raise ConfigError(f"environment variable {name}={value!r} is not a boolean; use 1/0/true/false")


def yaml_loader() -> type:
    """``yaml.SafeLoader`` read the YAML 1.2 way for numbers, and refusing a key given twice.

    PyYAML follows YAML 1.1, which reads ``pattern: 2:4`` as the base-60 integer 124 and
    ``decay: 1e-4`` as a string; both surprise anyone writing a recipe. A key written twice
    in one mapping would silently keep the last value. Safe loading is kept: no tag builds a
    Python object.
    """
    import re

    import yaml

    class Loader(yaml.SafeLoader):
        def construct_mapping(self, node: Any, deep: bool = False) -> dict:
            lines: dict[Any, int] = {}  # key -> the line it first appears on
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                if not isinstance(key, (str, int, float, bool)):
                    continue  # unhashable keys: the base class reports them
                if key in lines:
                    problem = f"the key {key!r} is given twice (first on line {lines[key] + 1}); keep one"
                    raise yaml.constructor.ConstructorError(None, None, problem, key_node.start_mark)
                lines[key] = key_node.start_mark.line
            return super().construct_mapping(node, deep)

    numbers = ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")
    Loader.yaml_implicit_resolvers = {
        first: [(tag, re.compile(r"(?!.*:)" + rx.pattern, rx.flags) if tag in numbers else rx) for tag, rx in resolvers]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789")
    )
    return Loader


def parse_yaml(text: str, where: str, error: type[Exception] = ConfigError) -> Any:
    """``text`` read with :func:`yaml_loader`; a problem is one ``error`` line naming ``where``, the line and column."""
    import yaml

    try:
        return yaml.load(text, Loader=yaml_loader())  # a SafeLoader: YAML never builds Python objects here
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or first_line(exc)
        raise error(f"{where} is not valid YAML{at}: {problem}") from None

"""Command-line options made from config fields, so a flag and its setting cannot drift apart.

:func:`setting_option` turns one field of a stage's config class (``QuantizeConfig.method``,
``EngineConfig.workspace_mb``, ...) into a click option whose parameter name, default, help
text, type and choices come from the field; a name that is not a field fails at import, so
every ``--help`` test catches it. :func:`config_from` then builds the config from the parsed
parameters with the errors worded for arguments. The config modules are standard library
only: reading them costs ``--help`` no torch.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import click

from nmdeploy.config import field_of, from_arguments

__all__ = ["config_from", "setting_option"]

T = TypeVar("T")
_NO_DEFAULT = object()


def setting_option(
    cls: type, name: str, *decls: str, invert: bool = False, default: Any = _NO_DEFAULT, **kwargs: Any
) -> Callable[[Callable], Callable]:
    """A click option for field ``name`` of ``cls``.

    ``invert``: a flag that turns a true-by-default setting off (``--per-tensor`` sets
    ``per_channel`` false); ``default`` overrides the field's default where the command's
    own default differs (say so in its help). Other keywords go to :func:`click.option`.
    """
    f = field_of(cls, name)  # not a field: fails at import, so any --help test finds it
    hint = typing.get_type_hints(cls)[name]
    value = f.default if default is _NO_DEFAULT else default
    options: dict[str, Any] = {
        "help": f.metadata.get("help", "").replace("`", ""),
        "default": value,
    }  # docs mark code, --help does not
    if hint is bool:
        options.update(is_flag=True, flag_value=not value if invert else True, default=value)
    elif typing.get_origin(hint) is tuple:
        options.update(multiple=True, default=value or ())
    elif "choices" in f.metadata:
        options.update(type=click.Choice(f.metadata["choices"]), show_default=True)
    else:
        base = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
        options["type"] = base[0] if base[0] in (int, float, str) else None
        options["show_default"] = value is not None
    options.update(kwargs)
    return click.option(*decls, name, **options)


def config_from(cls: type[T], params: Mapping[str, Any], **values: Any) -> T:
    """``cls`` from the parsed ``params`` that are its fields, plus ``values``; errors name the arguments."""
    names = {f.name for f in dataclasses.fields(cls)}
    given = {k: (tuple(v) if isinstance(v, list) else v) for k, v in params.items() if k in names}
    return from_arguments(cls, **{**given, **values})

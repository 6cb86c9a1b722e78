"""Optimisation profiles: min/opt/max input shapes for an engine with a dynamic batch.

An input whose only symbolic dimension is the batch gets ``(min_batch, opt_batch,
max_batch)`` there; anything else needs explicit ``name:1x3x224x224`` shapes (trtexec's
spelling, so the same strings work in ``build_engine.sh``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from nmdeploy.engine.config import check_batch, check_shapes
from nmdeploy.errors import ConfigError, InputError

__all__ = ["ShapeProfile", "make_profile", "onnx_inputs", "parse_shapes", "format_shape"]

Shape = tuple[int, ...]


def format_shape(shape: Shape) -> str:
    return "x".join(str(d) for d in shape)


@dataclass(frozen=True)
class ShapeProfile:
    """name -> (min, opt, max) shapes of every network input."""

    inputs: Mapping[str, tuple[Shape, Shape, Shape]]

    def trtexec_args(self) -> list[str]:
        """``--minShapes=... --optShapes=... --maxShapes=...`` for trtexec."""
        args = []
        for flag, i in (("--minShapes", 0), ("--optShapes", 1), ("--maxShapes", 2)):
            args.append(f"{flag}=" + ",".join(f"{name}:{format_shape(s[i])}" for name, s in self.inputs.items()))
        return args

    def to_dict(self) -> dict[str, dict[str, list[int]]]:
        return {name: {"min": list(s[0]), "opt": list(s[1]), "max": list(s[2])} for name, s in self.inputs.items()}


def parse_shapes(text: str | None, what: str) -> dict[str, Shape]:
    """``"input:1x1x28x28,mask:1x128"`` -> {name: shape}; ``what`` names the option in errors."""
    if not text:
        return {}
    shapes: dict[str, Shape] = {}
    for item in text.split(","):
        name, sep, dims = item.strip().rpartition(":")
        try:
            shape = tuple(int(d) for d in dims.lower().split("x"))
        except ValueError:
            shape = ()
        if not sep or not name or not shape or any(d < 1 for d in shape):
            raise ConfigError(f"{what} {item.strip()!r} is not NAME:DIMS with positive sizes, e.g. input:1x1x28x28")
        shapes[name] = shape
    return shapes


def onnx_inputs(path: str | Path) -> dict[str, tuple[int | str, ...]]:
    """Graph inputs of an ONNX file (initializers excluded): name -> dims (int, or the symbol)."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise InputError(
            f"{path} is not a readable ONNX model ({type(exc).__name__}); pass the .onnx from nmdeploy quantize"
        ) from None
    weights = {init.name for init in model.graph.initializer}
    found = {}
    for value in model.graph.input:
        if value.name in weights:
            continue
        dims = value.type.tensor_type.shape.dim
        found[value.name] = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims)
    return found


def make_profile(
    inputs: Mapping[str, tuple[int | str, ...]],
    batch: tuple[int, int, int] = (1, 32, 256),
    min_shapes: Mapping[str, Shape] | None = None,
    opt_shapes: Mapping[str, Shape] | None = None,
    max_shapes: Mapping[str, Shape] | None = None,
    dims: Mapping[str, tuple[int, ...]] | None = None,
) -> ShapeProfile:
    """The profile for ``inputs``: explicit shapes where given, else the batch range on dim 0 and
    ``dims`` (dim name -> min, opt, max; ``engine.shapes``) on the other symbolic dims."""
    explicit = [dict(min_shapes or {}), dict(opt_shapes or {}), dict(max_shapes or {})]
    check_batch(batch)
    ranges = dict(dims or {})
    symbols = {d for shape in inputs.values() for d in shape[1:] if isinstance(d, str)}
    unknown_dims = sorted(set(ranges) - symbols)
    if unknown_dims:
        raise ConfigError(
            f"engine.shapes names {unknown_dims[0]!r}, which is no dynamic dim of the model "
            f"(its dims besides the batch: {', '.join(sorted(symbols)) or 'none'})"
        )
    check_shapes(ranges)
    for given, flag in zip(explicit, ("min", "opt", "max")):
        unknown = sorted(set(given) - set(inputs))
        if unknown:
            raise ConfigError(
                f"--{flag}-shapes names {unknown[0]!r}, which is not an input of the model ({', '.join(inputs)})"
            )
    profile: dict[str, tuple[Shape, Shape, Shape]] = {}
    for name, dims in inputs.items():
        named = [given.get(name) for given in explicit]
        if any(s is not None for s in named):
            if any(s is None for s in named):
                raise ConfigError(f"input {name!r} needs all of --min-shapes, --opt-shapes and --max-shapes")
            shapes: tuple[Shape, Shape, Shape] = (named[0], named[1], named[2])  # type: ignore[assignment]
        else:
            shape = inputs[name]
            missing = [
                (i, d) for i, d in enumerate(shape) if i > 0 and (not isinstance(d, int) or d <= 0) and d not in ranges
            ]
            if missing:
                i, d = missing[0]
                raise ConfigError(
                    f"input {name!r} has dynamic dim {i} ({d!r}) besides the batch ({list(shape)}); give its range: "
                    f"engine.shapes {{{d}: [min, opt, max]}} in a recipe, or --min-shapes/--opt-shapes/--max-shapes NAME:DIMS"
                )
            shapes = tuple(  # type: ignore[assignment]
                tuple(
                    (batch[k] if i == 0 else ranges[d][k]) if not isinstance(d, int) or d <= 0 else d
                    for i, d in enumerate(shape)
                )
                for k in range(3)
            )
        for s in shapes:
            if len(s) != len(dims) or any(isinstance(d, int) and d > 0 and d != v for d, v in zip(dims, s)):
                raise ConfigError(f"shape {format_shape(s)} does not fit input {name!r} {list(dims)}")
        if any(not a <= b <= c for a, b, c in zip(*shapes)):
            raise ConfigError(
                f"input {name!r}: need min <= opt <= max in every dim, got "
                f"{' / '.join(format_shape(s) for s in shapes)}"
            )
        profile[name] = shapes
    return ShapeProfile(profile)

"""The data options of the commands that read a data SPEC (eval, calibrate, quantize).

They are the image-folder, text and loader settings of the recipe's ``data`` section
(:class:`DataConfig`, which checks them), worded for a command line. For ``eval`` and
``quantize`` an image folder with no ``--image-size`` takes the model's own input size
(and channels) when the ONNX model fixes them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from nmdeploy.data.config import MAX_WORKERS, DataConfig

__all__ = ["DATA_OPTIONS", "data_config"]


def _numbers(kind: type, example: str) -> Callable[[click.Context, click.Parameter, str | None], tuple | None]:
    def parse(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple | None:
        if value is None:
            return None
        try:
            return tuple(kind(v) for v in value.replace(" ", "").split(","))
        except ValueError:
            raise click.BadParameter(f"{value!r} is not a comma-separated list of numbers, e.g. {example}") from None

    return parse


_OPTIONS = (
    click.option(
        "--image-size",
        metavar="SIZE",
        callback=_numbers(int, "224 or 224,256"),
        help="Image folders: resize (shorter side to SIZE / 0.875) and centre-crop to SIZE or H,W "
        "(recipe key data.image_size).  [default: the model's input size, else as stored]",
    ),
    click.option(
        "--channels",
        type=click.Choice(["1", "3"]),
        help="Image folders: read as grayscale (1) or RGB (3).  [default: the model's, else the first image's]",
    ),
    click.option(
        "--mean",
        metavar="M,M,M",
        callback=_numbers(float, "0.485,0.456,0.406"),
        help="Image folders: per-channel mean after / 255.",
    ),
    click.option(
        "--std", metavar="S,S,S", callback=_numbers(float, "0.229,0.224,0.225"), help="Image folders: per-channel std."
    ),
    click.option("--skip-bad", is_flag=True, help="Image folders: skip unreadable files (and count them)."),
    click.option(
        "--tokenizer",
        metavar="FOLDER",
        help="Text files (.jsonl, .csv): the transformers folder whose tokenizer reads them (hf:PATH or a path; "
        "recipe key data.tokenizer).",
    ),
    click.option(
        "--max-length",
        type=click.IntRange(1),
        default=None,
        help=f"Text files: tokens per text at most; longer texts are truncated.  [default: {DataConfig.max_length}]",
    ),
    click.option(
        "--workers",
        type=click.IntRange(0),
        help=f"Processes that read the data; 0 = this one.  [default: 0 for arrays, else one per spare core, "
        f"at most {MAX_WORKERS}]",
    ),
)


def DATA_OPTIONS(function: Callable) -> Callable:  # noqa: N802 - a decorator, named like the others
    """All the data options, on one command."""
    for option in reversed(_OPTIONS):
        function = option(function)
    return function


def data_config(params: dict[str, Any], spec: str | None, model: Path | None = None) -> DataConfig:
    """The :class:`DataConfig` the options give (popped from ``params``); for an image folder,
    ``model``'s fixed input size and channels stand in for ``--image-size`` and ``--channels``."""
    from nmdeploy.config import from_arguments

    size = params.pop("image_size", None)
    channels = params.pop("channels", None)
    channels = int(channels) if channels is not None else None
    values = {
        "mean": params.pop("mean", None),
        "std": params.pop("std", None),
        "skip_bad": params.pop("skip_bad", False),
        "workers": params.pop("workers", None),
        "tokenizer": params.pop("tokenizer", None),
    }
    length = params.pop("max_length", None)
    if length is not None:
        values["max_length"] = length
    if (size is None or channels is None) and model is not None and spec and Path(spec).is_dir():
        from nmdeploy.quant.reader import image_input_shape

        shape = image_input_shape(model)
        if shape is not None:
            size = size or shape[1:]
            channels = channels or shape[0]
    if size is not None:
        size = size[0] if len(size) == 1 else tuple(size)
    return from_arguments(DataConfig, image_size=size, channels=channels, **values)

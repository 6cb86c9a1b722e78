"""``--force`` and the up-front claim on every output, shared by every command that writes a file.

A command names its outputs and its inputs before any work (``nmdeploy.outputs``): an existing
output is refused unless ``--force`` is given (a CI job must not silently replace an engine
another step relies on), an input is never an output, and a folder that cannot take a new file
fails now rather than after an hour of fine-tuning.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import click

FORCE = click.option("--force", is_flag=True, help="Overwrite output files that already exist.")


def claim_outputs(outputs: Iterable, force: bool, inputs: Iterable[str | Path | None] = ()) -> None:
    """Raise :class:`OutputError` for an output that must not be written (see ``nmdeploy.outputs``)."""
    from nmdeploy.outputs import claim_outputs as claim

    claim(outputs, force, inputs)


def onnx_inputs(*models: Path | None) -> list[Path]:
    """The ONNX files a command reads, with their external data."""
    from nmdeploy.outputs import onnx_files

    return [file for model in models if model is not None for file in onnx_files(model)]

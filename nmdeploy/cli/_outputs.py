"""``--force`` and the up-front output check shared by every command that writes a file.

A command checks its outputs before any work: an existing file is refused unless ``--force``
is given (a CI job must not silently replace an engine another step relies on), and a folder
that cannot take a new file fails now rather than after an hour of fine-tuning.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import click

FORCE = click.option("--force", is_flag=True, help="Overwrite output files that already exist.")


def claim_outputs(paths: Iterable[Path | None], force: bool) -> None:
    """Raise :class:`OutputError` for an existing output (without ``force``) or an unwritable folder."""
    from nmdeploy._atomic import check_writable
    from nmdeploy.errors import OutputError

    for path in paths:
        if path is None or str(path) == "-":
            continue
        if path.is_dir():
            raise OutputError(f"{path} is a folder; give a file name for the output")
        if path.exists() and not force:
            raise OutputError(f"{path} already exists; pass --force to overwrite it, or choose another output path")
        check_writable(path)

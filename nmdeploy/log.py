"""The one ``nmdeploy`` logger and its console set-up (used by the CLI)."""

from __future__ import annotations

import logging

__all__ = ["LOGGER", "configure_logging"]

LOGGER = logging.getLogger("nmdeploy")


def configure_logging(verbosity: int = 0) -> None:
    """Route nmdeploy's log records to stderr through rich.

    ``verbosity``: -1 = warnings only (``-q``), 0 = info, 1 or more = debug (``-v``).
    """
    from rich.logging import RichHandler  # imported here: only the CLI needs it

    level = logging.WARNING if verbosity < 0 else logging.INFO if verbosity == 0 else logging.DEBUG
    LOGGER.handlers[:] = [RichHandler(show_time=False, show_path=verbosity > 0, markup=False)]
    LOGGER.setLevel(level)
    LOGGER.propagate = False

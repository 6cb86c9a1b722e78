"""A rich progress bar per named stage, driven by ``callback(stage, done, total)``."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import click


def quiet() -> bool:
    ctx = click.get_current_context(silent=True)
    return bool(ctx and (ctx.find_root().obj or {}).get("quiet"))


@contextlib.contextmanager
def stage_progress(disable: bool = False) -> Iterator[Callable[[str, int, int], None]]:
    """Yield a callback that creates a bar the first time a stage reports and updates it after.

    The display starts with the first bar, so a command that fails before any long stage
    prints only its one-line error.
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    off = disable or quiet()
    progress: Progress | None = None
    tasks: dict[str, int] = {}

    def update(stage: str, done: int, total: int) -> None:
        nonlocal progress
        if off:
            return
        if progress is None:
            progress = Progress(*columns, console=Console(stderr=True), transient=True)
            progress.start()
        if stage not in tasks:
            tasks[stage] = progress.add_task(stage, total=total)
        progress.update(tasks[stage], completed=done, total=total)

    try:
        yield update
    finally:
        if progress is not None:
            progress.stop()

"""Write files so that a reader sees either the old file or the whole new one, never half."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

__all__ = ["write_atomic", "write_all_atomic"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _stage(path: Path, payload: bytes) -> str:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file normal permissions
    except BaseException:
        os.unlink(tmp)
        raise
    return tmp


def write_all_atomic(files: Sequence[tuple[str | Path, bytes | str]]) -> None:
    """Write every (path, payload) to a temporary file first, then move them all into place."""
    staged: list[tuple[str, Path]] = []
    try:
        for path, payload in files:
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            staged.append((_stage(path, payload.encode() if isinstance(payload, str) else payload), path))
        for tmp, path in staged:
            os.replace(tmp, path)
    finally:
        for tmp, _ in staged:
            if os.path.exists(tmp):
                os.unlink(tmp)


def write_atomic(path: str | Path, payload: bytes | str) -> None:
    """Write one file atomically (temporary file beside it, then rename)."""
    write_all_atomic([(path, payload)])

"""Write files so that a reader sees either the old file or the whole new one, never half.

Every artifact nmdeploy writes goes through here: the bytes go to a temporary file beside
the target (same filesystem, so the rename is atomic), which is flushed and ``fsync``-ed,
renamed over the target, and then the directory is ``fsync``-ed so the rename itself
survives a power cut. Writers that need a file name rather than bytes (``onnx.save``,
``torch.onnx.export``) use :func:`atomic_output`, which gives them a private temporary folder
whose files are published the same way. On any failure the temporary files are removed,
and the OS errors a user can fix (disk full, read-only or unwritable folder) become one-line
:class:`~nmdeploy.errors.OutputError` messages.

This module is also copied into the TensorRT target bundle, so it needs only the standard
library and ``nmdeploy.errors``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from nmdeploy.errors import OutputError

__all__ = [
    "staged_folder",
    "atomic_output",
    "check_writable",
    "make_folders",
    "output_error",
    "publish_folder",
    "remove_folders",
    "write_all_atomic",
    "write_atomic",
]

_FIXES = {
    errno.ENOSPC: "the disk is full; free space (or choose another output folder) and re-run",
    errno.EDQUOT: "the disk quota is exhausted; free space (or choose another output folder) and re-run",
    # One text for all three: which one a machine reports for the same folder varies (root, containers).
    errno.EROFS: "the folder is read-only or not writable for this user; choose a writable output folder",
    errno.EACCES: "the folder is read-only or not writable for this user; choose a writable output folder",
    errno.EPERM: "the folder is read-only or not writable for this user; choose a writable output folder",
    errno.ENOTDIR: "a part of the path is a file, not a folder; choose another output path",
}


def output_error(path: str | Path, exc: OSError) -> OutputError | OSError:
    """The one-line :class:`OutputError` for ``exc`` while writing ``path``; ``exc`` itself when no fix is known."""
    fix = _FIXES.get(exc.errno or 0)
    if fix is None:
        return exc
    return OutputError(f"cannot write {path}: {fix} (nothing was written there)")


def check_writable(path: str | Path, *, is_folder: bool = False) -> None:
    """Fail now, not after an hour of work, when ``path``'s folder (or ``path`` itself, a folder) cannot take a new file.

    Nothing is created: the probe file goes into the nearest folder that already exists (where
    the missing ones would be made) and is removed at once. A probe, not ``os.access``, so that
    root on a read-only filesystem is caught too.
    """
    folder = Path(path) if is_folder else Path(path).parent
    existing = folder
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    try:
        if not existing.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(existing))
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".nmdeploy-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        found = output_error(path, exc)
        if isinstance(found, OutputError):
            raise found from None
        reason = exc.strerror or type(exc).__name__  # before any work every reason is a one-line refusal
        raise OutputError(
            f"cannot write {path}: {reason}; choose another output path (nothing was written there)"
        ) from None


def make_folders(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; returns those created, outermost first."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for created in reversed(missing):
        created.mkdir(exist_ok=True)
    return list(reversed(missing))


def remove_folders(created: list[Path]) -> None:
    """Undo :func:`make_folders` as far as the folders are still empty (a failed write leaves no folder)."""
    for folder in reversed(created):
        with contextlib.suppress(OSError):
            folder.rmdir()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # some filesystems cannot open or sync folders; the rename still happened
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


def _normal_permissions(path: str | Path) -> None:
    os.chmod(path, 0o666 & ~_umask())  # mkstemp makes 0600; give the file what a plain open() would


def _write_payload(fh, payload: bytes) -> None:
    fh.write(payload)
    fh.flush()
    os.fsync(fh.fileno())


def _stage(path: Path, payload: bytes) -> str:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            _write_payload(fh, payload)
        _normal_permissions(tmp)
    except BaseException:
        os.unlink(tmp)
        raise
    return tmp


def write_all_atomic(files: Sequence[tuple[str | Path, bytes | str]]) -> None:
    """Write every (path, payload) to a temporary file first, then move them all into place."""
    staged: list[tuple[str, Path]] = []
    created: list[Path] = []
    current = Path(files[0][0]) if files else Path(".")
    published = False
    try:
        for path, payload in files:
            current = path = Path(path)
            created += make_folders(path.parent)
            staged.append((_stage(path, payload.encode() if isinstance(payload, str) else payload), path))
        for tmp, path in staged:
            current = path
            os.replace(tmp, path)
        published = True
        for folder in {path.parent for _, path in staged}:
            _fsync_dir(folder)
    except OSError as exc:
        raise output_error(current, exc) from None
    finally:
        for tmp, _ in staged:
            if os.path.exists(tmp):
                os.unlink(tmp)
        if not published:
            remove_folders(created)


def write_atomic(path: str | Path, payload: bytes | str) -> None:
    """Write one file atomically (temporary file beside it, fsync, rename, fsync the folder)."""
    write_all_atomic([(path, payload)])


def _folder_beside(path: Path) -> tuple[Path, list[Path]]:
    """A new private folder beside ``path`` (its parents made as needed), and the parents it made."""
    created: list[Path] = []
    try:
        created = make_folders(path.parent)
        return Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}-")), created
    except OSError as exc:
        remove_folders(created)
        raise output_error(path, exc) from None


@contextlib.contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """A private temporary folder beside ``path``; write ``<folder>/<path.name>`` (and siblings) there.

    On a clean exit every file in the folder is fsync-ed and renamed next to ``path`` (the
    model file last, so a reader never finds it without its external data); on an exception
    the folder is deleted and ``path`` is left as it was, as are the folders above it (those
    created for it are removed again).
    """
    path = Path(path)
    folder, created = _folder_beside(path)
    published = False
    try:
        yield folder
        files = sorted((f for f in folder.iterdir() if f.is_file()), key=lambda f: f.name == path.name)
        for file in files:
            _fsync_file(file)
            _normal_permissions(file)
        for file in files:
            os.replace(file, path.parent / file.name)
        published = True
        _fsync_dir(path.parent)
    except OSError as exc:
        raise output_error(path, exc) from None
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        if not published:
            remove_folders(created)


@contextlib.contextmanager
def staged_folder(dest: str | Path) -> Iterator[Path]:
    """A private folder beside ``dest`` to fill; on a clean exit it becomes ``dest`` whole
    (:func:`publish_folder`, readable by all), on an exception it is deleted, ``dest`` is left as it
    was, and the folders created above it are removed again."""
    dest = Path(dest)
    stage, created = _folder_beside(dest)
    published = False
    try:
        yield stage
        for folder in (stage, *(p for p in stage.rglob("*") if p.is_dir())):
            folder.chmod(0o755)  # mkdtemp makes the stage private; the folder it becomes is not
        publish_folder(stage, dest)
        published = True
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)
        if not published:
            remove_folders(created)


def publish_folder(stage: Path, dest: Path) -> None:
    """Move the finished folder ``stage`` to ``dest``, replacing an older one (both on one filesystem).

    Files inside are fsync-ed first. The old folder is moved aside before the new one takes
    its name, so ``dest`` is at every moment either the complete old or the complete new folder
    (or, for an instant, absent; never a mixture).
    """
    try:
        for file in (f for f in stage.rglob("*") if f.is_file()):
            _fsync_file(file)
        old = None
        if dest.exists():
            old = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}-old-"))
            os.replace(dest, old / dest.name)
        try:
            os.replace(stage, dest)
        except OSError:
            if old is not None:
                os.replace(old / dest.name, dest)  # put the old folder back
            raise
        finally:
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        _fsync_dir(dest.parent)
    except OSError as exc:
        raise output_error(dest, exc) from None

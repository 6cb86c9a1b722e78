"""One claim on every output, before any work: what a command may write, and what it must never touch.

Every command names all the paths it will write (files, and folders it replaces whole, such
as a target bundle) and the files it reads, and :func:`claim_outputs` checks them together
before anything runs. An output is refused

- when it is one of the command's inputs, or (a folder) holds one: always, ``--force`` or not;
- when two outputs are the same path;
- when it exists and ``--force`` was not given (an output that is read and rewritten, such as a
  timing cache, may exist);
- when it is a folder the command would replace but did not make: ``--force`` replaces a
  folder only if it carries the command's marker file (``bundle.json``) or the user named
  that exact folder, and never a build's output folder (it holds ``manifest.json``);
- when its folder cannot take a new file (every OS error is one line; nothing is created).

Nothing is created here: the writers create the folders they need when they write.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from nmdeploy._atomic import check_writable
from nmdeploy.errors import OutputError

__all__ = ["Output", "claim_outputs", "onnx_files"]


@dataclass(frozen=True)
class Output:
    """A path a command writes. ``folder``: replaced whole (a bundle); ``named``: the user gave
    this path (an option), not a default; ``rewrites``: read if present, then rewritten (a
    timing cache); ``marker``: a file every folder of this kind holds (what proves it is ours)."""

    path: Path
    folder: bool = False
    named: bool = True
    rewrites: bool = False
    marker: str | None = None


def _resolved(path: str | Path) -> Path:
    return Path(path).expanduser().resolve()  # symlinks followed: a link to an input is that input


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def claim_outputs(
    outputs: Iterable[Output | Path | None], force: bool, inputs: Iterable[str | Path | None] = ()
) -> None:
    """Raise :class:`OutputError` (one line) unless every output may be written; see the module docstring.

    ``None`` and ``-`` (standard output) entries are skipped; plain paths are file outputs.
    ``inputs`` may hold anything a command reads; only what exists on disk is compared.
    """
    claims = [o if isinstance(o, Output) else Output(Path(o)) for o in outputs if o is not None and str(o) != "-"]
    read = {_resolved(i): Path(i) for i in inputs if i is not None and str(i) != "-" and Path(i).exists()}
    seen: dict[Path, Path] = {}
    for claim in claims:  # first what no --force can allow
        path, where = claim.path, _resolved(claim.path)
        if where in read:
            raise OutputError(f"{path} is also an input of this command; write the output to another path")
        if claim.folder:
            held = next((shown for full, shown in read.items() if _inside(full, where)), None)
            if held is not None:
                raise OutputError(f"{path} holds {held}, an input of this command; write into another folder")
            if (path / "manifest.json").is_file() and not (claim.marker and (path / claim.marker).is_file()):
                raise OutputError(f"{path} is an nmdeploy build folder; write this output into a folder of its own")
        if where in seen:
            raise OutputError(f"{path} is given for two outputs ({seen[where]} too); give each output its own path")
        seen[where] = path
    for claim in claims:
        _check_existing(claim, force)
        check_writable(claim.path, is_folder=claim.folder)


def _check_existing(claim: Output, force: bool) -> None:
    path = claim.path
    if not path.exists() and not path.is_symlink():
        return
    if claim.folder and not path.is_dir():
        raise OutputError(f"{path} is a file; give a folder for this output")
    if not claim.folder and path.is_dir():
        raise OutputError(f"{path} is a folder; give a file name for the output")
    if claim.rewrites:
        return
    if not force:
        raise OutputError(f"{path} already exists; pass --force to overwrite it, or choose another output path")
    if claim.folder and not claim.named and not (claim.marker and (path / claim.marker).is_file()):
        raise OutputError(
            f"{path} exists and is not one nmdeploy wrote (no {claim.marker}); --force replaces only its own: "
            "move that folder away, or name it as the output if it should be replaced"
        )


def onnx_files(path: str | Path) -> list[Path]:
    """``path`` and the external-data files it names (what a command reading this ONNX must not overwrite)."""
    path = Path(path)
    files = [path]
    try:
        import onnx
        from onnx.external_data_helper import ExternalDataInfo, uses_external_data

        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # not readable: the command's own loader says so, in its words
        return files
    for tensor in model.graph.initializer:
        if uses_external_data(tensor):
            files.append(path.parent / ExternalDataInfo(tensor).location)
    return list(dict.fromkeys(files))

"""``build()``: a recipe in, the artifacts, ``manifest.json`` and ``report.md`` out.

Stages run in order and a stage whose inputs are unchanged is kept, so running the same
build again after an interruption (or after editing a late stage's keys) picks up where it
stopped; inside a training stage the epoch checkpoint takes over. Under ``torchrun`` every
process trains (DistributedDataParallel) and the first one writes everything.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nmdeploy._atomic import check_writable
from nmdeploy.errors import ConfigError, OutputError
from nmdeploy.pipeline.recipe import Recipe
from nmdeploy.pipeline.stages import BUNDLE, STAGES, TRITON, run_stages, stage_names

__all__ = ["ALL_STAGES", "ARTIFACTS", "BuildResult", "build"]


ALL_STAGES = stage_names()
ARTIFACTS = (*(name for stage in STAGES for name in stage.writes), "manifest.json", "report.md")


def _claim(out: Path, recipe: Recipe) -> None:
    """The build writes only its own artifacts in ``out``: none of them may be a file it reads.

    An earlier build's artifacts are replaced (that is how a build updates its folder), but a
    ``target-bundle`` folder is replaced only if it is one (it holds ``bundle.json``), and a
    ``triton`` folder only if nmdeploy wrote it (it holds ``client.py``).
    """
    from nmdeploy.engine.bundle import MARKER
    from nmdeploy.engine.repository import MARKER as REPOSITORY_MARKER
    from nmdeploy.outputs import Output, claim_outputs
    from nmdeploy.pipeline.report import PLOTS

    check_writable(out, is_folder=True)  # the folder first, so that an error names it
    files = [out / name for name in (*ARTIFACTS, *PLOTS) if name not in (BUNDLE, TRITON)]
    outputs = [
        *files,
        Output(out / BUNDLE, folder=True, named=False, marker=MARKER),
        Output(out / TRITON, folder=True, named=False, marker=REPOSITORY_MARKER),
        Output(out / ".work", folder=True),
    ]
    if recipe.engine.timing_cache:
        outputs.append(Output(Path(recipe.engine.timing_cache), rewrites=True))
    calibration = recipe.quantize.calibration
    inputs = [
        recipe.model.checkpoint,
        recipe.data.train,
        recipe.data.val,
        calibration,
        Path(calibration).with_suffix(".json") if calibration else None,
    ]
    claim_outputs(outputs, True, inputs)


@dataclass(frozen=True)
class BuildResult:
    out: Path
    manifest: dict[str, Any]
    report: Path | None  # None on the processes of a distributed run that do not write
    engine_note: str


def _check_output(out: Path, force: bool) -> None:
    """Refuse a file, or a non-empty folder that no build wrote (without ``force``), as the output folder.

    A folder with ``manifest.json`` or ``.work/`` is an earlier or interrupted build: it is
    updated in place (only stages whose inputs changed rerun), which is how resuming works.
    """
    if out.exists() and not out.is_dir():
        raise OutputError(f"the output folder {out} is a file; pick another with --out")
    if out.is_dir() and not force and not (out / "manifest.json").is_file() and not (out / ".work").is_dir():
        if any(out.iterdir()):
            raise OutputError(
                f"the output folder {out} already holds files that no nmdeploy build wrote; "
                "pass --force to build into it anyway, or pick another with --out"
            )


def _device(name: str) -> Any:
    import torch

    local = int(os.environ.get("LOCAL_RANK", "0"))
    if name == "auto":
        return torch.device(f"cuda:{local}") if torch.cuda.is_available() else torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"recipe key device = {name!r} but this machine has no CUDA GPU; use auto or cpu")
    if name == "cuda":
        return torch.device(f"cuda:{local}")
    return torch.device(name)


@contextlib.contextmanager
def _distributed(device: Any) -> Iterator[tuple[int, int]]:
    """(rank, world size); under torchrun with several processes, a process group for the build."""
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        yield 0, 1
        return
    started = not dist.is_initialized()
    if started:
        if device.type == "cuda":
            import torch

            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield dist.get_rank(), dist.get_world_size()
    finally:
        if started:
            dist.destroy_process_group()


def build(
    recipe: Recipe,
    out: str | Path | None = None,
    stages: tuple[str, ...] | None = None,
    say: Callable[[str], None] = print,
    progress: Callable[[str, int, int], None] | None = None,
    command: str = "nmdeploy build",
    force: bool = False,
) -> BuildResult:
    """Run ``stages`` (names; default: all) of ``recipe`` into ``out`` (default: ``recipe.output``).

    ``say`` gets one line per epoch and per stage; ``progress(stage, done, total)`` drives bars.
    ``force``: build into a non-empty folder that no build wrote (refused otherwise).
    """
    from nmdeploy.pipeline.context import BuildContext, check_inputs
    from nmdeploy.pipeline.manifest import Manifest
    from nmdeploy.pipeline.report import write_report

    stages = stage_names() if stages is None else tuple(stages)

    out = Path(out if out is not None else recipe.output)
    _check_output(out, force)
    _claim(out, recipe)
    device = _device(recipe.device)
    with _distributed(device) as (rank, world):
        manifest = Manifest(out, recipe.to_dict())
        ctx = BuildContext(
            recipe,
            out,
            manifest,
            device,
            say if rank == 0 else (lambda line: None),
            progress if rank == 0 else None,
            rank,
            world,
        )
        check_inputs(ctx)  # before the output directory exists: bad input leaves nothing behind
        training = tuple(s for s in stages if s in stage_names(training=True))
        run_stages(ctx, training)
    if rank != 0:
        return BuildResult(out, {}, None, "")
    ctx.world = 1  # the other processes are done: the rest runs here alone
    run_stages(ctx, tuple(s for s in stages if s not in training))
    with contextlib.suppress(OSError):
        ctx.work.rmdir()  # empty once every training stage has finished
    verify_path = out / "verify.json"
    verify = json.loads(verify_path.read_text()) if "verify" in manifest.stages and verify_path.is_file() else None
    report = write_report(out, manifest.to_dict(), verify, command)
    engine = manifest.stages.get("engine")
    note = engine.metrics.get("reason", "") if engine is not None and engine.status == "bundled" else ""
    return BuildResult(out, manifest.to_dict(), report, note)

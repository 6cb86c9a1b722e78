"""``nmdeploy build`` (the whole pipeline from one recipe) and ``nmdeploy finetune`` (its training part)."""

from __future__ import annotations

import shlex
from pathlib import Path

import click

_RECIPE = click.option(
    "--recipe",
    type=click.Path(dir_okay=False, path_type=Path),
    help="YAML recipe.  [default: the built-in Fashion-MNIST example]",
)
_SET = click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="SECTION.KEY=VALUE",
    help="Override one recipe key (repeatable), e.g. --set finetune.epochs=2.",
)
_OUT = click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), help="Output directory.  [default: the recipe's output]"
)
_DUMP = click.option(
    "--dump-recipe", is_flag=True, help="Print the merged recipe (defaults, file, --set) as YAML and exit."
)
_FORCE = click.option(
    "--force", is_flag=True, help="Build into a non-empty output folder that no nmdeploy build wrote."
)


def _recipe(recipe_path: Path | None, overrides: tuple[str, ...]):
    from nmdeploy.pipeline.recipe import load_recipe

    return load_recipe(recipe_path, overrides)


def _command(name: str, recipe_path: Path | None, overrides: tuple[str, ...], out: Path | None) -> str:
    """The command line that reproduces this run, for report.md."""
    args = [f"nmdeploy {name}"]
    args += [f"--recipe {shlex.quote(str(recipe_path))}"] if recipe_path else []
    args += [f"--set {shlex.quote(item)}" for item in overrides]
    args += [f"--out {shlex.quote(str(out))}"] if out else []
    return " ".join(args)


def _run(recipe, out: Path | None, stages: tuple[str, ...] | None, command: str, force: bool):
    from nmdeploy.cli._progress import quiet, stage_progress
    from nmdeploy.pipeline.build import build

    silent = quiet()
    with stage_progress() as update:
        return build(
            recipe,
            out,
            stages,
            say=(lambda line: None) if silent else click.echo,
            progress=update,
            command=command,
            force=force,
        )


@click.command()
@_RECIPE
@_SET
@_OUT
@_DUMP
@_FORCE
def build(recipe: Path | None, overrides: tuple[str, ...], out: Path | None, dump_recipe: bool, force: bool) -> None:
    """Run the whole pipeline: dense pre-training, N:M fine-tune, ONNX export, 2:4 verify, INT8, engine.

    With no recipe it builds the built-in example: Fashion-MNIST (Debian package
    dataset-fashion-mnist), a small ResNet, MaxQ 2:4. Writes dense.pt, sparse.pt,
    model.onnx, verify.json, model.int8.onnx, manifest.json and report.md (with plots) to
    the output directory, and the TensorRT engine (model.plan, engine_report.json) where
    TensorRT and a GPU are present, else target-bundle/ to build it on the target GPU.
    Running it again redoes only the stages whose inputs changed, and resumes an interrupted
    training stage where it stopped (Ctrl-C or SIGTERM save the step reached; exit 130/143).
    """
    merged = _recipe(recipe, overrides)
    if dump_recipe:
        from nmdeploy.pipeline.recipe import dump_recipe as dump

        click.echo(dump(merged), nl=False)
        return
    result = _run(merged, out, None, _command("build", recipe, overrides, out), force)
    if result.report is None:
        return  # a non-writing process of a distributed run
    _echo_scores(result.manifest.get("accuracy", {}))
    click.echo(f"wrote {result.out}/: " + ", ".join(p for p in _artifacts(result.out)) + f"; see {result.report}")


def _echo_scores(accuracy: dict) -> None:
    """``top-1: dense 92.80%, sparse 92.40%, ...`` (or the task's metric) from the manifest."""
    shown = {"dense": "dense", "sparse": "sparse", "sparse_onnx": "sparse ONNX", "int8": "sparse INT8"}
    metric = accuracy.get("metric", "top-1")
    parts = [
        f"{shown[k]} {v:.2%}" if metric == "top-1" else f"{shown[k]} {v:.4f}" for k, v in accuracy.items() if k in shown
    ]
    if parts:
        click.echo(f"{metric}: " + ", ".join(parts))


def _artifacts(out: Path) -> list[str]:
    from nmdeploy.pipeline.build import ARTIFACTS

    return [name + ("/" if (out / name).is_dir() else "") for name in ARTIFACTS if (out / name).exists()]


# finetune's shortcuts: option, parameter, the recipe key it sets, metavar, type
_SHORTCUTS = (
    ("--model", "spec", "model.spec", "SPEC", None),
    ("--checkpoint", "checkpoint", "model.checkpoint", "FILE", None),
    ("--data", "data", "data.train", "SPEC", None),
    ("--val-data", "val_data", "data.val", "SPEC", None),
    ("--method", "method", "sparsity.method", "NAME", None),
    ("--pattern", "pattern", "sparsity.pattern", "N:M", None),
    ("--epochs", "epochs", "finetune.epochs", "N", int),
)


def _shortcut(flag: str, param: str, key: str, metavar: str, kind: type | None):
    """An option that stands for ``--set KEY=VALUE``; its help is the recipe key's own."""
    from nmdeploy.config import help_of
    from nmdeploy.pipeline.recipe import SECTIONS

    section, _, name = key.partition(".")
    meaning = help_of(SECTIONS[section], name).replace("`", "")
    if meaning[1:2].islower():  # "Epochs." reads "epochs." after the colon; "N:M pattern" stays
        meaning = meaning[0].lower() + meaning[1:]
    return click.option(flag, param, metavar=metavar, type=kind, help=f"Shortcut for --set {key}={metavar}: {meaning}")


def _with_shortcuts(command):
    for shortcut in reversed(_SHORTCUTS):
        command = _shortcut(*shortcut)(command)
    return command


@click.command()
@_RECIPE
@_SET
@_OUT
@_DUMP
@_FORCE
@_with_shortcuts
def finetune(
    recipe: Path | None,
    overrides: tuple[str, ...],
    out: Path | None,
    dump_recipe: bool,
    force: bool,
    **shortcuts: object,
) -> None:
    """Train only: dense pre-training (or a pretrained checkpoint), then the N:M fine-tune.

    Writes dense.pt, sparse.pt (plain weights with exact N:M zeros) and manifest.json. Each
    epoch is checkpointed; run the same command again to resume. Under torchrun
    (torchrun --nproc_per_node=K -m nmdeploy finetune ...) every process trains with
    DistributedDataParallel and the first one writes the files.
    """
    extra = tuple(
        f"{key}={_yaml_scalar(shortcuts[param])}" for _, param, key, _, _ in _SHORTCUTS if shortcuts[param] is not None
    )
    merged = _recipe(recipe, (*extra, *overrides))
    if dump_recipe:
        from nmdeploy.pipeline.recipe import dump_recipe as dump

        click.echo(dump(merged), nl=False)
        return
    from nmdeploy.pipeline.stages import stage_names

    result = _run(
        merged, out, stage_names(training=True), _command("finetune", recipe, (*extra, *overrides), out), force
    )
    if result.report is None:
        return  # a non-writing process of a distributed run
    _echo_scores(result.manifest.get("accuracy", {}))
    click.echo(
        f"wrote {result.out}/dense.pt, {result.out}/sparse.pt; next: nmdeploy build with the same recipe, "
        "or nmdeploy export"
    )


def _yaml_scalar(value: object) -> str:
    """Quote a string so that --set parses it back as that string (e.g. '2:4' is not a YAML time)."""
    import json

    return json.dumps(value) if isinstance(value, str) else str(value)

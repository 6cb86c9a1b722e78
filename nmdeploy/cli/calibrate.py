"""``nmdeploy calibrate``: draw a reproducible calibration set (.npz + .json manifest)."""

from __future__ import annotations

from pathlib import Path

import click

from nmdeploy.cli._data import DATA_OPTIONS, data_config
from nmdeploy.cli._outputs import FORCE, claim_outputs
from nmdeploy.quant.config import DEFAULT_COUNT, QuantizeConfig


@click.command()
@click.option(
    "--data",
    "spec",
    help="Data SPEC: fashion-mnist[:train|test], an .npz (x, optional y), an image folder or module:callable.",
)
@click.option(
    "-n",
    "--count",
    type=int,
    default=None,
    help=f"Samples to draw (class-balanced when labelled).  [default: {DEFAULT_COUNT}]",
)
@click.option(
    "--seed",
    type=int,
    default=None,
    help=f"Seed of the draw; the same seed gives the same bytes.  [default: {QuantizeConfig.seed}]",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The .npz to write (manifest beside it, .json).",
)
@click.option(
    "--definition",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Build the set a definition (a YAML file: data, count, seed, output) describes.",
)
@DATA_OPTIONS
@FORCE
def calibrate(
    spec: str | None,
    count: int | None,
    seed: int | None,
    output: Path | None,
    definition: Path | None,
    force: bool,
    **options,
) -> None:
    """Draw N samples from a data source into a calibration set for nmdeploy quantize.

    Class-balanced when the source has labels, uniform otherwise, from a fixed seed; written
    as .npz (inputs under x, labels under y) with a .json manifest (source, split, seed,
    count, per-class counts, preprocessing, sha256). A bare built-in name uses its train split.
    Only the drawn samples are read: an image folder is decoded (resized and centre-cropped
    with --image-size) for those alone.
    """
    from nmdeploy.data import open_data
    from nmdeploy.data.loader import resolve_workers
    from nmdeploy.errors import InputError
    from nmdeploy.quant.calibset import (
        check_draw,
        check_set_path,
        make_calibration_set,
        read_definition,
        write_calibration_set,
    )

    if definition is not None:
        if spec or output:
            raise InputError("--definition already names the data and the output; drop --data/-o or drop --definition")
        plan = read_definition(definition)
        spec, output = plan.data, Path(plan.output)
        count = plan.count if count is None else count
        seed = plan.seed if seed is None else seed
    elif not spec or output is None:
        raise InputError("give --data SPEC and -o FILE.npz (or --definition NAME.yaml)")
    count = DEFAULT_COUNT if count is None else count
    seed = QuantizeConfig.seed if seed is None else seed
    check_draw(count, seed)
    check_set_path(output)
    config = data_config(options, spec)
    claim_outputs([output, output.with_suffix(".json")], force, [spec, definition])
    data = open_data(spec, "train", config)
    subset, fields = make_calibration_set(data, count, seed, resolve_workers(config.workers, data))
    manifest = write_calibration_set(output, subset, fields)
    shapes = ", ".join(f"{k} {'x'.join(map(str, v))} {manifest.dtypes[k]}" for k, v in manifest.inputs.items())
    where = f"{manifest.source}:{manifest.split}" if manifest.split else manifest.source
    balance = f"class-balanced over {len(manifest.per_class)} classes" if manifest.balanced else "uniform (no labels)"
    click.echo(f"wrote {output} ({manifest.count} samples from {where}, seed {manifest.seed}, {balance}; {shapes})")
    click.echo(f"sha256 {manifest.sha256}  manifest {output.with_suffix('.json')}")

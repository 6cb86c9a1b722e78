"""Wall time and accuracy of ``nmdeploy build`` on the built-in example (the README's main job).

Runs the built-in recipe from scratch in a fresh output folder (no cached stage), then prints
the per-stage wall times and the top-1 of every artifact from the build's own manifest.

    python -m benchmarks.build_example            # prints the table
    python -m benchmarks.build_example --write    # also rewrites its section of RESULTS.md
    python -m benchmarks.build_example --set data.train_subset=2000 --set dense.epochs=1   # a quick look
"""

from __future__ import annotations

import argparse
import tempfile
import time

from benchmarks._results import write_section
from nmdeploy.pipeline.build import build
from nmdeploy.pipeline.recipe import load_recipe


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], help="recipe override, as for nmdeploy build"
    )
    parser.add_argument(
        "--write", action="store_true", help="rewrite this benchmark's section of benchmarks/RESULTS.md"
    )
    args = parser.parse_args(argv)
    recipe = load_recipe(None, args.overrides)
    with tempfile.TemporaryDirectory(prefix="nmdeploy-build-") as tmp:
        began = time.perf_counter()
        result = build(recipe, tmp, say=lambda line: print(line, flush=True))
        wall = time.perf_counter() - began
    stages = result.manifest["stages"]
    accuracy = result.manifest["accuracy"]
    command = (
        "python -m benchmarks.build_example"
        + "".join(f" --set {o}" for o in args.overrides)
        + (" --write" if args.write else "")
    )
    rows = [f"| {name} | {record['status']} | {record['seconds']:.1f} |" for name, record in stages.items()]
    dense = accuracy.get("dense")
    acc_rows = [
        f"| {name} | {100 * value:.2f}% | {'' if name == 'dense' or dense is None else f'{100 * (value - dense):+.2f} pt'} |"
        for name, value in accuracy.items()
        if name != "metric"
    ]
    body = "\n".join(
        [
            f"Command: `{command}` (the same stages as `nmdeploy build` with no arguments); torch threads: default.",
            "",
            f"**Wall time of the whole build: {wall:.0f} s** (target: at most 300 s on 2 CPU cores).",
            "",
            "| stage | status | seconds |",
            "|---|---|---|",
            *rows,
            "",
            f"| artifact | {accuracy.get('metric', 'top-1')} (validation) | vs dense |",
            "|---|---|---|",
            *acc_rows,
            "",
            "Targets: dense >= 90%, sparse INT8 within 1 pt of dense.",
        ]
    )
    print()
    print(body)
    if args.write:
        write_section("nmdeploy build: the built-in example", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

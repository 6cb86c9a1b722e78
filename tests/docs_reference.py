"""The generated parts of ``docs/``: the CLI reference (the real ``--help``) and the recipe reference
(the config classes' fields, their defaults and help texts).

``python -m tests.docs_reference`` rewrites them; ``tests/test_docs.py`` fails when either is stale.
The errors table has its own generator, ``python -m tests.cli.error_cases``.
"""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from nmdeploy.cli import cli
from nmdeploy.pipeline.recipe import reference_rows

DOCS = Path(__file__).resolve().parents[1] / "docs"
CLI_DOC = DOCS / "cli.md"
RECIPE_DOC = DOCS / "recipe.md"
COMMANDS = (
    [],
    ["build"],
    ["finetune"],
    ["export"],
    ["verify"],
    ["calibrate"],
    ["quantize"],
    ["eval"],
    ["engine"],
    ["bench"],
    ["triton"],
)
CLI_MARKERS = ("<!-- cli:start -->", "<!-- cli:end -->")
RECIPE_MARKERS = ("<!-- recipe:start -->", "<!-- recipe:end -->")


def help_block(args: list[str]) -> str:
    """One command's ``--help`` as docs/cli.md shows it (100 columns wide)."""
    text = CliRunner().invoke(cli, [*args, "--help"], prog_name="nmdeploy", terminal_width=100).output
    name = " ".join(["nmdeploy", *args])
    return f"<!-- help: {name} -->\n```text\n{text.rstrip()}\n```"


def cli_reference() -> str:
    return "\n\n".join(f"## `{' '.join(['nmdeploy', *args])}`\n\n{help_block(list(args))}" for args in COMMANDS)


def recipe_reference() -> str:
    lines = ["| key | default | type | meaning |", "|---|---|---|---|"]
    for key, default, kind, meaning in reference_rows():
        lines.append(f"| `{key}` | `{default}` | {kind} | {meaning.replace('|', chr(92) + '|')} |")
    return "\n".join(lines)


def between(text: str, markers: tuple[str, str]) -> str:
    """What ``text`` holds between the two markers (without them)."""
    return text.split(markers[0], 1)[1].split(markers[1], 1)[0].strip("\n")


def replace_between(text: str, markers: tuple[str, str], body: str) -> str:
    head, rest = text.split(markers[0], 1)
    tail = rest.split(markers[1], 1)[1]
    return f"{head}{markers[0]}\n{body}\n{markers[1]}{tail}"


def main() -> None:
    for path, markers, body in (
        (CLI_DOC, CLI_MARKERS, cli_reference()),
        (RECIPE_DOC, RECIPE_MARKERS, recipe_reference()),
    ):
        path.write_text(replace_between(path.read_text(), markers, body))
        print(f"wrote {path}")


if __name__ == "__main__":
    main()

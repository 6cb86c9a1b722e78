"""The documentation is current and whole: generated parts match the code, links and citations resolve."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests import docs_reference as ref

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


@pytest.mark.parametrize("args", ref.COMMANDS, ids=lambda a: " ".join(["nmdeploy", *a]))
def test_the_cli_reference_is_the_real_help(args):
    """docs/cli.md holds every command's --help as it prints (python -m tests.docs_reference rewrites it)."""
    assert ref.help_block(list(args)) in ref.CLI_DOC.read_text()


def test_the_generated_references_are_current():
    assert ref.between(ref.CLI_DOC.read_text(), ref.CLI_MARKERS) == ref.cli_reference()
    assert ref.between(ref.RECIPE_DOC.read_text(), ref.RECIPE_MARKERS) == ref.recipe_reference()


def test_the_readme_stays_short_and_user_facing():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 300
    for page in PAGES:
        assert "../shared" not in page.read_text(), page  # the developers' notes are not part of the project


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"\s", "-", re.sub(r"[^\w\s-]", "", text))


def _anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return {_slug(m.group(1)) for m in re.finditer(r"^#+\s+(.+)$", text, re.M)}


def test_every_relative_link_resolves_to_a_file_and_a_heading():
    broken = []
    for page in PAGES:
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+://", target):
                continue
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            if not file.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and file.suffix == ".md" and anchor not in _anchors(file):
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, broken


def test_design_citations_in_the_code_name_sections_that_exist():
    """Code cites docs/design/NAME.md §N or §N.M; each must be a numbered heading of that page."""
    sections = {}
    for page in (ROOT / "docs" / "design").glob("*.md"):
        sections[page.name] = set(re.findall(r"^#+\s+(\d+(?:\.\d+)?)\.?\s", page.read_text(), re.M))
    missing, cited = [], 0
    for file in [*ROOT.glob("nmdeploy/**/*.py"), *ROOT.glob("tests/**/*.py"), *ROOT.glob("benchmarks/*.py")]:
        text = file.read_text()
        for name, refs in re.findall(r"docs/design/(\w+\.md) ((?:§[\d.]+(?:[-–,]\s?§?[\d.]+)*))", text):
            for number in re.findall(r"(\d+(?:\.\d+)?)", refs):
                cited += 1
                if number not in sections.get(name, ()):
                    missing.append(f"{file.relative_to(ROOT)}: {name} §{number}")
    assert cited > 20 and not missing, missing

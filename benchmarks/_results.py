"""Write a benchmark's section of benchmarks/RESULTS.md, replacing that section's old figures."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")
_HEADER = "# Benchmark results\n\nEach section is rewritten by the script named in it; numbers are from the machine stated.\n"


def write_section(name: str, body: str, path: Path = RESULTS) -> None:
    """Replace (or append) the ``## name`` section of ``path``; written atomically."""
    text = path.read_text() if path.exists() else _HEADER
    section = f"## {name}\n\n{body.strip()}\n"
    pattern = re.compile(rf"^## {re.escape(name)}\n.*?(?=^## |\Z)", re.S | re.M)
    text = pattern.sub(lambda _: section + "\n", text) if pattern.search(text) else text.rstrip() + "\n\n" + section
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".results-", suffix=".md")
    with os.fdopen(fd, "w") as fh:
        fh.write(text.rstrip() + "\n")
    os.replace(tmp, path)

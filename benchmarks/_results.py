"""Write a benchmark's section of benchmarks/RESULTS.md, replacing that section's old figures."""

from __future__ import annotations

import datetime
import os
import platform
import re
import tempfile
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")
_HEADER = (
    "# Benchmark results\n\nEach section is rewritten by the script named in it; numbers are from the machine stated.\n"
)


def machine() -> str:
    """``2026-11-30, 2 CPUs (AMD EPYC 7B13), Linux x86_64``: when and where a figure was measured."""
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), cpu)
    except OSError:
        pass
    return f"{datetime.date.today()}, {os.cpu_count()} CPUs ({cpu}), {platform.system()} {platform.machine()}"


def write_section(name: str, body: str, path: Path = RESULTS) -> None:
    """Replace (or append) the ``## name`` section of ``path``, ending with when and where; written atomically."""
    text = path.read_text() if path.exists() else _HEADER
    section = f"## {name}\n\n{body.strip()}\n\nRecorded: {machine()}.\n"
    pattern = re.compile(rf"^## {re.escape(name)}\n.*?(?=^## |\Z)", re.S | re.M)
    text = pattern.sub(lambda _: section + "\n", text) if pattern.search(text) else text.rstrip() + "\n\n" + section
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".results-", suffix=".md")
    with os.fdopen(fd, "w") as fh:
        fh.write(text.rstrip() + "\n")
    os.replace(tmp, path)

"""Write a benchmark's section of benchmarks/RESULTS.md, replacing that section's old figures."""

from __future__ import annotations

import datetime
import os
import platform
import re
import statistics
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


def mean_cell(values: list[float], scale: float = 1.0, count: bool = False) -> str:
    """``"92.29 ± 0.12"`` (with ``count``: ``"... (3)"``): mean and sample spread of ``values`` times
    ``scale`` (100 turns fractions into percent); ``–`` for none, a spread of 0 for one."""
    if not values:
        return "–"
    scaled = [scale * v for v in values]
    spread = statistics.stdev(scaled) if len(scaled) > 1 else 0.0
    return f"{statistics.fmean(scaled):.2f} ± {spread:.2f}" + (f" ({len(scaled)})" if count else "")

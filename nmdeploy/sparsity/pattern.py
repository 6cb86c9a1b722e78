"""N:M patterns: parsing, validation and whether a pattern runs on 2:4 sparse tensor cores."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from nmdeploy.errors import PatternError

__all__ = ["MAX_M", "Pattern", "parse_pattern", "check_nm", "implies_2_4"]

MAX_M = 32
_PATTERN_RE = re.compile(r"^\s*(\d+)\s*:\s*(\d+)\s*$")


@dataclass(frozen=True)
class Pattern:
    """At most ``n`` non-zeros in every group of ``m`` consecutive weights along the input axis."""

    n: int
    m: int

    def __post_init__(self) -> None:
        check_nm(self.n, self.m)

    def __str__(self) -> str:
        return f"{self.n}:{self.m}"

    @property
    def sparsity(self) -> float:
        """Fraction of weights that are zero once the pattern is applied."""
        return 1.0 - self.n / self.m

    @property
    def hardware_2_4(self) -> bool:
        """True when every N:M-sparse tensor is also 2:4-sparse (see :func:`implies_2_4`)."""
        return implies_2_4(self.n, self.m)


def check_nm(n: object, m: object) -> None:
    """Raise :class:`PatternError` unless ``0 < n < m <= 32`` with both integers."""
    if isinstance(n, bool) or isinstance(m, bool) or not isinstance(n, int) or not isinstance(m, int):
        raise PatternError(f"pattern n={n!r}, m={m!r} is invalid: n and m must be integers, e.g. n=2, m=4")
    if not 0 < n < m <= MAX_M:
        raise PatternError(f'pattern "{n}:{m}" is invalid: need 0 < n < m <= {MAX_M}, e.g. "2:4"')


def parse_pattern(pattern: str | tuple[int, int] | Pattern) -> Pattern:
    """Turn ``"2:4"``, ``(2, 4)`` or a :class:`Pattern` into a validated :class:`Pattern`."""
    if isinstance(pattern, Pattern):
        return pattern
    if isinstance(pattern, tuple) and len(pattern) == 2:
        return Pattern(*pattern)
    if isinstance(pattern, str):
        match = _PATTERN_RE.match(pattern)
        if match is None:
            raise PatternError(
                f'pattern {pattern!r} is invalid: write it as "N:M" with integers 0 < N < M <= {MAX_M}, e.g. "2:4"'
            )
        return Pattern(int(match.group(1)), int(match.group(2)))
    raise PatternError(f'pattern {pattern!r} is invalid: pass a string such as "2:4" or a tuple (2, 4)')


def implies_2_4(n: int, m: int) -> bool:
    """Whether every aligned run of 4 weights holds at most 2 non-zeros under any N:M mask.

    That is what sparse tensor cores need. For each aligned window of 4 along the group axis,
    the worst case puts ``min(n, overlap)`` non-zeros in each N:M group the window overlaps;
    windows repeat with period ``lcm(4, m)``. So 1:4, 2:8, 1:16, 2:16 and 1:2 qualify, while
    3:4, 4:8 and 3:8 do not.
    """
    check_nm(n, m)
    period = math.lcm(4, m)
    for start in range(0, period, 4):
        worst = 0
        for group_start in range((start // m) * m, start + 4, m):
            overlap = min(start + 4, group_start + m) - max(start, group_start)
            worst += min(n, overlap)
        if worst > 2:
            return False
    return True

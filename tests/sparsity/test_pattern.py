"""Pattern parsing and the 2:4-compatibility rule."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nmdeploy.errors import PatternError
from nmdeploy.sparsity import Pattern, implies_2_4, parse_pattern


@pytest.mark.parametrize("text, expected", [("2:4", (2, 4)), (" 1 : 16 ", (1, 16)), ((4, 8), (4, 8))])
def test_parse_pattern(text, expected):
    p = parse_pattern(text)
    assert (p.n, p.m) == expected and str(p) == f"{expected[0]}:{expected[1]}"


@pytest.mark.parametrize(
    "text, message",
    [
        ("3:2", 'pattern "3:2" is invalid: need 0 < n < m <= 32, e.g. "2:4"'),
        ("0:4", 'pattern "0:4" is invalid: need 0 < n < m <= 32, e.g. "2:4"'),
        ("4:4", 'pattern "4:4" is invalid: need 0 < n < m <= 32, e.g. "2:4"'),
        ("2:0", 'pattern "2:0" is invalid: need 0 < n < m <= 32, e.g. "2:4"'),
        ("2:64", 'pattern "2:64" is invalid: need 0 < n < m <= 32, e.g. "2:4"'),
        ("a:b", """pattern 'a:b' is invalid: write it as "N:M" with integers 0 < N < M <= 32, e.g. "2:4\""""),
        ("2-4", """pattern '2-4' is invalid: write it as "N:M" with integers 0 < N < M <= 32, e.g. "2:4\""""),
        (24, """pattern 24 is invalid: pass a string such as "2:4" or a tuple (2, 4)"""),
    ],
)
def test_bad_patterns_name_the_value_and_the_rule(text, message):
    with pytest.raises(PatternError) as info:
        parse_pattern(text)
    assert str(info.value) == message
    assert "\n" not in str(info.value)


def test_pattern_sparsity():
    assert Pattern(2, 4).sparsity == 0.5 and Pattern(1, 16).sparsity == 0.9375


@pytest.mark.parametrize(
    "n, m, expected",
    [
        (2, 4, True),
        (1, 4, True),
        (2, 8, True),
        (1, 16, True),
        (2, 16, True),
        (1, 2, True),
        (3, 4, False),
        (4, 8, False),
        (3, 8, False),
        (2, 6, False),
        (1, 3, True),
    ],
)
def test_implies_2_4_table(n, m, expected):
    assert implies_2_4(n, m) is expected


def _worst_case_window(n: int, m: int) -> int:
    """Brute force: most non-zeros any N:M mask can put into an aligned window of 4."""
    period = m * 4
    worst = 0
    per_group = list(itertools.combinations(range(m), n))
    for start in range(0, period, 4):
        window = set(range(start, start + 4))
        total = 0
        for g0 in range(0, period, m):
            total += max(len(window & {g0 + j for j in choice}) for choice in per_group)
        worst = max(worst, total)
    return worst


@given(st.integers(2, 10).flatmap(lambda m: st.tuples(st.integers(1, m - 1), st.just(m))))
def test_implies_2_4_matches_brute_force(nm):
    n, m = nm
    assert implies_2_4(n, m) is (_worst_case_window(n, m) <= 2)

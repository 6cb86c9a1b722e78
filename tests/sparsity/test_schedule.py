"""MaxQ's preserve-rate schedules at their start, middle and end."""

from __future__ import annotations

import math

import pytest

from nmdeploy.errors import ConfigError
from nmdeploy.sparsity import preserve_rate


@pytest.mark.parametrize(
    "schedule, middle",
    [
        ("linear", 0.5),
        ("cubic", 0.125),
        ("cos", math.cos(math.pi / 4)),
        ("exp", 1 - (1 - math.exp(-0.05 * 15)) / (1 - math.exp(-0.05 * 29))),
    ],
)
def test_schedule_start_middle_end(schedule, middle):
    assert preserve_rate(schedule, 0, 0, 30) == 1.0
    assert preserve_rate(schedule, 15, 0, 30) == pytest.approx(middle, abs=1e-12)
    assert preserve_rate(schedule, 30, 0, 30) == 0.0
    assert preserve_rate(schedule, 100, 0, 30) == 0.0


def test_schedules_decrease_and_stay_in_range():
    for schedule in ("linear", "cubic", "cos", "exp"):
        values = [preserve_rate(schedule, e, 10, 40) for e in range(0, 50)]
        assert values[:11] == [1.0] * 11 and values[40:] == [0.0] * 10
        assert all(0 <= v <= 1 for v in values)
        assert all(a >= b for a, b in zip(values, values[1:]))


def test_exp_reaches_zero_one_epoch_before_the_end_like_the_reference():
    assert preserve_rate("exp", 29, 0, 30) == pytest.approx(0.0, abs=1e-12)
    assert preserve_rate("exp", 5, 5, 6) == 1.0  # a one-epoch span does not divide 0 by 0


def test_equal_start_and_end_switch_at_that_epoch():
    assert preserve_rate("linear", 0, 0, 0) == 0.0
    assert [preserve_rate("cos", e, 3, 3) for e in (2, 3, 4)] == [1.0, 0.0, 0.0]


def test_unknown_schedule():
    with pytest.raises(ConfigError, match=r"unknown schedule 'step'; choose one of: linear, cubic, cos, exp"):
        preserve_rate("step", 0, 0, 1)

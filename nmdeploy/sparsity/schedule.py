"""MaxQ's incremental schedule: the share of blocks kept fully dense at each epoch.

``preserve_rate(schedule, epoch, start, end)`` is p(e) of docs/design/methods.md §3.3: 1 before
``start``, 0 from ``end`` on, and in between (x = (e - start) / (end - start)):
``linear`` 1 - x, ``cubic`` (1 - x)^3, ``cos`` cos(pi/2 x), ``exp`` the reference's
normalised exponential with b = 0.05. ``start == end`` switches from 1 to 0 at that epoch,
so ``start == end == 0`` is fully N:M from the first step.
"""

from __future__ import annotations

import math

from nmdeploy.errors import ConfigError

__all__ = ["SCHEDULES", "preserve_rate", "check_epochs"]

SCHEDULES = ("linear", "cubic", "cos", "exp")
_EXP_RATE = 0.05  # b in the reference code's exp schedule


def check_epochs(start_epoch: object, end_epoch: object) -> None:
    """Raise :class:`ConfigError` unless ``0 <= start_epoch <= end_epoch`` (integers)."""
    for name, value in (("start_epoch", start_epoch), ("end_epoch", end_epoch)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"{name}={value!r} is invalid: need an integer >= 0")
    if end_epoch < start_epoch:  # type: ignore[operator]
        raise ConfigError(f"end_epoch={end_epoch} is before start_epoch={start_epoch}: need start_epoch <= end_epoch")


def check_schedule(schedule: object) -> str:
    if schedule not in SCHEDULES:
        raise ConfigError(f"unknown schedule {schedule!r}; choose one of: {', '.join(SCHEDULES)}")
    return schedule  # type: ignore[return-value]


def preserve_rate(schedule: str, epoch: int, start_epoch: int, end_epoch: int) -> float:
    """Fraction p in [0, 1] of N:M blocks that stay fully dense during ``epoch``."""
    check_schedule(schedule)
    if epoch < start_epoch:
        return 1.0
    if epoch >= end_epoch:
        return 0.0
    span = end_epoch - start_epoch
    x = (epoch - start_epoch) / span
    if schedule == "linear":
        return 1.0 - x
    if schedule == "cubic":
        return (1.0 - x) ** 3
    if schedule == "cos":
        return math.cos(math.pi / 2 * x)
    # exp: sch[k] = 1 - exp(-b k) for k = 0..span-1, p = 1 - sch[e - start] / sch[-1].
    # With span == 1 the reference divides 0 by 0; the only epoch in range is start, p = 1.
    if span == 1:
        return 1.0
    return 1.0 - (1.0 - math.exp(-_EXP_RATE * (epoch - start_epoch))) / (1.0 - math.exp(-_EXP_RATE * (span - 1)))

"""Small building blocks for detectors: a condition that must hold for a window of records, and a
run's own early baseline of a value. Built-in and third-party detectors share them."""
from __future__ import annotations

import math
import statistics
from typing import Any


class Sustained:
    """True once a condition has held for `window` consecutive records; then quiet until the
    condition lapses, so a lasting problem is reported once per episode, not at every record."""

    def __init__(self, window: int) -> None:
        self.window = window
        self.streak = 0
        self.fired = False
        self.start_step: int | None = None

    def update(self, condition: bool, step: int) -> bool:
        if not condition:
            self.streak, self.fired, self.start_step = 0, False, None
            return False
        if self.streak == 0:
            self.start_step = step
        self.streak += 1
        if self.streak >= self.window and not self.fired:
            self.fired = True
            return True
        return False


class Baseline:
    """The median of a value over a run's early records: records `skip` .. `skip + count - 1`
    that carry the value. None until those records have been seen."""

    def __init__(self, skip: int, count: int) -> None:
        self.skip, self.count = skip, count
        self.seen: list[float] = []
        self.value: float | None = None

    def update(self, value: Any) -> float | None:
        if self.value is None and finite(value):
            self.seen.append(float(value))
            early = self.seen[self.skip:]
            if len(early) >= self.count:
                self.value = statistics.median(early[: self.count])
        return self.value


def finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def rounded(value: Any, digits: int = 4) -> Any:
    """Evidence numbers with `digits` significant digits (the record keeps full precision)."""
    if not finite(value) or value == 0:
        return value
    return float(f"{value:.{digits}g}")

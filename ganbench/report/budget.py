"""The expected best value of n trials (Dodge et al. 2019, "Show Your Work": expected validation
performance), from the N trial values a search observed, and whether a ranking changes with n.

With replacement (Dodge et al.'s estimator): on the values sorted from worst to best, v_(1..N),
    E[best of n] = sum_i v_(i) [(i/N)^n - ((i-1)/N)^n],
since the best of n draws is v_(i) with probability (i/N)^n - ((i-1)/N)^n. The same weights give
E[best^2], and so the standard deviation the band shows. Without replacement (n <= N):
    E[best of n] = sum_i v_(i) C(i-1, n-1) / C(N, n).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def _worst_first(values: list[float], direction: str) -> np.ndarray:
    if direction not in ("min", "max"):
        raise ValueError(f"direction {direction!r}: expected 'min' or 'max'")
    ordered = np.sort(np.asarray(values, dtype=float))
    return ordered[::-1] if direction == "min" else ordered


def expected_best(values: list[float], n: int, direction: str) -> tuple[float, float]:
    """(mean, standard deviation) of the best of `n` trials drawn with replacement from `values`."""
    if not values or n < 1:
        raise ValueError("expected_best needs at least one value and n >= 1")
    v = _worst_first(values, direction)
    big_n = len(v)
    i = np.arange(1, big_n + 1)
    weights = (i / big_n) ** n - ((i - 1) / big_n) ** n
    mean = float(weights @ v)
    second = float(weights @ (v * v))
    return mean, math.sqrt(max(second - mean * mean, 0.0))


def expected_best_without_replacement(values: list[float], n: int, direction: str) -> float:
    """The mean best of `n` distinct trials out of `values` (n <= N)."""
    v = _worst_first(values, direction)
    big_n = len(v)
    if not 1 <= n <= big_n:
        raise ValueError(f"n = {n}: expected 1 <= n <= {big_n}")
    total = math.comb(big_n, n)
    return float(sum(v[i - 1] * math.comb(i - 1, n - 1) for i in range(n, big_n + 1)) / total)


@dataclass(frozen=True)
class Point:
    n: int
    mean: float
    std: float


def curve(values: list[float], direction: str, up_to: int | None = None) -> list[Point]:
    """Expected best for n = 1 .. up_to (default: the number of values)."""
    return [Point(n, *expected_best(values, n, direction)) for n in range(1, (up_to or len(values)) + 1)]


def budgets(largest: int) -> list[int]:
    """The budgets a verdict names: 1, 2, 5, 10, 20, 50, ... up to `largest`, and `largest` itself."""
    shown = [b for k in range(0, 7) for b in (10 ** k, 2 * 10 ** k, 5 * 10 ** k) if b < largest]
    return [*shown, largest] if largest >= 1 else []


def order_at(curves: dict[str, list[Point]], n: int, direction: str) -> list[str]:
    """Configurations best first by their expected best of `n` trials (ties keep suite order)."""
    names = [c for c in curves if len(curves[c]) >= n]
    sign = 1.0 if direction == "min" else -1.0
    return sorted(names, key=lambda c: sign * curves[c][n - 1].mean)


def ranking_changes(curves: dict[str, list[Point]], direction: str) -> tuple[bool, dict[int, list[str]]]:
    """Whether the order of the configurations differs between any two budgets up to the smallest
    number of values any of them has, and the order at each budget named."""
    if len(curves) < 2:
        return False, {}
    largest = min(len(points) for points in curves.values())
    orders = {n: order_at(curves, n, direction) for n in budgets(largest)}
    return len({tuple(o) for o in orders.values()}) > 1, orders

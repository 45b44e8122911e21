"""Statistics over seeds: mean, sample std, a 95% t-interval, and Welch's t-test (scipy)."""
from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
ALPHA = 0.05  # significance level of the comparison with the baseline (two-sided, uncorrected)
TEST_NAME = "Welch's t-test, two-sided"


@dataclass(frozen=True)
class Summary:
    """A metric over seeds. std and the interval need two values; they are None below that."""

    n: int
    mean: float | None
    std: float | None  # sample standard deviation (ddof = 1)
    ci_low: float | None  # 95% confidence interval of the mean, Student's t with n - 1 degrees of freedom
    ci_high: float | None


def finite(values: Iterable[float | None]) -> np.ndarray:
    array = np.array([v for v in values if v is not None], dtype=float)
    return array[np.isfinite(array)]


def summarize(values: Iterable[float | None]) -> Summary:
    x = finite(values)
    n = len(x)
    if n == 0:
        return Summary(0, None, None, None, None)
    mean = float(x.mean())
    if n == 1:
        return Summary(1, mean, None, None, None)
    std = float(x.std(ddof=1))
    half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1)) * std / math.sqrt(n)
    return Summary(n, mean, std, mean - half, mean + half)


@dataclass(frozen=True)
class Comparison:
    """Welch's t-test of a configuration's values against the baseline's."""

    p: float | None  # None when the test cannot be run; `why` says why
    t: float | None
    diff: float | None  # mean - baseline mean
    why: str | None = None

    def significant(self, alpha: float = ALPHA) -> bool:
        return self.p is not None and self.p < alpha


def welch(values: Iterable[float | None], baseline: Iterable[float | None]) -> Comparison:
    a, b = finite(values), finite(baseline)
    diff = float(a.mean() - b.mean()) if len(a) and len(b) else None
    if len(a) < 2 or len(b) < 2:
        few = min(len(a), len(b))
        return Comparison(None, None, diff, f"n/a ({few} seed{'s' if few != 1 else ''})")
    if a.std(ddof=1) == 0 and b.std(ddof=1) == 0:
        return Comparison(None, None, diff, "n/a (no variance)")
    with warnings.catch_warnings():
        # One side constant (8 of 8 modes in every seed) is a valid Welch test, on the other side's
        # variance alone; scipy still warns of "catastrophic cancellation" in that side's moments.
        warnings.filterwarnings("ignore", message="Precision loss occurred", category=RuntimeWarning)
        result = stats.ttest_ind(a, b, equal_var=False)
    return Comparison(float(result.pvalue), float(result.statistic), diff)


def decimals(value: float, digits: int) -> int:
    """Decimals that show `digits` significant digits of `value` (0 for large values)."""
    if value == 0 or not math.isfinite(value):
        return 0
    return max(0, digits - 1 - math.floor(math.log10(abs(value))))


def fmt(value: float | None, digits: int = 3, places: int | None = None) -> str:
    """A number for a table: `digits` significant digits (or `places` decimals), at least the units."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if value == 0:
        return "0"
    if places is None and abs(value) < 1e-3:
        return f"{value:.{digits - 1}e}"
    return f"{value:.{decimals(value, digits) if places is None else places}f}"


def fmt_p(p: float | None) -> str:
    """'p = 0.0123', 'p = 0.41' or 'p < 0.001'."""
    if p is None:
        return "p n/a"
    # Three digits near α, so a p just under 0.05 never prints as 0.05.
    return "p < 0.001" if p < 0.001 else f"p = {p:.3g}" if p < 0.1 else f"p = {p:.2f}"


def mean_std(s: Summary, digits: int = 3) -> str:
    """'12.3 ± 0.8', or the single value, or '–'."""
    if s.mean is None:
        return "–"
    if s.std is None:
        return fmt(s.mean, digits)
    # The mean to the precision of its spread: 1321.12 ± 0.25, not 1321 ± 0.25.
    places = min(6, max(decimals(s.mean, digits), decimals(s.std, 2)))
    return f"{fmt(s.mean, digits, places)} ± {fmt(s.std, 2)}"


def interval(s: Summary, digits: int = 3) -> str:
    """'[11.2, 13.4]', to the precision `mean_std` gives the mean."""
    if s.ci_low is None or s.ci_high is None or s.mean is None or s.std is None:
        return "–"
    places = min(6, max(decimals(s.mean, digits), decimals(s.std, 2)))
    return f"[{fmt(s.ci_low, digits, places)}, {fmt(s.ci_high, digits, places)}]"

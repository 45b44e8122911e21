"""The report's statistics against numbers computed another way (numpy, and Welch's formulas by hand)."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from ganbench.report.stats import fmt, fmt_p, interval, mean_std, summarize, welch


def test_summary_matches_numpy_and_the_t_interval():
    values = [12.1, 13.4, 11.8, 12.9]
    s = summarize(values)
    x = np.array(values)
    assert s.n == 4
    assert s.mean == pytest.approx(x.mean())
    assert s.std == pytest.approx(math.sqrt(((x - x.mean()) ** 2).sum() / 3))
    low, high = sps.t.interval(0.95, df=3, loc=x.mean(), scale=x.std(ddof=1) / 2)
    assert (s.ci_low, s.ci_high) == pytest.approx((low, high))
    # 3.182 is the tabled two-sided 95% t quantile for 3 degrees of freedom.
    assert s.ci_high - s.mean == pytest.approx(3.182 * x.std(ddof=1) / 2, rel=1e-3)


def test_summary_of_one_value_has_no_spread_and_none_and_nan_are_dropped():
    assert summarize([5.0]) == summarize([5.0, None, float("nan")])
    one = summarize([5.0])
    assert (one.n, one.mean, one.std, one.ci_low) == (1, 5.0, None, None)
    assert summarize([]).mean is None
    assert mean_std(one) == "5.00" and interval(one) == "–"


def welch_by_hand(a, b):
    a, b = np.asarray(a, float), np.asarray(b, float)
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    t = (a.mean() - b.mean()) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))  # Welch–Satterthwaite
    return t, 2 * sps.t.sf(abs(t), df)


@pytest.mark.parametrize("a, b", [([10.0, 11.0, 12.5], [14.0, 15.5, 13.9]),
                                  ([1.0, 1.1], [1.0, 3.0, 2.0, 5.0]),
                                  ([3.3, 3.1, 3.6, 2.9], [3.2, 3.0, 3.7])])
def test_welch_matches_the_formula(a, b):
    t, p = welch_by_hand(a, b)
    c = welch(a, b)
    assert c.t == pytest.approx(t) and c.p == pytest.approx(p)
    assert c.diff == pytest.approx(np.mean(a) - np.mean(b))
    assert c.significant() == (p < 0.05)


def test_welch_needs_two_seeds_each_and_some_variance():
    assert welch([1.0], [1.0, 2.0]).why == "n/a (1 seed)"
    assert welch([1.0, 2.0], []).why == "n/a (0 seeds)"
    assert welch([1.0, 1.0], [2.0, 2.0]).why == "n/a (no variance)"
    assert welch([1.0], [2.0, 3.0]).p is None and not welch([1.0], [2.0, 3.0]).significant()


def test_formatting():
    assert mean_std(summarize([1320.5, 1320.9])) == "1320.70 ± 0.28"
    assert mean_std(summarize([12.0, 14.0])) == "13.0 ± 1.4"
    assert fmt(0.00012) == "1.20e-04" and fmt(None) == "–" and fmt(float("nan")) == "–"
    assert fmt_p(0.0004) == "p < 0.001" and fmt_p(0.0123) == "p = 0.0123" and fmt_p(0.2) == "p = 0.20"
    assert fmt_p(0.0496) == "p = 0.0496"  # never "0.05" for a significant p


def test_welch_against_a_constant_side_is_the_other_sides_t_test_without_a_warning():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # scipy's "catastrophic cancellation" warning would fail here
        result = welch([7.0, 7.0, 6.0], [8.0, 8.0, 8.0])
    a = np.array([7.0, 7.0, 6.0])
    t = (a.mean() - 8.0) / (a.std(ddof=1) / np.sqrt(3))  # Welch's t with the baseline's variance 0: df = 2
    assert result.t == pytest.approx(t) and result.p == pytest.approx(2 * sps.t.sf(abs(t), df=2))

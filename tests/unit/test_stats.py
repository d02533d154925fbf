"""The paired-interval arithmetic, checked against scipy's paired t-test."""

from __future__ import annotations

import math

import pytest
from scipy import stats as sps

from tinydnabert.eval.stats import fmt_interval, paired_interval


@pytest.mark.parametrize("a,b", [
    ([0.41, 0.40, 0.42], [0.36, 0.36, 0.36]),           # pretrained ahead
    ([0.41, 0.39, 0.44], [0.36, 0.37, 0.35]),           # +0.05 but t(2) = 4.30 makes it span 0
    ([0.30, 0.35, 0.28, 0.33], [0.31, 0.33, 0.30, 0.32]),  # spans 0
    ([0.10, 0.12, 0.11], [0.20, 0.25, 0.22]),           # scratch ahead
])
def test_interval_equals_scipy_ttest_rel(a, b):
    p = paired_interval(a, b)
    ci = sps.ttest_rel(a, b).confidence_interval(0.95)
    assert math.isclose(p["low"], ci.low, rel_tol=1e-9) and math.isclose(p["high"], ci.high, rel_tol=1e-9)
    assert math.isclose(p["mean_diff"], sum(a) / len(a) - sum(b) / len(b), rel_tol=1e-12)
    expect = "pretrained ahead" if ci.low > 0 else "scratch ahead" if ci.high < 0 else "no detectable difference"
    assert p["verdict"] == expect


def test_verdicts_and_edge_cases():
    assert paired_interval([0.41, 0.40, 0.42], [0.36, 0.36, 0.36])["verdict"] == "pretrained ahead"
    assert paired_interval([0.41, 0.39, 0.44], [0.36, 0.37, 0.35])["verdict"] == "no detectable difference"
    assert paired_interval([0.10, 0.12, 0.11], [0.20, 0.25, 0.22])["verdict"] == "scratch ahead"
    one = paired_interval([0.5], [0.4])
    assert one["n"] == 1 and math.isnan(one["low"]) and "one seed" in one["verdict"]
    assert fmt_interval(one) == "+0.100 (1 seed)"
    assert fmt_interval(paired_interval([0.3, 0.4], [0.3, 0.4])) == "+0.000 [+0.000, +0.000]"
    with pytest.raises(ValueError, match="pair them by seed"):
        paired_interval([0.1, 0.2], [0.1])

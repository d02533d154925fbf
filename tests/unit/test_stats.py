"""The paired-interval arithmetic, checked against scipy's paired t-test; the arms are paired by id."""

from __future__ import annotations

import math

import pytest
from scipy import stats as sps

from tinydnabert.errors import InputError
from tinydnabert.eval.stats import fmt_interval, paired_interval


def ids(values, name="seed"):
    """{'seed 0': v0, 'seed 1': v1, ...}: one arm's runs by id."""
    return {f"{name} {i}": v for i, v in enumerate(values)}


@pytest.mark.parametrize("a,b", [
    ([0.41, 0.40, 0.42], [0.36, 0.36, 0.36]),           # pretrained ahead
    ([0.41, 0.39, 0.44], [0.36, 0.37, 0.35]),           # +0.05 but t(2) = 4.30 makes it span 0
    ([0.30, 0.35, 0.28, 0.33], [0.31, 0.33, 0.30, 0.32]),  # spans 0
    ([0.10, 0.12, 0.11], [0.20, 0.25, 0.22]),           # scratch ahead
])
def test_interval_equals_scipy_ttest_rel(a, b):
    p = paired_interval(ids(a), ids(b))
    ci = sps.ttest_rel(a, b).confidence_interval(0.95)
    assert math.isclose(p["low"], ci.low, rel_tol=1e-9) and math.isclose(p["high"], ci.high, rel_tol=1e-9)
    assert math.isclose(p["mean_diff"], sum(a) / len(a) - sum(b) / len(b), rel_tol=1e-12)
    expect = "pretrained ahead" if ci.low > 0 else "scratch ahead" if ci.high < 0 else "no detectable difference"
    assert p["verdict"] == expect


def test_verdicts_and_edge_cases():
    assert paired_interval(ids([0.41, 0.40, 0.42]), ids([0.36, 0.36, 0.36]))["verdict"] == "pretrained ahead"
    assert paired_interval(ids([0.41, 0.39, 0.44]), ids([0.36, 0.37, 0.35]))["verdict"] == "no detectable difference"
    assert paired_interval(ids([0.10, 0.12, 0.11]), ids([0.20, 0.25, 0.22]))["verdict"] == "scratch ahead"
    one = paired_interval({"seed 0": 0.5}, {"seed 0": 0.4})
    assert one["n"] == 1 and math.isnan(one["low"]) and "one seed" in one["verdict"]
    assert fmt_interval(one) == "+0.100 (1 seed)"
    assert fmt_interval(paired_interval(ids([0.3, 0.4]), ids([0.3, 0.4]))) == "+0.000 [+0.000, +0.000]"


def test_pairs_by_id_not_position():
    """Runs listed in another order pair with the same run of the other arm (bit-identical result); a run
    one arm lacks is an error naming it; a plain list (pairing by position) is refused."""
    a = {"seed 0": 0.41, "seed 1": 0.39, "seed 2": 0.44, "seed 10": 0.40}
    b = {"seed 0": 0.36, "seed 1": 0.37, "seed 2": 0.35, "seed 10": 0.30}
    p = paired_interval(a, b)
    shuffled = paired_interval(dict(reversed(list(a.items()))), {k: b[k] for k in ("seed 2", "seed 10", "seed 0",
                                                                                   "seed 1")})
    assert shuffled == p and p["ids"] == ["seed 0", "seed 1", "seed 2", "seed 10"]
    ci = sps.ttest_rel([a[k] for k in p["ids"]], [b[k] for k in p["ids"]]).confidence_interval(0.95)
    assert math.isclose(p["low"], ci.low, rel_tol=1e-9)
    # by position the two orders would pair seed 0 with seed 10 etc., and give another answer
    by_position = sps.ttest_rel(list(a.values()), [b[k] for k in ("seed 2", "seed 10", "seed 0", "seed 1")])
    assert not math.isclose(by_position.confidence_interval(0.95).low, p["low"])
    with pytest.raises(InputError, match=r"pretrained has \['seed 10'\] that scratch lacks, scratch has none"):
        paired_interval(a, {k: v for k, v in b.items() if k != "seed 10"}, names=("pretrained", "scratch"))
    with pytest.raises(InputError, match=r"second arm has \['fold 3'\]"):
        paired_interval({"fold 0": 0.1}, {"fold 0": 0.2, "fold 3": 0.3})
    with pytest.raises(TypeError, match="pairs by id"):
        paired_interval([0.1, 0.2], [0.1, 0.2])

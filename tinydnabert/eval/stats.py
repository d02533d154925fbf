"""Paired comparisons of two arms (pretrained vs scratch) that share seeds.

With seeds shared, seed s of both arms sees the same validation carve, the same head initialisation and
the same batches, so the per-seed difference removes what the seed does to both; its mean has a
Student-t interval with n - 1 degrees of freedom. An interval that spans 0 is "no detectable
difference": with 3 seeds and a seed spread of 0.03 MCC a real gain of 0.02 is not resolvable.
"""

from __future__ import annotations

import math
import statistics
from typing import Sequence


def paired_interval(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> dict[str, float | int | str]:
    """Mean of a[i] - b[i] with its two-sided `confidence` t-interval, and a verdict in words."""
    from scipy.stats import t

    if len(a) != len(b):
        raise ValueError(f"paired_interval: {len(a)} vs {len(b)} values; pair them by seed")
    diffs = [x - y for x, y in zip(a, b)]
    n = len(diffs)
    if n == 0:
        raise ValueError("paired_interval: no pairs")
    mean = statistics.fmean(diffs)
    if n < 2:
        return {"n": n, "mean_diff": mean, "sd_diff": float("nan"), "low": float("nan"), "high": float("nan"),
                "confidence": confidence, "verdict": "one seed: no interval (use --seeds 3 or more)"}
    sd = statistics.stdev(diffs)
    half = float(t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    low, high = mean - half, mean + half
    verdict = ("pretrained ahead" if low > 0 else "scratch ahead" if high < 0 else "no detectable difference")
    return {"n": n, "mean_diff": mean, "sd_diff": sd, "low": low, "high": high, "confidence": confidence,
            "verdict": verdict}


def fmt_interval(p: dict) -> str:
    """'+0.031 [+0.004, +0.058]' (or '+0.031 (1 seed)')."""
    if p["n"] < 2:
        return f"{p['mean_diff']:+.3f} (1 seed)"
    return f"{p['mean_diff']:+.3f} [{p['low']:+.3f}, {p['high']:+.3f}]"

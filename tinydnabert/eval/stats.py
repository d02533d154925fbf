"""Paired comparisons of two arms (pretrained vs scratch) that share seeds, or folds.

With seeds shared, seed s of both arms sees the same validation carve, the same head initialisation and
the same batches, so the per-seed difference removes what the seed does to both; its mean has a
Student-t interval with n - 1 degrees of freedom. Under --cv the same holds per fold: fold k of both arms
trains on the same rows, selects on the same held-out fold, from the same head and batches. An interval
that spans 0 is "no detectable difference": with 3 seeds and a seed spread of 0.03 MCC a real gain of 0.02
is not resolvable.

The two arms are paired by id ({seed or fold id: value}), never by position: a list of one arm's seeds in
another order, or a seed that only one arm ran, would otherwise pair unrelated runs without a word.
"""

from __future__ import annotations

import math
import re
import statistics
from typing import Hashable, Mapping

from tinydnabert.errors import InputError


def _id_order(key: Hashable) -> tuple:
    """'seed 2' before 'seed 10'; ints in numeric order: one canonical order, so the result does not depend
    on the order either arm listed its runs in (the float sums are then bit-identical)."""
    text = str(key)
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", text) if part)


def paired_interval(a: Mapping[Hashable, float], b: Mapping[Hashable, float], confidence: float = 0.95,
                    names: tuple[str, str] = ("first arm", "second arm")) -> dict[str, float | int | str | list]:
    """Mean of a[id] - b[id] over the ids both arms ran (seed or fold ids), with its two-sided `confidence`
    t-interval and a verdict in words. An id in one arm and not the other is an InputError naming both sets."""
    from scipy.stats import t

    if not isinstance(a, Mapping) or not isinstance(b, Mapping):
        raise TypeError("paired_interval pairs by id: pass {seed_or_fold_id: value} mappings, not sequences")
    only_a, only_b = sorted(set(a) - set(b), key=_id_order), sorted(set(b) - set(a), key=_id_order)
    if only_a or only_b:
        raise InputError(f"paired comparison: the arms ran different seeds/folds: {names[0]} has {only_a or 'none'} "
                         f"that {names[1]} lacks, {names[1]} has {only_b or 'none'} that {names[0]} lacks; rerun "
                         "both arms with the same --seed/--seeds (or --cv/--folds)")
    ids = sorted(a, key=_id_order)
    if not ids:
        raise InputError("paired comparison: no pairs (neither arm has a finished seed or fold)")
    diffs = [a[k] - b[k] for k in ids]
    n = len(diffs)
    mean = statistics.fmean(diffs)
    if n < 2:
        return {"n": n, "ids": ids, "mean_diff": mean, "sd_diff": float("nan"), "low": float("nan"),
                "high": float("nan"), "confidence": confidence,
                "verdict": "one seed: no interval (use --seeds 3 or more)"}
    sd = statistics.stdev(diffs)
    half = float(t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    low, high = mean - half, mean + half
    verdict = ("pretrained ahead" if low > 0 else "scratch ahead" if high < 0 else "no detectable difference")
    return {"n": n, "ids": ids, "mean_diff": mean, "sd_diff": sd, "low": low, "high": high,
            "confidence": confidence, "verdict": verdict}


def fmt_interval(p: dict) -> str:
    """'+0.031 [+0.004, +0.058]' (or '+0.031 (1 seed)')."""
    if p["n"] < 2:
        return f"{p['mean_diff']:+.3f} (1 seed)"
    return f"{p['mean_diff']:+.3f} [{p['low']:+.3f}, {p['high']:+.3f}]"

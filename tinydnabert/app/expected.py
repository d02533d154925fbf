"""Is my run healthy? A run's validation loss against the curve its recipe is expected to follow.

Each shipped recipe has a validation-loss-vs-tokens curve measured here (published/expected_curves.json, written
by benchmarks/expected_curves.py from runs of benchmarks/recipes.py and the quickstart on chr20). A run is matched
to the curve whose recipe it ran (model shape, vocabulary, row length, batch, LR, masking rate, schedule:
RECIPE_KEYS, read from the run's config.json and ds_config.json) and its last validation loss is compared with the
curve's at the same number of tokens (interpolated in log tokens):

    on the curve        within the curve's tolerance
    above / below       worse / better than the curve by more than the tolerance
    diverging           non-finite, or rising for the last 3 evaluations to above the best so far + tolerance

A curve of a recipe that differs only in the optimizer's clock or the shape (LR, batch, schedule, width) or in the
genome is only a hint: the verdict says "indicative only" and which settings differ. Against a curve whose loss is
on another scale (another architecture, vocabulary, row length or masking rate: LOSS_SCALE_KEYS) there is no
verdict and nothing is drawn, only the divergence check. The tolerance is the
curve's own evaluation-to-evaluation jitter (3 x the sd of successive differences over its second half), at
least 0.02 nats: the run-to-run spread of one recipe was not measured.

    tinydnabert plot RUN       # draws the curve on the loss panel and prints the verdict line
"""

from __future__ import annotations

import json
import math
from importlib import resources
from pathlib import Path
from typing import Any

CURVES = "expected_curves.json"
# What must agree for a curve to be the run's own: the shape, the data's tokenization, the optimizer's clock.
RECIPE_KEYS = ("arch", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size",
               "seq_len", "mlm_probability", "train_batch_size", "lr", "schedule", "warmup_steps", "total_steps")
# Settings that put the MLM loss on another scale: a curve that differs in one of them says nothing about the run.
LOSS_SCALE_KEYS = ("arch", "vocab_size", "seq_len", "mlm_probability")
MIN_TOLERANCE = 0.02


def load_curves(path: Path | None = None) -> list[dict[str, Any]]:
    """The shipped curves (or those of `path`); [] when the file is absent (plot then says no curve matches)."""
    f = path or resources.files("tinydnabert").joinpath("published", CURVES)
    if not f.is_file():
        return []
    return json.loads(f.read_text())["curves"]


def run_recipe(run: Path) -> dict[str, Any] | None:
    """RECIPE_KEYS of a run directory (its config.json and ds_config.json); None if they are not there."""
    try:
        conf = json.loads((run / "config.json").read_text())
        ds = json.loads((run / "ds_config.json").read_text())
    except (OSError, ValueError):
        return None
    model, data = conf.get("model", {}), conf.get("data", {})
    sched = ds.get("scheduler", {})
    params = sched.get("params", {})
    return {"arch": model.get("arch", "roberta"), **{k: model.get(k) for k in RECIPE_KEYS[1:6]},
            "seq_len": data.get("seq_len"), "mlm_probability": data.get("mlm_probability"),
            "train_batch_size": ds.get("train_batch_size"), "lr": ds.get("optimizer", {}).get("params", {}).get("lr"),
            "schedule": sched.get("type"), "warmup_steps": params.get("warmup_num_steps"),
            "total_steps": params.get("total_num_steps")}


def run_data(run: Path) -> list[str]:
    """The FASTA names a run's shards were made from (their manifests); a shards directory's name where the
    manifest is not on this machine (a remote source)."""
    try:
        dirs = json.loads((run / "config.json").read_text())["pretrain"]["data"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    names: list[str] = []
    for d in dirs:
        where = str(d).split("=", 1)[-1].rsplit(":", 1)[0] if "=" in str(d) else str(d)
        m = Path(where) / "manifest.json"
        try:
            names += [Path(i["path"]).name for i in json.loads(m.read_text())["inputs"]]
        except (OSError, ValueError, KeyError, TypeError):
            names.append(Path(where).name)
    return names


def tolerance(points: list[list[float]]) -> float:
    """3 x the sd of successive val-loss differences over the curve's second half, >= MIN_TOLERANCE."""
    tail = [v for _, v in points[len(points) // 2:]]
    diffs = [b - a for a, b in zip(tail, tail[1:])]
    if len(diffs) < 2:
        return MIN_TOLERANCE
    mean = sum(diffs) / len(diffs)
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1))
    return max(MIN_TOLERANCE, 3 * sd)


def expected_at(points: list[list[float]], tokens: float) -> float:
    """The curve's val loss at `tokens`, linear in log tokens; clamped to its ends."""
    pts = sorted(points)
    if tokens <= pts[0][0]:
        return pts[0][1]
    for (t0, v0), (t1, v1) in zip(pts, pts[1:]):
        if tokens <= t1:
            w = (math.log(tokens) - math.log(t0)) / (math.log(t1) - math.log(t0))
            return v0 + w * (v1 - v0)
    return pts[-1][1]


def match(recipe: dict[str, Any] | None, curves: list[dict[str, Any]],
          data: list[str] | None = None) -> tuple[dict[str, Any] | None, list[str]]:
    """(the curve of this recipe, []) or (the closest curve on the same loss scale, the settings that differ,
    "data" among them when the run's genome is not the curve's), or (None, []) when no curve is on its scale."""
    if recipe is None:
        return None, []
    same_scale = [c for c in curves if all(recipe.get(k) == c["recipe"].get(k) for k in LOSS_SCALE_KEYS)]
    if not same_scale:
        return None, []

    def differs(c: dict[str, Any]) -> list[str]:
        keys = [k for k in RECIPE_KEYS if recipe.get(k) != c["recipe"].get(k)]
        return keys + (["data"] if data is not None and sorted(data) != sorted(c.get("data", [])) else [])

    curve = min(same_scale, key=lambda c: len(differs(c)))
    return curve, differs(curve)


def verdict(val_steps: list[int], val_losses: list[float], tokens_per_step: int, curve: dict[str, Any] | None,
            differs: list[str]) -> str:
    """The one line: on / above / below the expected curve, or diverging."""
    if not val_losses:
        return "expected curve: no validation loss logged yet (it is written every --eval-interval steps)"
    last, tokens = val_losses[-1], val_steps[-1] * tokens_per_step
    tol = curve["tolerance"] if curve else MIN_TOLERANCE
    if not math.isfinite(last):
        return f"expected curve: DIVERGING — val loss is {last} at step {val_steps[-1]}; lower the LR or resume " \
               "from an earlier checkpoint"
    rising = len(val_losses) >= 4 and all(b > a for a, b in zip(val_losses[-4:], val_losses[-3:]))
    if rising and last > min(val_losses) + tol:
        return (f"expected curve: DIVERGING — val loss rose for 3 evaluations to {last:.3f} "
                f"(best {min(val_losses):.3f}); lower the LR or resume from an earlier checkpoint")
    if curve is None:
        return (f"expected curve: none shipped on this run's loss scale (architecture, vocabulary, row length, masking "
                f"rate); val loss {last:.3f} at {tokens / 1e6:.2f}M tokens, not diverging")
    exp = expected_at(curve["points"], tokens)
    where = (f"on the expected curve of {curve['name']!r}" if abs(last - exp) <= tol else
             f"ABOVE the expected curve of {curve['name']!r} by {last - exp:.3f} (worse: check the data, LR and "
             "tokenizer)" if last > exp else
             f"below the expected curve of {curve['name']!r} by {exp - last:.3f} (better than it)")
    beyond = " (past the curve's last point: compared with its end)" if tokens > max(t for t, _ in curve["points"]) \
        else ""
    hint = f"; indicative only: this run differs in {', '.join(differs)}" if differs else ""
    return (f"expected curve: {where} — val loss {last:.3f} vs {exp:.3f} ± {tol:.3f} at "
            f"{tokens / 1e6:.2f}M tokens{beyond}{hint}")

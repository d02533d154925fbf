"""Named pretraining recipes: `--recipe NAME` sets model and data fields the way a measured recipe does.

    deepspeed launch/pretrain.py --deepspeed_config ds_configs/zero1.json --data DIR --out RUN --recipe modernbert

A recipe is a set of defaults, not a lock: a model/data flag given with a value other than its default wins over
the recipe (`--recipe modernbert --intermediate-size 1024` trains a narrower GLU); a flag given *at* its default
cannot be told from an absent one, so there the recipe's value is used. config.json records the recipe's name
next to the values the run used. Everything DeepSpeed owns (LR, batch, schedule) stays in the JSON; no recipe
here changes it. Why each recipe exists, measured at equal FLOPs: docs/recipes.md and
benchmarks/results/recipes.json (benchmarks/recipes.py).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable

from tinydnabert.errors import InputError


def glu_width(hidden_size: int) -> int:
    """ModernBERT's GeGLU width with RoBERTa's feed-forward parameters: 2/3 of 4 x hidden, a multiple of 8
    (344 at hidden 128, 1368 at 512)."""
    return 8 * round(hidden_size * 8 / 3 / 8)


@dataclass(frozen=True)
class Recipe:
    name: str
    summary: str                                   # what it changes, one line (the --help text)
    model: dict[str, Any] = field(default_factory=dict)      # ModelConfig fields
    data: dict[str, Any] = field(default_factory=dict)       # DataConfig fields
    # ModelConfig fields computed from the run's other model fields when not given (e.g. the GLU width)
    derived: dict[str, Callable[[Any], Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from tinydnabert.pretrain.model import ModelConfig

        fixed = {f.name for f in dataclasses.fields(ModelConfig) if f.metadata.get("cli") is False}
        if fixed & (set(self.model) | set(self.derived)):
            raise ValueError(f"recipe {self.name}: {sorted(fixed & (set(self.model) | set(self.derived)))} come from "
                             "the tokenizer (ModelConfig.with_tokenizer), not from a recipe")


RECIPES: dict[str, Recipe] = {
    "reference": Recipe("reference", "the reference TinyDNABERT: RoBERTa, 15% masking (every default)"),
    "modernbert": Recipe(
        "modernbert", "transformers' ModernBERT (rotary, pre-norm, GeGLU at 2/3 width), 15% masking",
        model={"arch": "modernbert"}, derived={"intermediate_size": lambda m: glu_width(m.hidden_size)}),
}


def apply(name: str, model_cfg: Any, data_cfg: Any) -> tuple[Any, Any]:
    """(model_cfg, data_cfg) with recipe `name` filled in wherever a field still has its dataclass default."""
    if name not in RECIPES:
        raise InputError(f"--recipe {name!r}: not a recipe; choose one of {', '.join(RECIPES)} (docs/recipes.md)")
    r = RECIPES[name]

    def fill(cfg: Any, values: dict[str, Any], derived: dict[str, Callable[[Any], Any]]) -> Any:
        defaults = {f.name: f.default_factory() if f.default is dataclasses.MISSING else f.default
                    for f in dataclasses.fields(cfg) if f.default is not dataclasses.MISSING
                    or f.default_factory is not dataclasses.MISSING}
        changes = {k: v for k, v in values.items() if getattr(cfg, k) == defaults[k]}
        out = dataclasses.replace(cfg, **changes)
        more = {k: fn(out) for k, fn in derived.items() if getattr(cfg, k) == defaults[k]}
        return dataclasses.replace(out, **more)

    return fill(model_cfg, r.model, r.derived), fill(data_cfg, r.data, {})

"""`--recipe NAME`: a named recipe fills the model/data fields the command line left at their defaults; a flag given
with another value wins; an unknown name is an error naming the recipes; the run's config records it."""

from __future__ import annotations

import argparse

import pytest

from tinydnabert.errors import InputError
from tinydnabert.pretrain import recipes
from tinydnabert.pretrain.recipes import RECIPES, glu_width


def _configs(*argv: str):
    from tinydnabert.pretrain.train import add_arguments, configs_from_args

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return configs_from_args(parser.parse_args(["--data", "D", "--out", "O", *argv]))


def test_every_recipe_sets_only_real_fields_and_the_reference_sets_none():
    from dataclasses import fields

    from tinydnabert.pretrain.data import DataConfig
    from tinydnabert.pretrain.model import ModelConfig

    model_fields, data_fields = {f.name for f in fields(ModelConfig)}, {f.name for f in fields(DataConfig)}
    for r in RECIPES.values():
        assert set(r.model) | set(r.derived) <= model_fields and set(r.data) <= data_fields and r.summary
    assert not (RECIPES["reference"].model or RECIPES["reference"].data or RECIPES["reference"].derived)


def test_recipe_fills_defaults_and_derives_the_glu_width():
    cfg, model, data = _configs("--recipe", "modernbert")
    assert cfg.recipe == "modernbert" and model.arch == "modernbert" and model.intermediate_size == glu_width(512)
    _, small, _ = _configs("--recipe", "modernbert", "--hidden-size", "128", "--num-attention-heads", "4")
    assert small.intermediate_size == 344 == glu_width(128)          # the width benchmarks/recipes.py measured
    assert (glu_width(512), glu_width(768)) == (1368, 2048)


def test_a_flag_with_another_value_wins_over_the_recipe(monkeypatch):
    _, model, _ = _configs("--recipe", "modernbert", "--intermediate-size", "1024")
    assert model.arch == "modernbert" and model.intermediate_size == 1024
    monkeypatch.setitem(RECIPES, "mlm30", recipes.Recipe("mlm30", "30% masking", data={"mlm_probability": 0.3}))
    _, _, data = _configs("--recipe", "mlm30")
    assert data.mlm_probability == 0.3
    _, _, data = _configs("--recipe", "mlm30", "--mlm-probability", "0.2")
    assert data.mlm_probability == 0.2


def test_a_recipe_cannot_set_what_the_tokenizer_decides():
    with pytest.raises(ValueError, match="vocab_size"):
        recipes.Recipe("bad", "sets the vocabulary", model={"vocab_size": 4096})


def test_without_a_recipe_nothing_changes():
    _, model, data = _configs()
    assert model.arch == "roberta" and model.intermediate_size == 2048 and data.mlm_probability == 0.15


def test_an_unknown_recipe_is_an_error_naming_them():
    with pytest.raises(InputError, match=r"--recipe 'fast': not a recipe; choose one of reference, modernbert"):
        _configs("--recipe", "fast")
    with pytest.raises(InputError, match="not a recipe"):
        recipes.apply("fast", None, None)

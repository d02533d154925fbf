"""The expected-curve check of `tinydnabert plot RUN`: the shipped curves are real runs of the recipes they name,
the demo's curve is the recipe the CPU demo runs, and the verdict says on / above / below / diverging."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.helpers import run_cli
from tinydnabert.app import expected
from tinydnabert.app.plots import health

CURVE = {"name": "toy", "recipe": {}, "tolerance": 0.05,
         "points": [[1e6, 7.0], [2e6, 6.0], [4e6, 5.5], [8e6, 5.2]]}


def test_shipped_curves_are_complete_measured_runs():
    curves = expected.load_curves()
    assert {c["name"] for c in curves} >= {"modernbert-cpu", "reference-cpu"}
    for c in curves:
        assert set(c["recipe"]) == set(expected.RECIPE_KEYS)
        tokens = [t for t, _ in c["points"]]
        assert tokens == sorted(tokens) and len(tokens) >= 5 and tokens[0] > 0
        assert all(math.isfinite(v) and 0 < v < 10 for _, v in c["points"])
        assert c["tolerance"] >= expected.MIN_TOLERANCE and c["tolerance"] == round(expected.tolerance(c["points"]), 4)
        assert c["data"] == ["grch37_chr20.fa.gz"] and c["source"]["git"]
        # a validation loss that falls: a curve of a run that learned
        assert c["points"][-1][1] < c["points"][0][1] - 0.2


def test_a_shipped_curve_is_the_recipe_the_cpu_demo_runs():
    """If the CPU preset changes, its curve must be measured again (benchmarks/expected_curves.py)."""
    from tinydnabert.app.quickstart import PRESETS
    from tinydnabert.pretrain import recipes
    from tinydnabert.pretrain.data import DataConfig
    from tinydnabert.pretrain.model import ModelConfig

    p = PRESETS["cpu"]
    model, data = ModelConfig(**p.model), DataConfig(seq_len=p.seq_len)
    if p.recipe:
        model, data = recipes.apply(p.recipe, model, data)
    r = next(c for c in expected.load_curves() if c["name"] == "modernbert-cpu")["recipe"]
    assert {k: r[k] for k in ("arch", "hidden_size", "num_hidden_layers", "num_attention_heads",
                              "intermediate_size")} == {k: getattr(model, k) for k in ("arch", "hidden_size",
                                                                                        "num_hidden_layers",
                                                                                        "num_attention_heads",
                                                                                        "intermediate_size")}
    assert (r["vocab_size"], r["seq_len"], r["mlm_probability"]) == (p.vocab_size, data.seq_len, data.mlm_probability)
    assert (r["train_batch_size"], r["lr"]) == (p.train_batch, p.peak_lr)
    assert r["warmup_steps"] == max(1, p.pretrain_steps // 10) and p.hold_lr
    assert (r["schedule"], r["total_steps"]) == ("WarmupLR", None)  # the LR held: no end to decay towards


@pytest.mark.parametrize("losses, words", [
    ([7.0, 6.0, 5.52], "on the expected curve of 'toy'"),
    ([7.0, 6.0, 5.8], "ABOVE the expected curve of 'toy' by 0.300"),
    ([7.0, 6.0, 5.3], "below the expected curve of 'toy' by 0.200"),
    ([7.0, 6.0, float("nan")], "DIVERGING"),
    ([6.0, 5.5, 5.6, 5.7, 5.8], "DIVERGING — val loss rose for 3 evaluations to 5.800"),
])
def test_verdict(losses, words):
    steps = [1, 2, 4, 5, 6][:len(losses)] if len(losses) > 3 else [1, 2, 4]
    line = expected.verdict(steps, losses, 1_000_000, CURVE, [])
    assert line.startswith("expected curve: ") and words in line


def test_interpolation_is_in_log_tokens_and_clamped():
    assert expected.expected_at(CURVE["points"], math.sqrt(2e6 * 4e6)) == pytest.approx(5.75)
    assert expected.expected_at(CURVE["points"], 1e5) == 7.0 and expected.expected_at(CURVE["points"], 1e9) == 5.2
    assert "past the curve's last point" in expected.verdict([20], [5.21], 1_000_000, CURVE, [])


def test_another_recipe_is_named_as_only_indicative():
    line = expected.verdict([4], [5.5], 1_000_000, CURVE, ["arch", "lr"])
    assert "indicative only: this run differs in arch, lr" in line


def _fake_run(run: Path, curve: dict, shift: float) -> None:
    """A run directory whose config is the curve's recipe and whose val/loss is the curve (+ shift)."""
    from torch.utils.tensorboard import SummaryWriter

    r = curve["recipe"]
    (run / "shards").mkdir(parents=True)
    (run / "shards" / "manifest.json").write_text(json.dumps({"inputs": [{"path": f"/x/{n}"} for n in curve["data"]]}))
    model = {k: r[k] for k in expected.RECIPE_KEYS[:6]}
    (run / "config.json").write_text(json.dumps({"pretrain": {"data": [str(run / "shards")]}, "model": model,
                                                 "data": {"seq_len": r["seq_len"],
                                                          "mlm_probability": r["mlm_probability"]}}))
    (run / "ds_config.json").write_text(json.dumps({
        "train_batch_size": r["train_batch_size"], "optimizer": {"type": "AdamW", "params": {"lr": r["lr"]}},
        "scheduler": {"type": r["schedule"], "params": {"warmup_num_steps": r["warmup_steps"],
                                                        **({"total_num_steps": r["total_steps"]}
                                                           if r["total_steps"] else {})}}}))
    per_step = r["train_batch_size"] * r["seq_len"]
    w = SummaryWriter(log_dir=str(run / "tensorboard" / "pretrain"))
    for t, v in curve["points"]:
        w.add_scalar("train/loss", v + shift, round(t / per_step))
        w.add_scalar("val/loss", v + shift, round(t / per_step))
    w.close()


@pytest.mark.parametrize("shift, words", [(0.0, "on the expected curve of 'modernbert-cpu'"),
                                          (0.5, "ABOVE the expected curve of 'modernbert-cpu' by 0.500")])
def test_plot_prints_the_verdict_of_a_run_of_the_demo_recipe(tmp_path, capsys, shift, words):
    demo = next(c for c in expected.load_curves() if c["name"] == "modernbert-cpu")
    _fake_run(tmp_path / "run", demo, shift)
    rc, out, _ = run_cli(capsys, "plot", tmp_path / "run")
    assert rc == 0 and words in out and "indicative" not in out
    assert (tmp_path / "run" / "training.png").is_file()


def test_a_bare_tensorboard_directory_is_not_checked(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    w = SummaryWriter(log_dir=str(tmp_path / "tb"))
    w.add_scalar("val/loss", 5.0, 10)
    w.close()
    assert "not checked" in health(tmp_path / "tb")


def test_other_data_is_indicative_and_another_loss_scale_gets_no_verdict(tmp_path, capsys):
    demo = next(c for c in expected.load_curves() if c["name"] == "modernbert-cpu")
    _fake_run(tmp_path / "yeast", {**demo, "data": ["yeast.fa.gz"]}, 0.0)
    rc, out, _ = run_cli(capsys, "plot", tmp_path / "yeast")
    assert rc == 0 and "on the expected curve of 'modernbert-cpu'" in out
    assert "indicative only: this run differs in data" in out
    other = {**demo, "recipe": {**demo["recipe"], "vocab_size": 4105}}  # a k-mer tokenizer: losses on another scale
    _fake_run(tmp_path / "kmer", other, 0.0)
    rc, out, _ = run_cli(capsys, "plot", tmp_path / "kmer")
    assert rc == 0 and "none shipped on this run's loss scale" in out and "ABOVE" not in out

"""Every ds_configs/*.json: parses, holds the reference recipe, and agrees with the launcher."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pytest

from tinydnabert.errors import InputError
from tinydnabert.pretrain.ds_config import check_batch_sizes, derive, shipped
from tinydnabert.pretrain.ds_config import load as load_ds_config

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted((REPO / "ds_configs").glob("*.json"))
# Which file is for which machine: the name says what it holds.
EXPECTED_PRECISION = {"zero1.json": "bf16", "zero1-cpu-fp32.json": "fp32"}


def test_the_configs_are_there():
    assert {p.name for p in CONFIGS} >= set(EXPECTED_PRECISION)
    assert all(p.name in EXPECTED_PRECISION for p in CONFIGS), "add new configs to EXPECTED_PRECISION"


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_is_the_reference_recipe(path):
    from deepspeed.runtime.config import DeepSpeedConfig

    raw = load_ds_config(path)
    ds = DeepSpeedConfig(json.loads(path.read_text()))  # DeepSpeed's own parser accepts it
    assert ds.train_batch_size == 128  # global batch: 128 sequences x 512 tokens
    assert ds.zero_optimization_stage == 1
    assert ds.optimizer_name == "adamw" and not raw["optimizer"].get("params", {}).get("torch_adam")
    p = ds.optimizer_params
    assert (p["lr"], tuple(p["betas"]), p["eps"], p["weight_decay"]) == (1e-4, (0.9, 0.999), 1e-8, 1e-5)
    assert ds.scheduler_name == "WarmupDecayLR"
    s = ds.scheduler_params
    assert (s["warmup_min_lr"], s["warmup_max_lr"], s["warmup_num_steps"], s["total_num_steps"],
            s.get("warmup_type", "log")) == (0.0, 1e-4, 20_000, 200_000, "linear")
    assert s["warmup_max_lr"] == p["lr"]
    assert ds.gradient_clipping > 0
    assert ds.monitor_config.tensorboard.enabled
    assert not raw["tensorboard"].get("output_path"), "the run directory decides where events go"
    precision = "bf16" if ds.bfloat16_config.enabled else "fp16" if ds.float16_config.enabled else "fp32"
    assert precision == EXPECTED_PRECISION[path.name]
    # no host-device sync per micro-step (tests/unit/test_syncs.py): DeepSpeed's throughput timer
    # synchronizes the device at every forward and step; bf16's overflow check reads a flag every step
    assert not ds.timers_config.enabled
    assert not (ds.bfloat16_config.enabled and ds.bfloat16_config.check_grad_overflow)
    # the micro batch must leave whole accumulation steps on 1, 2 and 4 ranks
    for world in (1, 2, 4):
        tbs, micro, gas = check_batch_sizes(raw, world)
        assert micro * gas * world == tbs == 128


def test_gpu_config_accumulation_matches_readme_arithmetic():
    raw = load_ds_config(REPO / "ds_configs" / "zero1.json")
    assert check_batch_sizes(raw, 1) == (128, 32, 4)
    assert check_batch_sizes(raw, 2) == (128, 32, 2)


def test_batch_not_divisible_by_world_size_is_a_clear_error():
    raw = load_ds_config(REPO / "ds_configs" / "zero1.json")
    with pytest.raises(InputError, match=r"not divisible .* 32 x 3 ranks = 96.*train_micro_batch_size_per_gpu"):
        check_batch_sizes(raw, 3)
    with pytest.raises(InputError, match="gradient_accumulation_steps 3 disagrees"):
        check_batch_sizes({**raw, "gradient_accumulation_steps": 3}, 1)
    with pytest.raises(InputError, match="set both"):
        check_batch_sizes({"train_batch_size": 128}, 1)


def test_bad_config_files(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_ds_config(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{ not json")
    with pytest.raises(InputError, match="not valid JSON"):
        load_ds_config(tmp_path / "bad.json")


def test_launcher_owns_no_deepspeed_value():
    """One source of truth: no launcher flag may set what the JSON sets."""
    from tinydnabert.pretrain.train import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    flags = {o for a in parser._actions for o in a.option_strings}
    owned = {"lr", "learning", "batch", "micro", "accumulation", "clip", "clipping", "warmup", "decay", "beta",
             "betas", "eps", "bf16", "fp16", "zero", "optimizer", "scheduler", "precision"}
    clash = [f for f in flags if owned & set(re.split(r"[-_]+", f.lstrip("-")))]
    assert not clash, f"flags {clash} duplicate DeepSpeed-config values"
    assert "--deepspeed_config" in flags and "--resume" in flags


def test_launch_script_docstring_names_existing_configs():
    text = (REPO / "launch" / "pretrain.py").read_text()
    named = set(re.findall(r"ds_configs/([\w.-]+\.json)", text))
    assert named and all((REPO / "ds_configs" / n).is_file() for n in named)
    assert "deepspeed launch/pretrain.py --deepspeed_config ds_configs/zero1.json --data DIR --out RUN" in text


def test_derive_sets_batch_lr_and_schedule_and_leaves_the_base_alone():
    base = shipped("zero1.json")
    ds = derive(base, batch=16, micro=4, lr=2e-3, warmup=5, steps=40)
    assert (ds["train_batch_size"], ds["train_micro_batch_size_per_gpu"]) == (16, 4)
    assert "gradient_accumulation_steps" not in ds and check_batch_sizes(ds, 2) == (16, 4, 2)
    assert ds["optimizer"]["params"]["lr"] == ds["scheduler"]["params"]["warmup_max_lr"] == 2e-3
    assert (ds["scheduler"]["params"]["warmup_num_steps"], ds["scheduler"]["params"]["total_num_steps"]) == (5, 40)
    assert base == shipped("zero1.json")  # a copy: the loaded base is not changed
    with pytest.raises(InputError, match="no scheduler"):
        derive({"train_batch_size": 8, "train_micro_batch_size_per_gpu": 8}, steps=10)


def test_derive_constant_schedule_holds_the_peak():
    ds = derive(shipped("zero1-cpu-fp32.json"), lr=5e-4, warmup=10, constant=True)
    assert ds["scheduler"]["type"] == "WarmupLR" and "total_num_steps" not in ds["scheduler"]["params"]
    assert ds["scheduler"]["params"]["warmup_max_lr"] == 5e-4 and ds["scheduler"]["params"]["warmup_num_steps"] == 10
    with pytest.raises(InputError, match="no length"):
        derive(shipped("zero1-cpu-fp32.json"), steps=10, constant=True)

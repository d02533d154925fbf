"""LR schedules: warmup-stable-decay (schedule.py) against its closed form, linear (DeepSpeed's WarmupDecayLR)
unchanged for the shipped configs, exact resume of the WSD clock, and bad schedule blocks as errors."""

from __future__ import annotations

import json
import os

import pytest
import torch

from tinydnabert.errors import InputError
from tinydnabert.pretrain import ds_config
from tinydnabert.pretrain.ds_config import CONFIG_DIR, check_schedule, derive, shipped

SHIPPED = sorted(p.name for p in CONFIG_DIR.glob("*.json"))


def _opt(lr: float = 1e-4) -> torch.optim.Optimizer:
    return torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=lr)


def _lrs(sched, steps: int) -> list[float]:
    """The optimizer's LR after each of `steps` scheduler steps, as engine.step() leaves it: the LR at
    last_batch_iteration 0, 1, ... (the clock WarmupDecayLR and WarmupStableDecayLR share; DeepSpeed steps it
    once per optimizer step)."""
    out = []
    for _ in range(steps):
        sched.step()
        out.append(sched.optimizer.param_groups[0]["lr"])
    return out


def _wsd(ds: dict):
    from tinydnabert.pretrain.schedule import WarmupStableDecayLR

    p = check_schedule(ds)
    return WarmupStableDecayLR(_opt(ds["optimizer"]["params"]["lr"]), **p), p


def test_wsd_equals_the_closed_form_at_every_step():
    from tinydnabert.pretrain.schedule import wsd_lr

    # 10 warmup steps, 100 in all, the last 20 decaying: warmup 0..9, stable 10..79, decay 80..100
    ds = derive(shipped(ds_config.CPU_CONFIG), lr=1e-3, warmup=10, steps=100, schedule="wsd", decay_fraction=0.2)
    sched, p = _wsd(ds)
    got = _lrs(sched, 101)
    want = [wsd_lr(s, **p) for s in range(101)]
    assert got == pytest.approx(want, rel=1e-12, abs=1e-15)
    # the closed form by hand, at the boundaries
    assert want[0] == 0.0 and want[5] == pytest.approx(0.5e-3)   # half way through the warmup
    assert want[10] == 1e-3                                        # warmup end: the peak
    assert want[45] == want[79] == want[80] == 1e-3                # the stable phase, up to the decay start
    assert want[81] == pytest.approx(1e-3 * 19 / 20)               # then linear over 20 steps
    assert want[90] == pytest.approx(0.5e-3)
    assert want[99] == pytest.approx(1e-3 / 20) and want[100] == 0.0  # the last step, then 0 at total_num_steps
    assert sched.total_num_steps == 100  # what --max-steps 0 runs to (train.py)


def test_wsd_decays_to_a_floor():
    from tinydnabert.pretrain.schedule import wsd_lr

    ds = derive(shipped(ds_config.CPU_CONFIG), lr=1e-3, warmup=4, steps=50, schedule="wsd", decay_fraction=0.5,
                decay_min_lr=1e-4)
    sched, p = _wsd(ds)
    got = _lrs(sched, 51)
    assert got == pytest.approx([wsd_lr(s, **p) for s in range(51)], rel=1e-12)
    assert got[0] == 0.0 and got[4] == got[25] == 1e-3  # warmup from warmup_min_lr 0, decay from step 25
    assert got[50] == pytest.approx(1e-4) and min(got[4:]) == pytest.approx(1e-4)


def test_wsd_resumes_exactly_from_its_state_dict():
    """DeepSpeed saves a client scheduler's state_dict() in its checkpoint and calls load_state_dict() on resume;
    checkpoint.load then writes get_lr() into the optimizer. The resumed LRs are the uninterrupted run's."""
    ds = derive(shipped(ds_config.CPU_CONFIG), lr=1e-3, warmup=10, steps=100, schedule="wsd")
    whole, _ = _wsd(ds)
    full = _lrs(whole, 100)
    for cut in (7, 50, 85):  # in the warmup, the stable phase and the decay
        first, _ = _wsd(ds)
        _lrs(first, cut)
        state = first.state_dict()
        assert state == {"last_batch_iteration": cut - 1}
        second, _ = _wsd(ds)  # a fresh engine's scheduler
        second.load_state_dict(state)
        for group, lr in zip(second.optimizer.param_groups, second.get_lr()):  # checkpoint.load's fix-up
            group["lr"] = lr
        assert second.optimizer.param_groups[0]["lr"] == full[cut - 1]
        assert _lrs(second, 100 - cut) == full[cut:]


@pytest.mark.parametrize("name", SHIPPED)
def test_linear_is_unchanged_for_the_shipped_configs(name):
    """The shipped configs still hold DeepSpeed's WarmupDecayLR, which train.py hands to DeepSpeed untouched
    (check_schedule -> None: no client scheduler); schedule='linear' reproduces them exactly."""
    from deepspeed.runtime.lr_schedules import WarmupDecayLR

    ds = shipped(name)
    assert ds["scheduler"]["type"] == "WarmupDecayLR" and check_schedule(ds) is None
    assert derive(ds, schedule="linear") == ds
    assert derive(derive(ds, schedule="wsd"), schedule="linear") == ds  # and back from wsd
    p = ds["scheduler"]["params"]
    sched = WarmupDecayLR(_opt(), **p)
    steps = [0, 1, 10_000, 19_999, 20_000, 20_001, 110_000, 199_999, 200_000]
    got = {}
    for s in steps:
        sched.step(s)
        got[s] = sched.get_lr()[0]
    # today's schedule: linear warmup 0 -> 1e-4 over 20k steps, then linear to 0 at 200k
    peak, w, t = 1e-4, 20_000, 200_000
    want = {s: peak * s / w if s < w else peak * (t - s) / (t - w) for s in steps}
    assert got == pytest.approx(want, rel=1e-12, abs=1e-18)


def test_wsd_keeps_everything_but_the_decay_of_the_linear_config():
    from tinydnabert.pretrain.schedule import wsd_lr

    ds = shipped("zero1.json")
    wsd = derive(ds, schedule="wsd")
    assert wsd["scheduler"]["type"] == "WarmupStableDecayLR"
    assert wsd["scheduler"]["params"] == {**ds["scheduler"]["params"], "decay_fraction": 0.2}
    assert {**wsd, "scheduler": ds["scheduler"]} == ds
    p = check_schedule(wsd)
    # the stable phase holds the peak until 160k, the last 20 % (40k steps) decays
    assert wsd_lr(20_000, **p) == wsd_lr(159_999, **p) == wsd_lr(160_000, **p) == 1e-4
    assert wsd_lr(180_000, **p) == pytest.approx(0.5e-4) and wsd_lr(200_000, **p) == 0.0
    # the peak LR is derive(lr=...), in both places it lives
    w2 = derive(wsd, lr=3e-4)
    assert w2["optimizer"]["params"]["lr"] == w2["scheduler"]["params"]["warmup_max_lr"] == 3e-4
    # a constant schedule from a wsd base drops the decay params
    c = derive(wsd, constant=True)
    assert c["scheduler"]["type"] == "WarmupLR" and "decay_fraction" not in c["scheduler"]["params"]


@pytest.mark.parametrize("change, match", [
    ({"decay_fraction": 0.0}, "decay_fraction 0.0: must be in"),
    ({"decay_fraction": 1.5}, "decay_fraction 1.5: must be in"),
    ({"decay_fraction": "x"}, "decay_fraction x: must be in"),
    ({"decay_fraction": 0.001}, "rounds to 0 decay steps"),
    ({"decay_fraction": 0.95}, "exceed total_num_steps"),
    ({"warmup_type": "log"}, "warmup_type"),
    ({"total_num_steps": 0}, "positive integer total_num_steps"),
    ({"warmup_max_lr": 5e-4}, "must be set and equal optimizer lr"),
    ({"decay_min_lr": -1.0}, "decay_min_lr -1.0: must be a number >= 0"),
    ({"decay_fractoin": 0.2}, "unknown params"),
])
def test_bad_wsd_blocks_are_errors(change, match):
    ds = derive(shipped(ds_config.CPU_CONFIG), warmup=10, steps=100, schedule="wsd")
    ds["scheduler"]["params"].update(change)
    with pytest.raises(InputError, match=match):
        check_schedule(ds, where="x.json")


def test_bad_derive_schedule_arguments():
    base = shipped(ds_config.CPU_CONFIG)
    with pytest.raises(InputError, match="choose one of"):
        derive(base, schedule="cosine")
    with pytest.raises(InputError, match="belong to the wsd schedule"):
        derive(base, decay_fraction=0.3)
    with pytest.raises(InputError, match="do not pass schedule too"):
        derive(base, schedule="wsd", constant=True)
    with pytest.raises(InputError, match="exceed total_num_steps"):
        derive(base, warmup=90, steps=100, schedule="wsd", decay_fraction=0.2)


@pytest.mark.timeout(600)
def test_wsd_through_the_engine_and_an_exact_resume(tmp_path, hg38_shards, one_process_env, one_thread):
    """In process, no launcher: a WSD config trains with DeepSpeed stepping our scheduler (train/lr at step k is
    the LR set after k engine steps: wsd_lr(k - 1)), runs to its total_num_steps by default, and a run stopped
    at step 6 and resumed logs the uninterrupted run's LR at every later step."""
    from tests.helpers import losses, scalars, tiny_ds_config
    from tinydnabert.pretrain.data import DataConfig
    from tinydnabert.pretrain.model import ModelConfig
    from tinydnabert.pretrain.schedule import wsd_lr
    from tinydnabert.pretrain.train import PretrainConfig, pretrain

    ds = tiny_ds_config(tmp_path / "ds.json", warmup=2, steps=12, schedule="wsd", decay_fraction=0.5)
    p = check_schedule(json.loads(ds.read_text()))

    def run(out: str, **kw) -> dict[int, float]:
        pretrain(PretrainConfig(data=str(hg38_shards), out=str(tmp_path / out), log_interval=1, eval_interval=0,
                                save_interval=6, export=False, **kw), ModelConfig.tiny(), str(ds),
                 DataConfig(seq_len=128, num_workers=0, val_batches=1))
        lr: dict[int, float] = {}
        for ev in sorted((tmp_path / out / "tensorboard" / "pretrain").glob("events.out.tfevents.*"),
                         key=os.path.getmtime):
            lr.update(scalars(ev)["train/lr"])
        return lr

    whole = run("whole")  # --max-steps 0: to the schedule's total_num_steps
    assert sorted(whole) == list(range(1, 13))
    assert [whole[k] for k in whole] == pytest.approx([wsd_lr(k - 1, **p) for k in whole], rel=1e-6)
    run("cut", max_steps=6)
    resumed = run("cut", resume="latest")
    assert {k: resumed[k] for k in range(7, 13)} == {k: whole[k] for k in range(7, 13)}
    assert losses(tmp_path / "cut") == losses(tmp_path / "whole")  # and the same training, step for step

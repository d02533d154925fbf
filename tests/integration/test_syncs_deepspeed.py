"""What zero1.json's two sync-related keys save, and the other heads and configs, counted around the real loop
(tests/sync_probe.py; the fast tier's tests/unit/test_syncs.py checks the shipped config)."""

from __future__ import annotations

import pytest
from sync_probe import probe, split_clipping  # tests/sync_probe.py


@pytest.fixture(scope="module")
def probed(tmp_path_factory, hg38_shards):
    return probe(tmp_path_factory.mktemp("syncs"), hg38_shards, ["deepspeed-defaults", "full-head", "cpu-fp32"])


def test_deepspeed_defaults_sync_every_micro_step(probed):
    """Without `"timers": {"throughput": {"enabled": false}}` DeepSpeed's ThroughputTimer calls
    get_accelerator().synchronize() at every forward and every engine.step() (from its 3rd global step);
    without `"check_grad_overflow": false` the bf16 ZeRO optimizer reads an overflow flag (.item()) and
    checks the norm (bool()) every optimizer step."""
    r = probed["deepspeed-defaults"]
    events = dict((w, n) for w, n in r["events"])
    timer = {w: n for w, n in events.items() if "accelerator.synchronize" in w and "utils/timer.py" in w}
    assert len(timer) == 2 and all(n == r["micro_steps"] - 2 * 2 for n in timer.values()), timer  # 2 steps x 2
    assert sum(n for w, n in events.items() if "in has_overflow" in w and "_local_scalar_dense" in w) == r["steps"]
    assert sum(n for w, n in events.items() if "is_invalid_grad_norm" in w) == 2 * r["steps"]


def test_full_head_is_sync_free_too(probed):
    """The head on every position (the accelerator default without --masked-per-row) needs no sync either."""
    clip, rest = split_clipping(probed["full-head"])
    assert not rest and sum(n for _, n in clip) == probed["full-head"]["steps"]


def test_cpu_fp32_config_checks_the_norm_twice_per_step(probed):
    """fp32 ZeRO-1 also tests the norm for inf/NaN before stepping (stage_1_and_2.step: `self.dtype !=
    torch.bfloat16`); harmless on a CPU, where there is no device to wait for."""
    r = probed["cpu-fp32"]
    assert not r["bf16"] and sum(n for w, n in r["events"] if "is_invalid_grad_norm" in w) == 2 * r["steps"]
    assert all("is_invalid_grad_norm" in w for w, _ in r["events"]), r["events"]

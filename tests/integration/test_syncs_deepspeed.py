"""Host-device syncs in a training step: none, but the one DeepSpeed's gradient clipping makes per optimizer step;
what zero1.json's two sync-related keys save; the other heads and configs.

Counted around the real loop (tests/sync_probe.py: train.setup + fit, a real DeepSpeed engine from
ds_configs/zero1.json, world size 1, a tiny model, real hg38 shards), with log, eval and save steps uncounted; the
counter itself is checked on plain tensors in tests/unit/test_syncs.py. The engine runs in a subprocess (one for
all the variants): it initialises torch.distributed, which must not leak into this test process. On a GPU the same
loop runs under torch.cuda.set_sync_debug_mode (the `gpu` test at the end).
"""

from __future__ import annotations

import pytest
import torch

from tests.sync_probe import VARIANTS, probe, split_clipping


@pytest.fixture(scope="module")
def probed(tmp_path_factory, hg38_shards):
    return probe(tmp_path_factory.mktemp("syncs"), hg38_shards, list(VARIANTS))


def test_training_step_makes_no_sync_but_deepspeeds_clipping(probed):
    """zero1.json (bf16, ZeRO-1, clipping 1.0) with --masked-per-row: of the whole optimizer step, only
    DeepSpeed's gradient clipping reads the device, once per step (6 steps of 2 micro-steps each)."""
    r = probed["shipped"]
    assert r["bf16"] and r["optimizer"] == "DeepSpeedZeroOptimizer" and r["steps"] == 6 and r["micro_steps"] == 12
    clip, rest = split_clipping(r)
    assert not rest, f"syncs in the training step: {rest}"
    assert sum(n for _, n in clip) == r["steps"], clip


def test_without_clipping_the_step_makes_no_sync_at_all(probed):
    r = probed["no-clipping"]
    assert r["events"] == [], r["events"]


def test_counter_catches_the_nonzero_head(probed):
    """The head on the masked rows found by nonzero() (the CPU default) syncs once per micro-step: the
    counter sees it, so the tests above can fail."""
    r = probed["nonzero-head"]
    _, rest = split_clipping(r)
    assert len(rest) == 1 and rest[0][1] == r["micro_steps"], rest
    assert "aten.nonzero" in rest[0][0] and "tinydnabert/pretrain/model.py" in rest[0][0]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: the driver's own sync check")
def test_on_a_gpu_the_driver_sees_only_the_clipping_sync(tmp_path, hg38_shards):
    """torch.cuda.set_sync_debug_mode('warn') around the same loop: the ground truth (it sees every blocking
    copy and synchronize, including a bare .to() that the CPU-side counter cannot judge)."""
    res = probe(tmp_path, hg38_shards, ["shipped", "no-clipping"], cuda_debug=True)
    assert res["shipped"]["device"].startswith("cuda")
    assert res["no-clipping"]["cuda_warnings"] == [], res["no-clipping"]["cuda_warnings"]
    assert res["no-clipping"]["events"] == [], res["no-clipping"]["events"]
    assert len(res["shipped"]["cuda_warnings"]) == res["shipped"]["steps"], res["shipped"]["cuda_warnings"]


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

"""Host-device syncs in a training step: none, but the one DeepSpeed's gradient clipping makes per optimizer step.

The counter (tinydnabert/pretrain/syncs.py) is checked on plain tensors first, then around the real loop
(tests/sync_probe.py: train.setup + fit, a real DeepSpeed engine from ds_configs/zero1.json, world size 1, a
tiny model, real hg38 shards), with log, eval and save steps uncounted. The engine runs in a subprocess:
it initialises torch.distributed, which must not leak into this test process (a Trainer would turn DDP).
On a GPU the same loop runs under torch.cuda.set_sync_debug_mode (the `gpu` tests at the end).
"""

from __future__ import annotations

import pytest
import torch
from sync_probe import probe, split_clipping  # tests/sync_probe.py

from tinydnabert.pretrain.syncs import SyncCounter


def test_counter_sees_every_kind_of_host_read():
    x = torch.arange(6.0)
    with SyncCounter() as c:
        x[0].item()
        x.tolist()
        bool(x[1])
        float(x[2])
        int(x[3])
        x.nonzero()
        x[x > 2]
        x.numpy()
        x.cpu()
        x.to("cpu")
        f"{x[0]:.1f}"
    kinds = [e.what for e in c.events]
    assert kinds.count("aten._local_scalar_dense.default") == 5  # item, bool, float, int, format
    assert {"Tensor.tolist", "Tensor.numpy", "Tensor.cpu", "Tensor.to (host)", "aten.nonzero.default"} <= set(kinds)
    assert any("boolean mask" in k for k in kinds)
    assert all("test_syncs.py" in e.where for e in c.events), c.report()


def test_counter_ignores_device_work_and_host_inputs():
    x = torch.randn(4, 8, requires_grad=True)
    batch = {"input_ids": torch.ones(2, 3, dtype=torch.long)}
    device = torch.device("cpu")  # stands for the accelerator: a bare .to(device) is a host-to-device copy
    with SyncCounter() as c:
        loss = (x @ x.T).softmax(-1).sum()
        loss.backward()
        acc = torch.zeros(2, dtype=torch.float64)
        acc += torch.stack([loss.detach().double(), (x > 0).sum().double()])
        batch["input_ids"].to(device, non_blocking=True)
        with c.paused():
            acc.tolist()
        for b in c.host_batches(iter([batch])):
            c.host(b["input_ids"]).numpy()
    assert not c.events, c.report()


@pytest.fixture(scope="module")
def probed(tmp_path_factory, hg38_shards):
    return probe(tmp_path_factory.mktemp("syncs"), hg38_shards, ["shipped", "no-clipping", "nonzero-head"])


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

"""The host-device sync counter (tinydnabert/pretrain/syncs.py) on plain tensors: it sees every kind of host read
and nothing else. Around the real training loop (a DeepSpeed engine: the slow tier) it is used by
tests/integration/test_syncs_deepspeed.py.
"""

from __future__ import annotations

import torch

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

"""The GPU recipe end to end on a CPU: ds_configs/zero1.json itself (bf16, ZeRO-1, FusedAdam, clipping, the
sync-free settings), only its batch shrunk, through the real launcher with one rank, a tiny model and real hg38
shards; then its export, which must hold the fp32 master weights and not the rounded bf16 module.

DeepSpeed's bf16 ZeRO-1 runs on its CPU accelerator (bf16 matmuls there are ~2.5x slower than fp32, so this
is a correctness run, not a speed one). The session's fp32 `reference_run` (2 ranks, ZeRO-1: its masters in two
partitions) checks that an fp32 export is unchanged.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch

from tests.helpers import MODEL_FLAGS, launch_ranks, wait

STEPS = 12
FLAGS = MODEL_FLAGS + ["--seq-len", "128", "--num-workers", "1", "--val-batches", "1", "--log-interval", "2",
                       "--eval-interval", "0", "--save-interval", str(STEPS), "--max-steps", str(STEPS)]
LOSS = re.compile(r"^step (\d{6})/\d{6} \| loss (\S+) \|", re.M)


@pytest.fixture(scope="module")
def bf16_run(tmp_path_factory, hg38_shards) -> tuple[Path, str]:
    from tinydnabert.pretrain import ds_config

    tmp = tmp_path_factory.mktemp("bf16")
    # the shipped file, only the batch shrunk: 8 rows = 4 x 2 accumulation, a short warmup to lr 2e-3
    ds = ds_config.derive(ds_config.shipped("zero1.json"), batch=8, micro=4, lr=2e-3, warmup=3, steps=40)
    (tmp / "ds.json").write_text(json.dumps(ds, indent=2))
    # --masked-per-row: the GPU path's sync-free head too (128-token rows: 19 chosen on average, sd 4)
    log = tmp / "log.txt"
    text = wait(launch_ranks(1, ["--deepspeed_config", str(tmp / "ds.json"), "--data", str(hg38_shards), "--out",
                                 str(tmp / "run"), *FLAGS, "--masked-per-row", "40"], log), log, timeout=300)
    return tmp / "run", text


def _export_weights(run: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(run / "export" / "model.safetensors"))


def test_bf16_run_finishes_with_finite_falling_loss(bf16_run):
    run, log = bf16_run
    assert "| bf16 |" in log and "ZeRO 1" in log
    losses = [float(x) for _, x in LOSS.findall(log)]
    assert len(losses) == STEPS // 2 and all(math.isfinite(x) for x in losses), log[-3000:]
    assert losses[-1] < losses[0], losses
    assert (run / "checkpoints" / "step00000012" / "bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt").is_file()


def test_bf16_export_holds_the_fp32_masters_not_the_rounded_module(bf16_run):
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    from tinydnabert.pretrain import checkpoint

    run, _ = bf16_run
    tag = checkpoint.resolve(run)
    # DeepSpeed's own reader of the masters (a file we just wrote, so its weights_only=False is fine here)
    masters = {k.removeprefix(checkpoint.OBJECTIVE_PREFIX): v
               for k, v in get_fp32_state_dict_from_zero_checkpoint(str(tag.parent), tag=tag.name).items()}
    rounded = checkpoint.load_module_state(tag)  # the bf16 module, upcast
    exported = _export_weights(run)
    assert exported and set(exported) <= set(masters)
    for name, w in exported.items():
        assert w.dtype == torch.float32 and torch.equal(w, masters[name]), name
    differ = [n for n, w in exported.items() if not torch.equal(w, rounded[n])]
    assert len(differ) > len(exported) // 2, "the export is the rounded bf16 module, not the masters"
    # ... and by no more than bf16 rounding (8 significant bits)
    for n in differ:
        assert torch.allclose(rounded[n], exported[n], rtol=2**-8, atol=1e-30), n


def test_fp32_export_is_unchanged_the_module_weights(reference_run):
    from tinydnabert.pretrain import checkpoint

    run, _ = reference_run
    tag = checkpoint.resolve(run)
    module = checkpoint.load_module_state(tag)  # what the export took before the masters existed
    exported = _export_weights(run)
    assert exported and all(torch.equal(w, module[n]) for n, w in exported.items())
    # for fp32 the masters are the module's values too: the reader agrees with both
    masters = checkpoint.load_master_weights(tag)
    assert all(torch.equal(masters[n], w) for n, w in exported.items())

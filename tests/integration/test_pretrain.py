"""Pretraining through the real DeepSpeed launcher: 2 ranks on CPU, a tiny model, shards of the real genome.

The runs are the session's (tests/integration/conftest.py), shared with other modules:
  * `reference_run`: 30 uninterrupted steps (loss, TensorBoard, console, run dir, export, ranks in step);
  * `resumed_run`: `killed_run` (SIGKILLed after its first checkpoint, step 5) resumed here as two simulated
    nodes (two launchers, --no_ssh --node_rank 0/1), so it also shows multi-node start-up, disjoint shards
    and ranks in step, and that a resume at step 5 is bit-exact;
  * bad input is checked in-process, before any process group exists: tests/unit/test_pretrain_inputs.py.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys

import pytest
import torch

from tests.helpers import REFERENCE_STEPS as STEPS
from tests.helpers import REPO, RUN_FLAGS, child_env, free_port, launch, losses, scalars, tiny_ds_config, wait

REQUIRED_SCALARS = {"train/loss", "train/lr", "train/grad_norm", "val/loss", "val/mlm_accuracy",
                    "perf/tokens_per_sec", "perf/samples_per_sec", "perf/mfu", "perf/data_wait_pct",
                    "mem/max_rss_gib"}
LINE = re.compile(r"^step (\d{6})/(\d{6}) \| loss (\d+\.\d{4}) \| lr \d\.\de[-+]\d\d \| \d+ ms \| "
                  r"[\d.]+k tok/s \| mfu [\d.]+% \| data wait [\d.]+% \| grad norm [\d.]+$", re.M)


@pytest.fixture(scope="module")
def resumed_run(tmp_path_factory, killed_run, hg38_shards, tiny_ds):
    """A copy of `killed_run`, resumed to step 30 on two simulated nodes."""
    killed, killed_at = killed_run
    root = tmp_path_factory.mktemp("resumed")
    run = shutil.copytree(killed, root / "run")
    before = {p.name for p in (run / "tensorboard" / "pretrain").iterdir()}
    hostfile = root / "hostfile"
    hostfile.write_text("node0 slots=1\nnode1 slots=1\n")
    port = str(free_port())
    common = ["--deepspeed_config", str(tiny_ds), "--data", str(hg38_shards), "--out", str(run), *RUN_FLAGS]
    nodes = [launch(["--hostfile", str(hostfile), "--no_ssh", "--node_rank", str(r), "--master_addr", "127.0.0.1",
                     "--master_port", port], common + ["--max-steps", str(STEPS), "--resume"], root / f"node{r}.txt")
             for r in (0, 1)]
    logs = [wait(p, root / f"node{r}.txt", timeout=300) for r, p in enumerate(nodes)]
    new_events = [p for p in (run / "tensorboard" / "pretrain").iterdir() if p.name not in before]
    return run, killed_at, logs, new_events


# ------------------------------------------------------------------------------------------------ one run


@pytest.mark.timeout(600)
def test_loss_falls_and_console_lines(reference_run):
    run, log = reference_run
    lines = LINE.findall(log)
    assert [int(s) for s, _, _ in lines] == list(range(1, STEPS + 1))
    assert all(int(total) == STEPS for _, total, _ in lines)
    losses = [float(v) for _, _, v in lines]
    assert losses[0] == pytest.approx(math.log(256), abs=0.3)  # untrained: uniform over the vocabulary
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.3
    assert "global batch 16 = micro 4 x accumulation 2 x 2 ranks = 2,048 tokens" in log
    assert "121,024 parameters" in log


@pytest.mark.timeout(600)
def test_tensorboard_holds_every_scalar(reference_run):
    run, _ = reference_run
    (events,) = list((run / "tensorboard" / "pretrain").glob("events.out.tfevents.*"))  # rank 0 only writes
    s = scalars(events)
    assert REQUIRED_SCALARS <= set(s)
    assert sorted(s["train/loss"]) == list(range(1, STEPS + 1))
    assert sorted(s["val/loss"]) == [10, 20, 30]
    assert s["val/loss"][30] < s["val/loss"][10]
    assert 0 < s["val/mlm_accuracy"][30] < 1
    lr = s["train/lr"]
    # linear warmup from warmup_min_lr 0 over 5 steps to 2e-3, then linear decay towards 0 at step 40
    assert lr[1] == 0 and max(lr.values()) == pytest.approx(2e-3, rel=1e-6) == lr[6]
    assert all(lr[i] < lr[i + 1] for i in range(1, 6)) and all(lr[i] > lr[i + 1] for i in range(6, STEPS))
    assert all(v > 0 for v in s["perf/tokens_per_sec"].values()) and all(v > 0 for v in s["perf/mfu"].values())
    assert all(0 <= v <= 100 for v in s["perf/data_wait_pct"].values())
    assert all(math.isfinite(v) and v > 0 for v in s["train/grad_norm"].values())


@pytest.mark.timeout(600)
def test_run_dir_is_a_reproducibility_bundle(reference_run):
    run, _ = reference_run
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["model"]["hidden_size"] == 64 and cfg["model"]["pad_token_id"] == 1 and cfg["data"]["seq_len"] == 128
    ds = json.loads((run / "ds_config.json").read_text())
    batch = (ds["train_batch_size"], ds["train_micro_batch_size_per_gpu"], ds["gradient_accumulation_steps"])
    assert batch == (16, 4, 2)
    env = json.loads((run / "env.json").read_text())
    assert env["world_size"] == 2 and env["packages"]["deepspeed"] and env["packages"]["torch"]
    assert env["git_sha"] is None or re.fullmatch(r"[0-9a-f]{40}", env["git_sha"])
    ckpts = run / "checkpoints"
    assert (ckpts / "latest").read_text().strip() == "step00000030"
    # keep the last 2 complete checkpoints (one every 5 steps)
    assert sorted(p.name for p in ckpts.glob("step*")) == ["step00000025", "step00000030"]
    tag = ckpts / "step00000030"
    marker = json.loads((tag / "tinydnabert_checkpoint.json").read_text())
    assert marker["step"] == 30 and marker["tokens_seen"] == 30 * 16 * 128 and marker["world_size"] == 2
    assert marker["batches_consumed_per_rank"] == 60
    assert sorted(p.name for p in (tag / "rng").iterdir()) == ["rank00000.pt", "rank00001.pt"]
    assert (tag / "tokenizer" / "tokenizer.json").is_file()


@pytest.mark.timeout(600)
def test_ranks_stay_in_step_and_read_disjoint_shards(reference_run):
    run, _ = reference_run
    r0, r1 = (json.loads((run / "ranks" / f"rank{r:05d}.json").read_text()) for r in (0, 1))
    assert r0["step"] == r1["step"] == STEPS and r0["batches_consumed"] == r1["batches_consumed"] == 2 * STEPS
    assert r0["weights_checksum"] == r1["weights_checksum"]
    assert r0["epoch0_train_shards"] and not set(r0["epoch0_train_shards"]) & set(r1["epoch0_train_shards"])


@pytest.mark.timeout(600)
def test_export_loads_with_plain_transformers_and_matches_engine_logits(reference_run):
    run, _ = reference_run
    export = run / "export"
    assert (export / "model.safetensors").is_file() and not list(export.glob("*.bin"))
    code = f"""
import sys, torch
from transformers import AutoModelForMaskedLM, AutoTokenizer
probe = torch.load({str(run / 'final_logits.pt')!r}, weights_only=True)
model = AutoModelForMaskedLM.from_pretrained({str(export)!r}).eval()
tok = AutoTokenizer.from_pretrained({str(export)!r})
assert type(model).__name__ == "RobertaForMaskedLM", type(model)
assert (tok.pad_token_id, tok.mask_token_id, model.config.pad_token_id) == (1, 4, 1)
with torch.no_grad():
    logits = model(input_ids=probe["input_ids"]).logits
err = (logits - probe["logits"]).abs().max().item()
assert err < 1e-5, err
ids = tok("ACGTACGTTTGACCA")["input_ids"]
assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
assert not any(m.startswith("tinydnabert") for m in sys.modules), "needed project code"
print("max abs logit difference", err)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180, cwd=export)
    assert out.returncode == 0, out.stderr[-3000:]


# ------------------------------------------------------------------------------- kill, resume, two nodes


@pytest.mark.timeout(900)
def test_sigkilled_run_resumes_with_the_same_losses(reference_run, resumed_run):
    """SIGKILLed after its step-5 checkpoint, resumed on two nodes: every later loss equals the uninterrupted run's
    to the bit, and so do the final weights. Step 6 is one where DeepSpeed's CPU Adam, restarted, computes beta2^6
    with pow() and its running product differs in the last bit: without checkpoint._replay_cpu_adam_steps the
    losses of steps 7-10 were 4.8e-7 off."""
    ref_run, _ = reference_run
    run, killed_at, logs, new_events = resumed_run
    assert killed_at == 5
    assert f"resumed from {run / 'checkpoints' / f'step{killed_at:08d}'} at step {killed_at}" in logs[0]
    (resumed_events,) = new_events
    ref, res = losses(ref_run), scalars(resumed_events)["train/loss"]
    assert sorted(res) == list(range(killed_at + 1, STEPS + 1))
    assert [res[s] for s in sorted(res)] == [ref[s] for s in sorted(res)]  # bit-identical losses
    ref_marker = json.loads((ref_run / "checkpoints" / "step00000030" / "tinydnabert_checkpoint.json").read_text())
    marker = json.loads((run / "checkpoints" / "step00000030" / "tinydnabert_checkpoint.json").read_text())
    assert marker["tokens_seen"] == ref_marker["tokens_seen"]
    assert marker["batches_consumed_per_rank"] == ref_marker["batches_consumed_per_rank"]
    ref_w = torch.load(ref_run / "checkpoints" / "step00000030" / "mp_rank_00_model_states.pt", weights_only=True)
    w = torch.load(run / "checkpoints" / "step00000030" / "mp_rank_00_model_states.pt", weights_only=True)
    assert all(torch.equal(ref_w["module"][k], w["module"][k]) for k in ref_w["module"])


def test_two_simulated_nodes_stay_in_step_on_disjoint_shards(resumed_run):
    run, _, logs, _ = resumed_run
    assert "nnodes=2, num_local_procs=1, node_rank=0" in logs[0]
    assert "nnodes=2, num_local_procs=1, node_rank=1" in logs[1]
    assert "global batch 16 = micro 4 x accumulation 2 x 2 ranks" in logs[0]
    r0, r1 = (json.loads((run / "ranks" / f"rank{r:05d}.json").read_text()) for r in (0, 1))
    assert r0["world_size"] == r1["world_size"] == 2 and r0["step"] == r1["step"] == STEPS
    assert r0["weights_checksum"] == r1["weights_checksum"]
    assert not set(r0["epoch0_train_shards"]) & set(r1["epoch0_train_shards"])


# ------------------------------------------------------------------------------------------ bad input
# (what fails before any process group exists is checked in-process: tests/unit/test_pretrain_inputs.py; a
# corrupt shard under the 2-rank launcher: tests/integration/test_faults.py)


@pytest.mark.timeout(600)
def test_resume_with_another_global_batch_is_refused(tmp_path, reference_run, hg38_shards):
    """`python launch/pretrain.py` (no launcher) runs one process. Another world size resumes
    (tests/integration/test_elastic.py), but another global batch would change which rows make up a step and
    the LR schedule's meaning, so it is refused with a message, not run silently."""
    run, _ = reference_run
    copy = shutil.copytree(run, tmp_path / "run")
    ds8 = tiny_ds_config(tmp_path / "ds8.json", batch=8)
    r = subprocess.run([sys.executable, str(REPO / "launch" / "pretrain.py"), "--deepspeed_config", str(ds8),
                        "--data", str(hg38_shards), "--out", str(copy), "--max-steps", "40", "--resume", *RUN_FLAGS],
                       capture_output=True, text=True, cwd=tmp_path, env=child_env(one_process=True), timeout=300)
    assert r.returncode == 2, r.stderr[-3000:]
    assert "saved with a global batch of 16 rows, resuming with 8; set train_batch_size 16" in r.stderr

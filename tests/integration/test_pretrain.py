"""Pretraining through the real DeepSpeed launcher: 2 ranks on CPU, a tiny model, shards of the real genome.

Three launcher sessions are shared by all tests here (each launch costs ~15 s of start-up; the first one
on a fresh machine also JIT-compiles DeepSpeed's shm comm op and CPU FusedAdam, ~2 min, cached after):
  * `reference_run`: 30 uninterrupted steps (loss, TensorBoard, console, run dir, export, ranks in step);
  * `resumed_run`: the same run SIGKILLed after its first checkpoint, then resumed -- as two simulated
    nodes (two launchers, --no_ssh --node_rank 0/1), so it also shows multi-node start-up, disjoint shards
    and ranks in step;
  * bad input is checked in-process (it must fail before any process group exists).
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tinydnabert.errors import InputError

REPO = Path(__file__).resolve().parents[2]
STEPS = 30
MODEL_FLAGS = ["--hidden-size", "64", "--num-hidden-layers", "2", "--num-attention-heads", "2",
               "--intermediate-size", "128"]
RUN_FLAGS = MODEL_FLAGS + ["--seq-len", "128", "--num-workers", "1", "--val-batches", "2", "--log-interval", "1",
                           "--eval-interval", "10", "--save-interval", "10", "--keep-checkpoints", "2"]
REQUIRED_SCALARS = {"train/loss", "train/lr", "train/grad_norm", "val/loss", "val/mlm_accuracy",
                    "perf/tokens_per_sec", "perf/samples_per_sec", "perf/mfu", "perf/data_wait_pct",
                    "mem/max_rss_gib"}
LINE = re.compile(r"^step (\d{6})/(\d{6}) \| loss (\d+\.\d{4}) \| lr \d\.\de[-+]\d\d \| \d+ ms \| "
                  r"[\d.]+k tok/s \| mfu [\d.]+% \| data wait [\d.]+% \| grad norm [\d.]+$", re.M)


def tiny_ds_config(path: Path) -> Path:
    """The CPU config with a small batch and a 40-step schedule; everything else as shipped."""
    from tinydnabert.pretrain import ds_config

    # 4 x 2 accumulation x 2 ranks
    cfg = ds_config.derive(ds_config.shipped(ds_config.CPU_CONFIG), batch=16, micro=4, lr=2e-3, warmup=5, steps=40)
    path.write_text(json.dumps(cfg, indent=2))
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launcher_env() -> dict[str, str]:
    # 2 ranks on a 2-core machine: one thread each, or they fight over the cores. PYTHONPATH: the ranks
    # import this checkout's tinydnabert, not whichever one `pip install -e` last pointed at.
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}


def launch(launcher_args: list[str], args: list[str], log: Path, cwd: Path) -> subprocess.Popen:
    cmd = ["deepspeed", *launcher_args, str(REPO / "launch" / "pretrain.py"), *args]
    return subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=cwd, env=launcher_env(),
                            start_new_session=True)  # own process group: SIGKILL reaches every rank


def wait(proc: subprocess.Popen, log: Path, timeout: float = 400) -> str:
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(f"launcher hung:\n{log.read_text()[-3000:]}")
    text = log.read_text()
    assert proc.returncode == 0, text[-4000:]
    return text


def scalars(event_path: Path) -> dict[str, dict[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(event_path), size_guidance={"scalars": 0})
    ea.Reload()
    return {tag: {e.step: e.value for e in ea.Scalars(tag)} for tag in ea.Tags()["scalars"]}


@pytest.fixture(scope="session")
def ds_config(tmp_path_factory) -> Path:
    return tiny_ds_config(tmp_path_factory.mktemp("ds") / "tiny-zero1-cpu-fp32.json")


@pytest.fixture(scope="session")
def reference_run(tmp_path_factory, hg38_shards, ds_config):
    root = tmp_path_factory.mktemp("reference")
    run = root / "run"
    proc = launch(["--num_gpus", "2", "--master_port", str(free_port())],
                  ["--deepspeed_config", str(ds_config), "--data", str(hg38_shards), "--out", str(run),
                   "--max-steps", str(STEPS), *RUN_FLAGS], root / "log.txt", root)
    return run, wait(proc, root / "log.txt", timeout=420)


@pytest.fixture(scope="session")
def resumed_run(tmp_path_factory, hg38_shards, ds_config):
    """Killed with SIGKILL once its first checkpoint is complete, then resumed on two simulated nodes."""
    root = tmp_path_factory.mktemp("resumed")
    run = root / "run"
    common = ["--deepspeed_config", str(ds_config), "--data", str(hg38_shards), "--out", str(run), *RUN_FLAGS]
    # to the schedule's end (40), so the run is still going when the test kills it after step 10
    proc = launch(["--num_gpus", "2", "--master_port", str(free_port())], common + ["--max-steps", "40"],
                  root / "killed.txt", root)
    latest = run / "checkpoints" / "latest"
    deadline = time.time() + 400
    while not latest.is_file():
        if proc.poll() is not None or time.time() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail("run ended before its first checkpoint:\n" + (root / "killed.txt").read_text()[-3000:])
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = int(latest.read_text().strip()[4:])
    before = {p.name for p in (run / "tensorboard" / "pretrain").iterdir()}

    hostfile = root / "hostfile"
    hostfile.write_text("node0 slots=1\nnode1 slots=1\n")
    port = str(free_port())
    nodes = [launch(["--hostfile", str(hostfile), "--no_ssh", "--node_rank", str(r), "--master_addr", "127.0.0.1",
                     "--master_port", port], common + ["--max-steps", str(STEPS), "--resume"],
                    root / f"node{r}.txt", root) for r in (0, 1)]
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
    # keep the last 2 complete checkpoints
    assert sorted(p.name for p in ckpts.glob("step*")) == ["step00000020", "step00000030"]
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
    ref_run, _ = reference_run
    run, killed_at, logs, new_events = resumed_run
    assert 0 < killed_at < STEPS
    assert f"resumed from {run / 'checkpoints' / f'step{killed_at:08d}'} at step {killed_at}" in logs[0]
    (ref_events,) = list((ref_run / "tensorboard" / "pretrain").glob("events.out.tfevents.*"))
    (resumed_events,) = new_events
    ref, res = scalars(ref_events)["train/loss"], scalars(resumed_events)["train/loss"]
    assert sorted(res) == list(range(killed_at + 1, STEPS + 1))
    assert [res[s] for s in sorted(res)] == [ref[s] for s in sorted(res)]  # bit-identical losses
    ref_marker = json.loads((ref_run / "checkpoints" / "step00000030" / "tinydnabert_checkpoint.json").read_text())
    marker = json.loads((run / "checkpoints" / "step00000030" / "tinydnabert_checkpoint.json").read_text())
    assert marker["tokens_seen"] == ref_marker["tokens_seen"]
    assert marker["batches_consumed_per_rank"] == ref_marker["batches_consumed_per_rank"]
    ref_w = torch.load(ref_run / "checkpoints" / "step00000030" / "mp_rank_00_model_states.pt", weights_only=True)
    w = torch.load(run / "checkpoints" / "step00000030" / "mp_rank_00_model_states.pt", weights_only=True)
    assert all(torch.equal(ref_w["module"][k], w["module"][k]) for k in ref_w["module"])


@pytest.mark.timeout(900)
def test_resume_at_a_step_where_cpu_adam_would_drift_is_bit_exact(tmp_path, hg38_shards, ds_config):
    """Stopped at step 5 (--max-steps), resumed to 10 on 1 rank: every loss equals the uninterrupted run's.
    Step 6 is one where DeepSpeed's CPU Adam, restarted, computes beta2^6 with pow() and its running product
    differs in the last bit: without checkpoint._replay_cpu_adam_steps the losses of steps 7-10 were 4.8e-7 off."""
    def run(out: Path, steps: int, *extra: str) -> None:
        log = tmp_path / f"{out.name}-{steps}.txt"
        wait(launch(["--num_gpus", "1", "--master_port", str(free_port())],
                    ["--deepspeed_config", str(ds_config), "--data", str(hg38_shards), "--out", str(out),
                     "--max-steps", str(steps), *RUN_FLAGS, "--save-interval", "5", "--no-export", *extra],
                    log, tmp_path), log)

    ref, resumed = tmp_path / "ref", tmp_path / "resumed"
    run(ref, 10)
    run(resumed, 5)
    run(resumed, 10, "--resume")
    from test_elastic import losses  # tests/integration on sys.path

    want, got = losses(ref), losses(resumed)
    assert sorted(got) == list(range(1, 11)) and got == want


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


def _pretrain(tmp_path, data, ds=None, **kw):
    from tinydnabert.pretrain.data import DataConfig
    from tinydnabert.pretrain.model import ModelConfig
    from tinydnabert.pretrain.train import PretrainConfig, pretrain

    ds = ds or tiny_ds_config(tmp_path / "ds.json")
    return pretrain(PretrainConfig(data=str(data), out=str(tmp_path / "run"), **kw), ModelConfig.tiny(), str(ds),
                    DataConfig(seq_len=128, num_workers=0))


def test_missing_or_empty_shards_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(InputError, match="shards directory not found.*tinydnabert preprocess"):
        _pretrain(tmp_path, tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no manifest"):
        _pretrain(tmp_path, tmp_path / "empty")


def test_truncated_shard_and_tokenizer_mismatch(tmp_path, hg38_shards, monkeypatch):
    import shutil

    monkeypatch.setenv("WORLD_SIZE", "2")
    data = tmp_path / "shards"
    shutil.copytree(hg38_shards, data)
    shard = sorted((data / "train").glob("shard-*.tar"))[3]
    shard.write_bytes(shard.read_bytes()[:1000])
    with pytest.raises(InputError, match=f"{shard.name}.*truncated"):
        _pretrain(tmp_path, data)
    shutil.rmtree(data)
    shutil.copytree(hg38_shards, data)
    tok = data / "tokenizer" / "tokenizer.json"
    tok.write_text(tok.read_text().replace('"<unk>"', '"<UNK>"', 1))
    with pytest.raises(InputError, match="tokenizer sha256"):
        _pretrain(tmp_path, data)


def test_batch_not_divisible_by_ranks_fails_before_start(tmp_path, hg38_shards, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "3")
    with pytest.raises(InputError, match=r"not divisible by train_micro_batch_size_per_gpu 4 x 3 ranks"):
        _pretrain(tmp_path, hg38_shards)


def test_existing_run_needs_resume(tmp_path, hg38_shards, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    (tmp_path / "run" / "checkpoints" / "step00000010").mkdir(parents=True)
    with pytest.raises(InputError, match="already holds checkpoints; pass --resume"):
        _pretrain(tmp_path, hg38_shards)
    with pytest.raises(InputError, match="not a tinydnabert checkpoint"):
        _pretrain(tmp_path, hg38_shards, resume="latest")


def test_non_finite_loss_stops_with_recovery_advice(tmp_path):
    from tinydnabert.pretrain.metrics import check_finite

    check_finite(4.2, 10, tmp_path)
    for bad in (float("nan"), float("inf")):
        with pytest.raises(InputError, match="non-finite training loss .* at step 10.*--resume"):
            check_finite(bad, 10, tmp_path)


@pytest.mark.timeout(300)
def test_corrupt_shard_under_the_launcher_fails_every_rank_without_hanging(tmp_path, hg38_shards, ds_config):
    """A shard that passes the size check but cannot be read: the rank reading it raises (in its data
    worker), exits 2, and the launcher stops the other rank, which would otherwise wait in a collective."""
    import shutil

    data = tmp_path / "shards"
    shutil.copytree(hg38_shards, data)
    for shard in (data / "train").glob("shard-*.tar"):
        raw = bytearray(shard.read_bytes())
        raw[:512] = b"\x07" * 512  # clobber the first tar header; the size stays whole 512-byte blocks
        shard.write_bytes(bytes(raw))
    proc = launch(["--num_gpus", "2", "--master_port", str(free_port())],
                  ["--deepspeed_config", str(ds_config), "--data", str(data), "--out", str(tmp_path / "run"),
                   "--max-steps", "5", *RUN_FLAGS], tmp_path / "log.txt", tmp_path)
    try:
        proc.wait(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("launcher hung on a corrupt shard")
    log = (tmp_path / "log.txt").read_text()
    assert proc.returncode != 0
    # the first bytes differ from those preprocess wrote: the shard's sha256 (manifest) catches it first
    assert re.search(r"error: .*shard-\d{6}\.tar: sha256 \w+\.\.\. differs from the manifest", log), log[-3000:]
    assert not (tmp_path / "run" / "checkpoints" / "latest").exists()


@pytest.mark.timeout(600)
def test_resume_with_another_global_batch_is_refused(tmp_path, reference_run, hg38_shards):
    """`python launch/pretrain.py` (no launcher) runs one process. Another world size resumes
    (tests/integration/test_elastic.py), but another global batch would change which rows make up a step and
    the LR schedule's meaning, so it is refused with a message, not run silently."""
    import shutil

    from tinydnabert.pretrain import ds_config as ds_mod

    run, _ = reference_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    ds8 = tmp_path / "ds8.json"
    ds8.write_text(json.dumps(ds_mod.derive(ds_mod.shipped(ds_mod.CPU_CONFIG), batch=8, micro=4, lr=2e-3, warmup=5,
                                            steps=40)))
    env = {k: v for k, v in launcher_env().items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    r = subprocess.run([sys.executable, str(REPO / "launch" / "pretrain.py"), "--deepspeed_config", str(ds8),
                        "--data", str(hg38_shards), "--out", str(copy), "--max-steps", "40", "--resume", *RUN_FLAGS],
                       capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert r.returncode == 2, r.stderr[-3000:]
    assert "saved with a global batch of 16 rows, resuming with 8; set train_batch_size 16" in r.stderr

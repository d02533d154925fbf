"""Faults injected into runs: every one is detected with a clear message and exit status 2, none is silent,
nothing is left half-written.

    shards     a flipped bit in a shard that only rank 1 reads, under the 2-rank launcher
    checkpoint a truncated file: refused by resume, export and `tinydnabert verify`
    disk full  a tmpfs that fills during a checkpoint save
    concurrent two pretraining runs into one --out (refused), two single-process pretraining runs on one
               machine (both work: free ports), a run directory in use under the 2-rank launcher

Pretraining runs are launcher-less (`python launch/pretrain.py`, world size 1) and tiny, except those whose
point is the launcher. The faults that need no run (corrupt shards, preprocess killed, full or shared):
tests/unit/test_shard_faults.py.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
from pathlib import Path

import pytest

from tests.helpers import (
    MODEL_FLAGS,
    finish,
    flip,
    kill,
    launch_ranks,
    members,
    pretrain_cmd,
    run_cli,
    start,
    tmpfs,
    wait_for,
)
from tinydnabert import formats
from tinydnabert.pretrain.data import DataConfig, build_train_loader, group_of

# A console line every 5 steps, a checkpoint every 10 and no --log-rows: after the disk is filled (between the
# step-10 and step-20 saves) the checkpoint is the first thing written.
FLAGS = MODEL_FLAGS + ["--seq-len", "128", "--num-workers", "1", "--val-batches", "2", "--log-interval", "5",
                       "--eval-interval", "10", "--save-interval", "10", "--keep-checkpoints", "2"]


def cmd(ds: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return pretrain_cmd(ds, data, out, *extra, flags=FLAGS)


@pytest.fixture
def shards(tmp_path, hg38_shards) -> Path:
    return Path(shutil.copytree(hg38_shards, tmp_path / "shards"))


@pytest.mark.timeout(300)
def test_flipped_bit_under_the_launcher_stops_every_rank(tmp_path, shards, tiny_ds):
    """One bad shard, read only by rank 1: rank 1 exits 2 naming it, and rank 0 does not hang."""
    rank1 = build_train_loader(shards, DataConfig(seq_len=128, num_workers=1), micro_batch_size=4, rank=1,
                               world_size=2, global_batch=16)  # the tiny ds config: 16 = 4 x 2 x 2 ranks
    rank0_lanes = build_train_loader(shards, DataConfig(seq_len=128), 4, 0, 2, global_batch=16).layout.rank_lanes()
    lane = rank1.layout.rank_lanes()[0]
    assert lane not in rank0_lanes
    _, first_group = group_of(len(rank1.splits[0].shards), lane, rank1.cfg)  # read at rank 1's first step
    shard = formats.shard_paths(shards, "train")[first_group[0]]
    ids = next(m for m in members(shard) if m.name.endswith(".ids.u16"))
    flip(shard, ids.offset_data + 2, 0)
    proc = launch_ranks(2, ["--deepspeed_config", str(tiny_ds), "--data", str(shards), "--out", str(tmp_path / "run"),
                            "--max-steps", "5", *FLAGS], tmp_path / "log.txt")
    log = finish(proc, tmp_path / "log.txt", timeout=240)
    assert proc.returncode == 2, log[-3000:]
    assert f"error: {shard}: sha256" in log, log[-3000:]
    assert not (tmp_path / "run" / "checkpoints" / "latest").exists()


# ------------------------------------------------------------------------------- concurrent and in use

@pytest.fixture(scope="module")
def concurrent_runs(tmp_path_factory, hg38_shards, tiny_ds):
    """Run A into runA, SIGSTOPped once training (it holds its lock and its port); B into runA; C into runC,
    to its end while A is stopped; then A is continued to its end."""
    root = tmp_path_factory.mktemp("concurrent")
    a_log, b_log, c_log = root / "a.txt", root / "b.txt", root / "c.txt"
    a = start(cmd(tiny_ds, hg38_shards, root / "runA", "--max-steps", "20"), a_log)
    wait_for(lambda: "global batch" in a_log.read_text(), a, a_log, "started training")
    kill(a, signal.SIGSTOP)
    try:
        b = start(cmd(tiny_ds, hg38_shards, root / "runA", "--max-steps", "20"), b_log)
        b_text = finish(b, b_log, timeout=180)
        c = start(cmd(tiny_ds, hg38_shards, root / "runC", "--max-steps", "20"), c_log)
        c_text = finish(c, c_log, timeout=240)
    finally:
        kill(a, signal.SIGCONT)
    a_text = finish(a, a_log, timeout=240)
    return {"root": root, "a": (a, a_text), "b": (b, b_text), "c": (c, c_text)}


@pytest.mark.timeout(600)
def test_second_pretraining_run_into_one_out_is_refused(concurrent_runs, capsys):
    r = concurrent_runs
    a, a_text = r["a"]
    b, b_text = r["b"]
    assert b.returncode == 2, b_text[-3000:]
    assert f"error: {r['root'] / 'runA'} is in use by pid {a.pid} on {socket.gethostname()}" in b_text
    assert a.returncode == 0, a_text[-3000:]  # A, stopped while B tried, finished as if alone
    assert (r["root"] / "runA" / "checkpoints" / "latest").read_text().strip() == "step00000020"
    rc, out, err = run_cli(capsys, "verify", r["root"] / "runA")
    assert rc == 0, out + err


@pytest.mark.timeout(600)
def test_two_single_process_runs_on_one_machine_both_work(concurrent_runs):
    """A (stopped, holding its process group's port) and C ran at once: without the DeepSpeed launcher each
    picks a free port, where a fixed 29500 made the second die on EADDRINUSE."""
    c, c_text = concurrent_runs["c"]
    assert c.returncode == 0, c_text[-3000:]
    assert "EADDRINUSE" not in c_text and "address already in use" not in c_text.lower()


@pytest.mark.timeout(300)
def test_run_in_use_stops_every_rank_under_the_launcher(tmp_path, hg38_shards, tiny_ds):
    """2 ranks into a run directory held by another process (this one): rank 0 alone holds the answer, and
    every rank stops with it at once (none waits in a collective); nothing is written into the run."""
    from tinydnabert.io import OutputLock

    run = tmp_path / "run"
    with OutputLock(run):
        proc = launch_ranks(2, ["--deepspeed_config", str(tiny_ds), "--data", str(hg38_shards), "--out", str(run),
                                "--max-steps", "5", *FLAGS], tmp_path / "log.txt")
        log = finish(proc, tmp_path / "log.txt", timeout=240)
    assert proc.returncode == 2, log[-3000:]
    assert log.count(f"error: {run} is in use by pid {os.getpid()} on {socket.gethostname()}") == 2, log[-3000:]
    assert not run.exists()


@pytest.fixture(scope="module")
def finished_run(concurrent_runs) -> Path:
    """A run with two complete checkpoints (step 10 and step 20)."""
    return concurrent_runs["root"] / "runC"


@pytest.mark.timeout(300)
def test_truncated_checkpoint_file_is_refused_naming_the_previous_one(tmp_path, finished_run, hg38_shards, tiny_ds,
                                                                      capsys, one_process_env):
    from tinydnabert.app import cli
    from tinydnabert.pretrain import train

    run = Path(shutil.copytree(finished_run, tmp_path / "run"))
    ckpts = run / "checkpoints"
    bad = ckpts / "step00000020" / "mp_rank_00_model_states.pt"
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    prev = ckpts / "step00000010"

    rc, out, err = run_cli(capsys, "verify", run)
    assert rc == 2 and f"{bad}: " in out and "truncated or replaced" in out, out + err

    rc, _, err = run_cli(capsys, "export", run, tmp_path / "export")
    assert rc == 2
    assert f"error: {bad}: " in err and f"use the previous complete checkpoint {prev} instead" in err
    assert not (tmp_path / "export").exists() and not list(tmp_path.glob(".export.*"))

    # resume, in this process: the check runs before any process group exists
    rc = cli.run_stage(train, argparse.ArgumentParser(),
                       cmd(tiny_ds, hg38_shards, run, "--resume", "--max-steps", "30")[2:])
    err = capsys.readouterr().err
    assert rc == 2
    assert f"error: {bad}: " in err and f"use the previous complete checkpoint {prev} instead" in err
    assert "--resume " + str(prev) in err


# ------------------------------------------------------------------------------------------- disk full

@pytest.mark.timeout(300)
def test_disk_full_during_checkpoint_save_keeps_the_previous_one(tmp_path, hg38_shards, tiny_ds, capsys):
    with tmpfs(tmp_path / "small", "32m") as disk:
        run, log = disk / "run", tmp_path / "log.txt"
        proc = start(cmd(tiny_ds, hg38_shards, run, "--max-steps", "30", "--no-export"), log)
        latest = run / "checkpoints" / "latest"
        wait_for(latest.is_file, proc, log, "saved its first checkpoint")
        kill(proc, signal.SIGSTOP)
        try:
            with open(disk / "filler", "wb", buffering=0) as f:  # fill the disk before the step-20 save
                with contextlib.suppress(OSError):
                    while True:
                        f.write(bytes(1 << 16))
        finally:
            kill(proc, signal.SIGCONT)
        text = finish(proc, log)
        assert proc.returncode == 2, text[-3000:]
        assert "Traceback" not in text, text[-3000:]
        assert f"error: {run / 'checkpoints' / 'step00000020'}: no space left on device (about " in text
        assert "step00000010 is still the latest complete checkpoint" in text and "--resume" in text
        assert latest.read_text().strip() == "step00000010"
        assert not (run / "checkpoints" / "step00000020").exists()  # no half checkpoint
        rc, out, err = run_cli(capsys, "verify", run)
        assert rc == 0, out + err

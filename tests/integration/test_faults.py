"""Faults injected on real files: every one is detected with a clear message and exit status 2, none is
silent, nothing is left half-written.

    shards     a flipped bit in a token id, a flipped bit in the origin JSON, a zeroed 512-byte block
               mid-shard, a shard swapped with another of the same size, an id past the vocabulary
               (with the checksums gone, as in an older manifest), a flipped bit under the 2-rank launcher
    checkpoint a truncated file: refused by resume, export and `tinydnabert verify`
    disk full  a tmpfs that fills during preprocess, and during a checkpoint save
    killed     preprocess SIGKILLed: its temporary directory is removed by the next run
    concurrent two preprocess runs into one --out, two pretraining runs into one --out (refused), two
               single-process pretraining runs on one machine (both work: free ports)

The session fixture `hg38_shards` (real shards of a 2.3 Mbp hg38 slice) is copied before it is corrupted.
Pretraining runs are launcher-less (`python launch/pretrain.py`, world size 1) and tiny, except the one
whose point is the launcher.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
from test_pretrain import MODEL_FLAGS, free_port, launch, tiny_ds_config  # tests/integration is on sys.path

from tinydnabert import formats
from tinydnabert.app import cli
from tinydnabert.errors import InputError
from tinydnabert.pretrain.data import DataConfig, build_train_loader, group_of

REPO = Path(__file__).resolve().parents[2]
HG38 = "hg38_chr2_1-2333275.fa.gz"
CHR20 = "grch37_chr20.fa.gz"
RUN_FLAGS = MODEL_FLAGS + ["--seq-len", "128", "--num-workers", "1", "--val-batches", "2", "--log-interval", "5",
                           "--eval-interval", "10", "--save-interval", "10", "--keep-checkpoints", "2"]
SMALL_PREPROCESS = ["--vocab-size", "256", "--min-frequency", "2", "--samples-per-shard", "256",
                    "--val-fraction", "0.05", "--no-progress"]


def env() -> dict[str, str]:
    """Child processes import this checkout's tinydnabert, one thread each (2 shared cores)."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def pretrain_cmd(ds: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, str(REPO / "launch" / "pretrain.py"), "--deepspeed_config", str(ds), "--data", str(data),
            "--out", str(out), *RUN_FLAGS, *extra]


def start(cmd: list[str], log: Path) -> subprocess.Popen:
    env_ = {k: v for k, v in env().items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    return subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env_, cwd=log.parent,
                            start_new_session=True)  # own process group: signals reach its workers too


def finish(proc: subprocess.Popen, log: Path, timeout: float = 240) -> str:
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(f"hung:\n{log.read_text()[-3000:]}")
    return log.read_text()


def wait_for(cond, proc: subprocess.Popen, log: Path, what: str, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while not cond():
        if proc.poll() is not None or time.time() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail(f"never {what}:\n{log.read_text()[-3000:]}")
        time.sleep(0.02)


@contextlib.contextmanager
def tmpfs(path: Path, size: str):
    """A real small file system: tmpfs of `size` mounted at `path` (root only), unmounted after."""
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True,
                       text=True)
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs to fill ({r.stderr.strip() or r.returncode}): needs root or CAP_SYS_ADMIN")
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


@pytest.fixture
def shards(tmp_path, hg38_shards) -> Path:
    import shutil

    return Path(shutil.copytree(hg38_shards, tmp_path / "shards"))


@pytest.fixture(scope="module")
def ds(tmp_path_factory) -> Path:
    return tiny_ds_config(tmp_path_factory.mktemp("ds") / "tiny.json")


# ------------------------------------------------------------------------------------------------ shards

def members(shard: Path) -> list[tarfile.TarInfo]:
    with tarfile.open(shard) as t:
        return t.getmembers()


def flip(path: Path, offset: int, bit: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 1 << bit
    path.write_bytes(bytes(raw))


def train_shard(data: Path, i: int = 3) -> Path:
    return formats.shard_paths(data, "train")[i]


def read_all(data: Path) -> None:
    """Everything the training reader would read, through a DataLoader worker (the error travels back)."""
    loader = build_train_loader(data, DataConfig(seq_len=128, num_workers=1, shuffle=False), micro_batch_size=4)
    rows = sum(s.samples for s in loader.splits[0].shards)  # more batches than one epoch holds
    for _, _ in zip(range(rows), loader):
        pass


def _flip_token_id(data: Path) -> tuple[Path, str]:
    shard = train_shard(data)
    ids = next(m for m in members(shard) if m.name.endswith(".ids.u16"))
    flip(shard, ids.offset_data + 20, 0)  # lowest bit of the 11th id: another id inside the vocabulary
    return shard, "sha256 [0-9a-f]{12}\\.\\.\\. differs from the manifest"


def _flip_origin_json(data: Path) -> tuple[Path, str]:
    shard = train_shard(data)
    meta = next(m for m in members(shard) if m.name.endswith(".json"))
    raw = shard.read_bytes()[meta.offset_data: meta.offset_data + meta.size]
    flip(shard, meta.offset_data + raw.index(b'"start":') + 8, 0)  # a digit of "start" -> another digit
    return shard, "sha256 [0-9a-f]{12}\\.\\.\\. differs from the manifest"


def _zero_block(data: Path) -> tuple[Path, str]:
    shard = train_shard(data)
    raw = bytearray(shard.read_bytes())
    mid = len(raw) // 2 // 512 * 512
    raw[mid: mid + 512] = bytes(512)
    shard.write_bytes(bytes(raw))
    return shard, "sha256 [0-9a-f]{12}\\.\\.\\. differs from the manifest"


def _swap_same_size(data: Path) -> tuple[Path, str]:
    paths = formats.shard_paths(data, "train")
    a, b = next((a, b) for a in paths for b in paths if a < b and a.stat().st_size == b.stat().st_size)
    raw_a = a.read_bytes()
    a.write_bytes(b.read_bytes())
    b.write_bytes(raw_a)
    return a, "sha256 [0-9a-f]{12}\\.\\.\\. differs from the manifest"


@pytest.mark.timeout(120)
@pytest.mark.parametrize("fault", [_flip_token_id, _flip_origin_json, _zero_block, _swap_same_size],
                         ids=["token-id-bit", "origin-json-bit", "zeroed-block", "swapped-shard"])
def test_corrupt_shard_is_named_by_the_reader_and_by_verify(shards, fault, capsys):
    import re

    from tinydnabert.prep.shards import read_shard

    pristine = {p.name: read_shard(p) for p in formats.shard_paths(shards, "train")}
    shard, message = fault(shards)
    # Without the checksum each of these would be read as data: the tar still parses (its headers are
    # intact) and every id is a valid one -- silently different training data.
    try:
        after = read_shard(shard)
        assert [s.key for s in after] != [s.key for s in pristine[shard.name]] or any(
            (a.ids != b.ids).any() or a.meta != b.meta for a, b in zip(after, pristine[shard.name]))
    except InputError:
        pass  # the zeroed block may hit a tar header: loud even without the checksum
    with pytest.raises(InputError, match=f"{re.escape(str(shard))}: {message}.*re-run `tinydnabert preprocess`"):
        read_all(shards)
    rc, out, err = run_cli(capsys, "verify", shards)
    assert rc == 2, out + err
    assert re.search(f"^{re.escape(str(shard))}: {message}", out, re.M), out
    assert f"error: {shards}: " in err and "problem(s)" in err


@pytest.mark.timeout(120)
def test_id_past_the_vocabulary_names_shard_and_sample(shards, capsys):
    """A flipped high bit (id + 32768) in a shard whose manifest entry has no checksum (an older manifest):
    the id check names the shard and the sample, where the embedding would raise a bare IndexError."""
    shard = train_shard(shards)
    ids = [m for m in members(shard) if m.name.endswith(".ids.u16")][7]
    flip(shard, ids.offset_data + 1, 7)
    manifest = json.loads((shards / formats.MANIFEST).read_text())
    for e in manifest["splits"]["train"]["shards"]:
        e.pop("sha256"), e.pop("bytes")
    (shards / formats.MANIFEST).write_text(json.dumps(manifest))
    key = ids.name.removesuffix(".ids.u16")
    with pytest.raises(InputError, match=f"{shard.name}: sample '{key}' holds token id 3\\d{{4}}, outside the "
                                         "vocabulary's content ids 5..255"):
        read_all(shards)
    rc, out, err = run_cli(capsys, "verify", shards)
    assert rc == 2
    assert f"{shard}: sample '{key}' holds token id 3" in out
    assert "records no size / sha256 for 16 train shards" in out  # an unverifiable manifest is said, too


@pytest.mark.timeout(300)
def test_flipped_bit_under_the_launcher_stops_every_rank(tmp_path, shards, ds):
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
    proc = launch(["--num_gpus", "2", "--master_port", str(free_port())],
                  ["--deepspeed_config", str(ds), "--data", str(shards), "--out", str(tmp_path / "run"),
                   "--max-steps", "5", *RUN_FLAGS], tmp_path / "log.txt", tmp_path)
    log = finish(proc, tmp_path / "log.txt", timeout=240)
    assert proc.returncode == 2, log[-3000:]
    assert f"error: {shard}: sha256" in log, log[-3000:]
    assert not (tmp_path / "run" / "checkpoints" / "latest").exists()


def test_shards_verify_clean_and_against_the_genome(hg38_shards, genome_dir, capsys):
    rc, out, err = run_cli(capsys, "verify", hg38_shards, "--fasta", genome_dir / HG38)
    assert rc == 0, out + err
    assert out.startswith(f"ok: {hg38_shards}: 32 shards")
    assert "every sample equal to" in out


def test_verify_against_another_genome_names_every_shard(hg38_shards, genome_dir, capsys):
    rc, out, err = run_cli(capsys, "verify", hg38_shards, "--fasta", genome_dir / "human_chrM.fa.gz")
    assert rc == 2
    assert "holds samples of record 'chr2', which is not in" in out


# ------------------------------------------------------------------------------- killed and concurrent

def tmp_dirs(parent: Path, name: str) -> list[Path]:
    return sorted(parent.glob(f".{name}.tmp-*"))


@pytest.mark.timeout(180)
def test_second_preprocess_refused_then_killed_one_cleaned_up(tmp_path, genome_dir, capsys):
    """A preprocess of chr20 holds --out; a second one into it is refused at once; the first is SIGKILLed,
    leaving its temporary directory; the next run removes it and writes outputs with the umask's modes."""
    out = tmp_path / "out"
    log = tmp_path / "first.txt"
    first = start([sys.executable, "-m", "tinydnabert.app.cli", "preprocess", "--fasta", str(genome_dir / CHR20),
                   "--out", str(out), "--workers", "1", "--no-progress"], log)
    lock = tmp_path / ".out.lock"
    wait_for(lambda: tmp_dirs(tmp_path, "out") and lock.is_file() and lock.read_text().split()[:1] == [str(first.pid)],
             first, log, "took the lock and made its temporary directory")

    rc, _, err = run_cli(capsys, "preprocess", "--fasta", genome_dir / HG38, "--out", out, *SMALL_PREPROCESS)
    assert rc == 2
    assert f"error: {out} is in use by pid {first.pid} on {socket.gethostname()}" in err
    assert first.poll() is None  # untouched by the refused run

    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    (stale,) = tmp_dirs(tmp_path, "out")  # what a killed run leaves (for GRCh38: gigabytes)

    old_umask = os.umask(0o027)
    try:
        rc, _, err = run_cli(capsys, "preprocess", "--fasta", genome_dir / HG38, "--out", out, *SMALL_PREPROCESS)
    finally:
        os.umask(old_umask)
    assert rc == 0, err
    assert f"note: removed {stale} (" in err and f"left by pid {first.pid}, which is no longer running" in err
    assert not tmp_dirs(tmp_path, "out") and not lock.exists()
    assert stat.S_IMODE(out.stat().st_mode) == 0o750  # not mkdtemp's 0700: readable by the group
    assert stat.S_IMODE((out / formats.MANIFEST).stat().st_mode) == 0o640  # not mkstemp's 0600
    assert stat.S_IMODE(formats.shard_paths(out, "train")[0].stat().st_mode) == 0o640


@pytest.fixture(scope="module")
def concurrent_runs(tmp_path_factory, hg38_shards, ds):
    """Run A into runA, SIGSTOPped once training (it holds its lock and its port); B into runA; C into runC,
    to its end while A is stopped; then A is continued to its end."""
    root = tmp_path_factory.mktemp("concurrent")
    a_log, b_log, c_log = root / "a.txt", root / "b.txt", root / "c.txt"
    a = start(pretrain_cmd(ds, hg38_shards, root / "runA", "--max-steps", "20"), a_log)
    wait_for(lambda: "global batch" in a_log.read_text(), a, a_log, "started training")
    os.killpg(a.pid, signal.SIGSTOP)
    try:
        b = start(pretrain_cmd(ds, hg38_shards, root / "runA", "--max-steps", "20"), b_log)
        b_text = finish(b, b_log, timeout=180)
        c = start(pretrain_cmd(ds, hg38_shards, root / "runC", "--max-steps", "20"), c_log)
        c_text = finish(c, c_log, timeout=240)
    finally:
        os.killpg(a.pid, signal.SIGCONT)
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
def test_run_in_use_stops_every_rank_under_the_launcher(tmp_path, hg38_shards, ds):
    """2 ranks into a run directory held by another process (this one): rank 0 alone holds the answer, and
    every rank stops with it at once (none waits in a collective); nothing is written into the run."""
    from tinydnabert.io import OutputLock

    run = tmp_path / "run"
    with OutputLock(run):
        proc = launch(["--num_gpus", "2", "--master_port", str(free_port())],
                      ["--deepspeed_config", str(ds), "--data", str(hg38_shards), "--out", str(run),
                       "--max-steps", "5", *RUN_FLAGS], tmp_path / "log.txt", tmp_path)
        log = finish(proc, tmp_path / "log.txt", timeout=240)
    assert proc.returncode == 2, log[-3000:]
    assert log.count(f"error: {run} is in use by pid {os.getpid()} on {socket.gethostname()}") == 2, log[-3000:]
    assert not run.exists()


@pytest.fixture(scope="module")
def finished_run(concurrent_runs) -> Path:
    """A run with two complete checkpoints (step 10 and step 20)."""
    return concurrent_runs["root"] / "runC"


@pytest.mark.timeout(300)
def test_truncated_checkpoint_file_is_refused_naming_the_previous_one(tmp_path, finished_run, hg38_shards, ds,
                                                                      capsys, monkeypatch):
    import shutil

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
    for k, v in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"), ("MASTER_ADDR", "127.0.0.1"),
                 ("MASTER_PORT", str(free_port()))):
        monkeypatch.setenv(k, v)
    import argparse

    rc = cli.run_stage(train, argparse.ArgumentParser(), pretrain_cmd(ds, hg38_shards, run, "--resume",
                                                                      "--max-steps", "30")[2:])
    err = capsys.readouterr().err
    assert rc == 2
    assert f"error: {bad}: " in err and f"use the previous complete checkpoint {prev} instead" in err
    assert "--resume " + str(prev) in err


# ------------------------------------------------------------------------------------------- disk full

@pytest.mark.timeout(120)
def test_disk_full_during_preprocess(tmp_path, genome_dir, capsys):
    with tmpfs(tmp_path / "small", "2m") as disk:
        rc, _, err = run_cli(capsys, "preprocess", "--fasta", genome_dir / HG38, "--out", disk / "shards",
                             "--workers", "2", *SMALL_PREPROCESS)  # ~7.7 MB of shards into 2 MB
        assert rc == 2
        assert "Traceback" not in err
        assert f"error: {disk / 'shards'}: no space left on device (more than " in err
        assert " MB needed, " in err and " MB free); nothing was written" in err
        assert list(disk.iterdir()) == []  # no output, no temporary directory, no lock file


@pytest.mark.timeout(300)
def test_disk_full_during_checkpoint_save_keeps_the_previous_one(tmp_path, hg38_shards, ds, capsys):
    with tmpfs(tmp_path / "small", "32m") as disk:
        run, log = disk / "run", tmp_path / "log.txt"
        proc = start(pretrain_cmd(ds, hg38_shards, run, "--max-steps", "30", "--no-export"), log)
        latest = run / "checkpoints" / "latest"
        wait_for(latest.is_file, proc, log, "saved its first checkpoint")
        os.killpg(proc.pid, signal.SIGSTOP)
        try:
            with open(disk / "filler", "wb", buffering=0) as f:  # fill the disk before the step-20 save
                with contextlib.suppress(OSError):
                    while True:
                        f.write(bytes(1 << 16))
        finally:
            os.killpg(proc.pid, signal.SIGCONT)
        text = finish(proc, log)
        assert proc.returncode == 2, text[-3000:]
        assert "Traceback" not in text, text[-3000:]
        assert f"error: {run / 'checkpoints' / 'step00000020'}: no space left on device (about " in text
        assert "step00000010 is still the latest complete checkpoint" in text and "--resume" in text
        assert latest.read_text().strip() == "step00000010"
        assert not (run / "checkpoints" / "step00000020").exists()  # no half checkpoint
        rc, out, err = run_cli(capsys, "verify", run)
        assert rc == 0, out + err

"""Faults injected on real files, in this process (no launcher, no training run): every one is detected with a
clear message and exit status 2, none is silent, nothing is left half-written.

    shards     a flipped bit in a token id, a flipped bit in the origin JSON, a zeroed 512-byte block
               mid-shard, a shard swapped with another of the same size, an id past the vocabulary
               (with the checksums gone, as in an older manifest); shards verified against another genome
    disk full  a tmpfs that fills during preprocess
    killed     preprocess SIGKILLed: its temporary directory is removed by the next run
    concurrent two preprocess runs into one --out

The session fixture `hg38_shards` (real shards of a 2.3 Mbp hg38 slice) is copied before it is corrupted. The
faults of runs (under the launcher, in checkpoints, a disk full during a save, two pretraining runs at once):
tests/integration/test_faults.py.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import sys
from pathlib import Path

import pytest

from tests.helpers import HG38, flip, kill, members, run_cli, start, tmpfs, wait_for
from tinydnabert import formats
from tinydnabert.errors import InputError
from tinydnabert.pretrain.data import DataConfig, build_train_loader

CHR20 = "grch37_chr20.fa.gz"
SMALL_PREPROCESS = ["--vocab-size", "256", "--min-frequency", "2", "--samples-per-shard", "256",
                    "--val-fraction", "0.05", "--no-progress"]


@pytest.fixture
def shards(tmp_path, hg38_shards) -> Path:
    import shutil

    return Path(shutil.copytree(hg38_shards, tmp_path / "shards"))


# ------------------------------------------------------------------------------------------------ shards

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

    kill(first)
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

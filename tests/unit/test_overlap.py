"""`tinydnabert overlap` on real shards (600 kbp of the real chr20, both strands) and real task rows: it finds
exactly the rows planted from the shards' segments (some reverse-complemented), on either strand, checked
against a brute-force oracle on the shards decoded by the tokenizer itself; a task cut from lambda phage shares
nothing; bad input is `error:`, exit 2, nothing written. The k-mer machinery itself against a naive loop."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pysam
import pytest

from tests.helpers import all_samples, run_cli
from tinydnabert.errors import InputError
from tinydnabert.eval.overlap import measure_overlap
from tinydnabert.prep.kmers import KmerIndex, OverlapMatcher, TokenDecoder, canonical_kmers, encode, letters
from tinydnabert.prep.preprocess import PreprocessConfig, run_preprocess
from tinydnabert.prep.segment import reverse_complement
from tinydnabert.prep.tokenizer import load_tokenizer


@pytest.fixture(scope="module")
def chr20(chr20_slice) -> tuple[Path, str]:
    return chr20_slice


@pytest.fixture(scope="module")
def shards(chr20, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ov") / "shards"
    run_preprocess(PreprocessConfig(fasta=[str(chr20[0])], out=str(out), vocab_size=256, min_frequency=2,
                                    samples_per_shard=128, val_fraction=0.05, reverse_complement=True, seed=3,
                                    workers=1, progress=False))
    return out


def _segments(shards: Path, split: str = "train") -> list[tuple[str, str, dict]]:
    """(key, text, origin) of every sample, decoded by the tokenizer itself (not prep/kmers.py)."""
    tok = load_tokenizer(shards)
    return [(s.key, tok.decode(s.ids.tolist()), s.meta) for s in all_samples(shards, split)]


def _oracle(rows: list[str], texts: list[str], k: int) -> tuple[set[int], set[int]]:
    """Rows sharing a k-mer (either strand) with the texts, rows inside one text (either strand): by brute force,
    with Python strings and sets."""
    kmers = {t[i:i + k] for t in texts for i in range(len(t) - k + 1)}
    kmers |= {reverse_complement(x) for x in kmers}
    joined = "|".join(texts)
    share = {i for i, r in enumerate(rows) if any(r[j:j + k] in kmers for j in range(len(r) - k + 1))}
    whole = {i for i in share if rows[i] in joined or reverse_complement(rows[i]) in joined}  # inside => shares
    return share, whole


def _write_task(path: Path, rows: list[str]) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "train.csv").write_text("sequence,label\n" + "".join(f"{r},{i % 2}\n" for i, r in enumerate(rows)))
    return path


def _planted_rows(chr20, shards, rng) -> tuple[list[str], set[int], set[int]]:
    """Random rows with, at random places, pieces of train segments (whole inside one; every other one reverse
    complemented) and pieces across two neighbouring segments (sharing k-mers, inside neither)."""
    seq = chr20[1]
    train = sorted((m["start"], m["end"]) for _, _, m in _segments(shards))
    rows = ["".join(rng.choice(list("ACGT"), size=100)) for _ in range(40)]
    inside, across = set(), set()
    for n, i in enumerate(rng.choice(len(train) - 1, size=12, replace=False).tolist()):
        s, e = train[i]
        crossing = n % 3 == 2 and train[i + 1][0] == e    # across the boundary with the next train segment
        start = e - 50 if crossing else int(rng.integers(s, e - 100))
        piece = seq[start:start + 100]
        piece = reverse_complement(piece) if n % 2 else piece
        at = int(rng.integers(0, len(rows) + 1))
        rows.insert(at, piece)
        inside, across = {x + (x >= at) for x in inside}, {x + (x >= at) for x in across}
        (across if crossing else inside).add(at)
    return rows, inside, across


def test_finds_exactly_the_planted_rows(chr20, shards, tmp_path, capsys):
    rng = np.random.default_rng(0)
    rows, inside, across = _planted_rows(chr20, shards, rng)
    assert len(inside) >= 6 and len(across) >= 1
    task = _write_task(tmp_path / "planted", rows)
    out = tmp_path / "overlap.json"
    rc, stdout, err = run_cli(capsys, "overlap", "--shards", shards, "--task", f"planted={task}", "--out", out,
                              "--no-progress")
    assert rc == 0, err
    r = json.loads(out.read_text())
    s = r["tasks"]["custom/planted"]["splits"]["train"]
    share, whole = _oracle(rows, [t for _, t, _ in _segments(shards)], 32)
    assert whole == inside and share == inside | across  # the oracle agrees with the planting: no chance match
    assert set(s["sharing_rows"]) == share and set(s["contained_rows"]) == whole
    assert s["rows"] == len(rows) and s["sharing_kmer"] == len(share) and s["contained"] == len(whole)
    assert s["sharing_kmer_pct"] == round(100 * len(share) / len(rows), 3)
    keys = {k: t for k, t, _ in _segments(shards)}
    for i, key in zip(s["contained_rows"], s["contained_in"]):   # where: a segment that really holds it
        assert rows[i] in keys[key] or reverse_complement(rows[i]) in keys[key]
    # Both strands both ways: rows planted reverse-complemented, segments stored on the minus strand.
    flipped = [rows[i] not in keys[key] for i, key in zip(s["contained_rows"], s["contained_in"])]
    assert any(flipped) and not all(flipped)
    assert any(key.endswith(":r") for key in s["contained_in"]) and any(key.endswith(":f") for key in s["contained_in"])
    m = json.loads((shards / "manifest.json").read_text())
    assert r["k"] == 32 and r["shard_bases"] == m["splits"]["train"]["bases"] and r["shards_read"] == len(
        m["splits"]["train"]["shards"])
    assert r["tokenizer_sha256"] == m["tokenizer"]["sha256"] and len(r["manifest_sha256"]) == 64
    assert "custom/planted" in stdout and "Mbp/s" in stdout and f"{100 * len(share) / len(rows):.2f}%" in stdout


def test_another_genome_shares_nothing(genome_dir, shards, tmp_path):
    """Rows cut from lambda phage (a real genome, not human): no 32-mer in common with chr20."""
    with pysam.FastxFile(str(genome_dir / "lambda_phage.fa.gz")) as f:
        lam = next(iter(f)).sequence.upper()
    rows = [lam[i:i + 300] for i in range(0, 30_000, 600)]
    r = measure_overlap(shards, [f"lambda={_write_task(tmp_path / 'lambda', rows)}"], 32)
    s = r["tasks"]["custom/lambda"]["splits"]["train"]
    assert s["rows"] == 50 and s["sharing_kmer"] == s["contained"] == 0 and s["sharing_rows"] == []
    assert s["sharing_kmer_pct"] == 0.0


def test_real_task_agrees_with_the_oracle(shards):
    """A registered task (GUE prom_300_tata, 6,130 real rows of 300 bp) against the shards: every row, by brute
    force."""
    r = measure_overlap(shards, ["gue/prom_300_tata"], 32)
    from tinydnabert.eval.tasks import get_task, load_task_data

    td = load_task_data(get_task("gue/prom_300_tata"))
    texts = [t for _, t, _ in _segments(shards)]
    for split, s in r["tasks"]["gue/prom_300_tata"]["splits"].items():
        share, whole = _oracle(td.splits[split].sequences, texts, 32)
        assert share == set(s["sharing_rows"]) and whole == set(s["contained_rows"]) and share


def test_workers_give_the_same_figures(shards, tmp_path, capsys):
    """Shards read ahead by 2 spawned processes: the same result; a bad shard found in a worker is the same error."""
    one = measure_overlap(shards, ["gue/prom_300_tata"], 32)
    two = measure_overlap(shards, ["gue/prom_300_tata"], 32, workers=2)
    drop = ("seconds", "index_seconds", "bases_per_second", "workers")
    assert {k: v for k, v in one.items() if k not in drop} == {k: v for k, v in two.items() if k not in drop}
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(shards, bad)
    shard = sorted((bad / "train").glob("shard-*.tar"))[5]
    raw = bytearray(shard.read_bytes())
    raw[700] ^= 4
    shard.write_bytes(bytes(raw))
    err = _fails(capsys, tmp_path, "--shards", bad, "--task", "gue/prom_300_tata", "--workers", "2")
    assert str(shard) in err and "sha256" in err


def test_kmers_against_a_naive_loop():
    rng = np.random.default_rng(1)
    seq = "".join(rng.choice(list("ACGTN"), p=[0.24] * 4 + [0.04], size=400))
    for k in (1, 5, 16, 31, 32):
        values, starts = canonical_kmers(encode(seq), k)
        want = []
        for i in range(len(seq) - k + 1):
            w = seq[i:i + k]
            if "N" not in w:
                want.append((min(int(w.translate(str.maketrans("ACGT", "0123")), 4),
                                 int(reverse_complement(w).translate(str.maketrans("ACGT", "0123")), 4)), i))
        assert list(zip(values.tolist(), starts.tolist())) == want, k
    rows = ["ACGT" * 10, "ACG", "A" * 40]
    index = KmerIndex(rows, 32)
    # ACGT repeated: 4 windows, ACGT.. and GTAC.. their own reverse complements, CGTA.. = rc(TACG..); + poly-A
    assert index.counts.tolist() == [9, 0, 9] and len(index.keys) == 4
    m = OverlapMatcher(index, rows, 1024)
    codes = encode("TTTT" * 20 + "N" + "GGG")  # poly-T = poly-A's reverse complement
    m.feed(codes, np.array([0, 81]), np.array([80, 84]), ["a", "b"])
    assert m.sharing().tolist() == [False, False, True] and m.where == {2: "a"}


def test_token_decoder_matches_the_tokenizer(shards):
    tok = load_tokenizer(shards)
    samples = list(all_samples(shards, "val"))
    codes, starts, ends = TokenDecoder(shards / "tokenizer" / "tokenizer.json").decode([s.ids for s in samples])
    text = letters(codes).decode()
    assert [text[a:b] for a, b in zip(starts, ends)] == [tok.decode(s.ids.tolist()) for s in samples]
    assert set(text[b] for b in ends[:-1]) == {"N"}  # one separator between two samples


# ------------------------------------------------------------------------------------------------ bad input

def _fails(capsys, tmp_path, *argv) -> str:
    out = tmp_path / "o.json"
    rc, _, err = run_cli(capsys, "overlap", *argv, "--out", out, "--no-progress")
    assert rc == 2 and err.startswith("error: ") and "Traceback" not in err, err
    assert not out.exists() and not list(tmp_path.glob(".o.json*"))
    return err


def test_missing_shards_dir(capsys, tmp_path):
    err = _fails(capsys, tmp_path, "--shards", tmp_path / "nope", "--task", "gue/prom_300_tata")
    assert str(tmp_path / "nope") in err and "not found" in err


def test_unknown_task(capsys, tmp_path, shards):
    err = _fails(capsys, tmp_path, "--shards", shards, "--task", "gue/prom_9000")
    assert "unknown task 'gue/prom_9000'" in err


def test_another_tokenizer(capsys, tmp_path, shards, chr20):
    other = tmp_path / "other"
    run_preprocess(PreprocessConfig(fasta=[str(chr20[0])], out=str(other), vocab_size=200, min_frequency=2,
                                    min_shards=1, workers=1, progress=False))
    err = _fails(capsys, tmp_path, "--shards", shards, "--task", "gue/prom_300_tata", "--tokenizer", other)
    assert str(other / "tokenizer" / "tokenizer.json") in err and "differs" in err


def test_shard_that_is_not_the_manifests(capsys, tmp_path, shards):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(shards, bad)
    shard = sorted((bad / "train").glob("shard-*.tar"))[3]
    raw = bytearray(shard.read_bytes())
    raw[600] ^= 1
    shard.write_bytes(bytes(raw))
    err = _fails(capsys, tmp_path, "--shards", bad, "--task", "gue/prom_300_tata")
    assert str(shard) in err and "sha256" in err
    (bad / "train" / shard.name).unlink()
    err = _fails(capsys, tmp_path, "--shards", bad, "--task", "gue/prom_300_tata")
    assert str(shard) in err and "missing" in err


def test_k_out_of_range(shards):
    with pytest.raises(InputError, match="--k 33"):
        measure_overlap(shards, ["gue/prom_300_tata"], 33)

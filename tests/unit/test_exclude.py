"""`preprocess --exclude-from` on real genome slices (600 kbp of chr20, the hg38 chr2 slice) with real task rows:
afterwards no segment overlaps a region and no k-mer of an excluded sequence is in the shards (decoded by the
tokenizer itself), every other segment is byte-identical to a run without the flag, and the manifest says what
went; bad input is `error:` naming the file and line, exit 2, nothing written.

Segmentation is random, but a pure function of (sequence, record name, seed): a run with --exclude-from and the
same seed (and the base run's tokenizer, `--tokenizer`, so that ids mean the same) cuts the same segments and
drops some, so the two runs are compared key by key (record:start-end:strand) and id by id."""

from __future__ import annotations

import csv
import gzip
import hashlib
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import HG38, all_samples, run_cli
from tinydnabert.app import cli, preprocess_cmd
from tinydnabert.prep.exclude import Exclusions
from tinydnabert.prep.preprocess import PreprocessConfig, run_preprocess
from tinydnabert.prep.segment import reverse_complement
from tinydnabert.prep.tokenizer import load_tokenizer

FLAGS = ["--vocab-size", "256", "--min-frequency", "2", "--samples-per-shard", "128", "--val-fraction", "0.05",
         "--reverse-complement", "--seed", "3", "--workers", "1", "--no-progress"]


@pytest.fixture(scope="module")
def chr20(chr20_slice) -> tuple[Path, str]:
    return chr20_slice


@pytest.fixture(scope="module")
def base(chr20, tmp_path_factory) -> Path:
    """The run without --exclude-from."""
    out = tmp_path_factory.mktemp("base") / "shards"
    assert cli.main(["preprocess", "--fasta", str(chr20[0]), "--out", str(out), *FLAGS]) == 0
    return out


def _samples(shards: Path) -> dict[str, tuple[np.ndarray, dict]]:
    return {s.key: (s.ids, s.meta) for split in ("train", "val") for s in all_samples(shards, split)}


def _texts(shards: Path) -> dict[str, str]:
    tok = load_tokenizer(shards)
    return {k: tok.decode(ids.tolist()) for k, (ids, _) in _samples(shards).items()}


def _kmers(seq: str, k: int = 32) -> set[str]:
    out = {seq[i:i + k] for i in range(len(seq) - k + 1)}
    return {x for x in out | {reverse_complement(x) for x in out} if "N" not in x}


def _check_kept(base: Path, out: Path, dropped: set[str]) -> None:
    """The kept segments are exactly the base run's minus `dropped`, with byte-identical token ids."""
    b, e = _samples(base), _samples(out)
    assert dropped and set(e) == set(b) - dropped
    assert all(np.array_equal(e[k][0], b[k][0]) for k in e)


def _accounting(m: dict, base_m: dict, dropped: set[str], base_samples: dict) -> None:
    gone = sum(base_samples[k][1]["end"] - base_samples[k][1]["start"] for k in dropped)
    assert m["dropped"]["excluded_segments"] == len(dropped) == m["exclusions"]["excluded_segments"]
    assert m["dropped"]["excluded_segment_bases"] == gone == m["exclusions"]["excluded_bases"]
    kept = m["splits"]["train"]["bases"] + m["splits"]["val"]["bases"]
    assert kept + sum(v for k, v in m["dropped"].items() if k.endswith("_bases")) == m["input_acgt_bases"]
    assert m["input_acgt_bases"] == base_m["input_acgt_bases"]
    assert sum(r["excluded_bases"] for r in m["records"]) == gone


def test_bed_regions(base, chr20, tmp_path, capsys):
    from tinydnabert.formats import load_manifest

    bed = tmp_path / "planted.bed"
    bed.write_text("# planted regions\ntrack name=planted\nchr20\t1000\t1100\tin_one\n20\t50000\t50001\n"
                   "20\t300000\t302500\tacross_segments\n20\t400000\t400000\tempty\n")
    out = tmp_path / "ex"
    rc, stdout, err = run_cli(capsys, "preprocess", "--fasta", chr20[0], "--out", out, *FLAGS,
                              "--tokenizer", base, "--exclude-from", bed)
    assert rc == 0, err
    regions = [(1000, 1100), (50000, 50001), (300000, 302500)]
    b = _samples(base)
    dropped = {k for k, (_, m) in b.items() if any(m["start"] < e and s < m["end"] for s, e in regions)}
    assert len(dropped) >= 5
    _check_kept(base, out, dropped)
    for _, (_, m) in _samples(out).items():   # nothing left overlaps a region
        assert not any(m["start"] < e and s < m["end"] for s, e in regions)
    man = load_manifest(out)
    _accounting(man, load_manifest(base), dropped, b)
    (src,) = man["exclusions"]["sources"]
    assert src["path"] == str(bed) and src["kind"] == "bed" and src["regions"] == 4 and src["region_bases"] == 2601
    assert src["sha256"] == hashlib.sha256(bed.read_bytes()).hexdigest() and src["excluded_segments"] == len(dropped)
    assert man["config"]["exclude_from"] == [str(bed)]
    assert f"excluded (bed) {bed}: {len(dropped)} segments" in stdout


def test_task_sequences(base, chr20, tmp_path, capsys):
    """A task file (CSV) and a FASTA of sequences cut from the genome (some reverse-complemented) among random
    ones: no 32-mer of them is left in the shards, and exactly the segments holding one are gone."""
    from tinydnabert.formats import load_manifest

    seq = chr20[1]
    rng = np.random.default_rng(5)
    rows = ["".join(rng.choice(list("ACGT"), size=120)) for _ in range(30)]
    for n, at in enumerate(rng.choice(len(seq) - 120, size=6, replace=False).tolist()):
        piece = seq[at:at + 120]
        rows.insert(int(rng.integers(0, len(rows))), reverse_complement(piece) if n % 2 else piece)
    task = tmp_path / "task.csv"
    task.write_text("sequence,label\n" + "".join(f"{r.lower() if i == 0 else r},{i % 2}\n" for i, r in enumerate(rows)))
    fasta = tmp_path / "pieces.fa"
    fasta.write_text(f">a|1\n{seq[420_000:420_080]}\n>b|0\n{reverse_complement(seq[500_000:500_090])}\n")
    out = tmp_path / "ex"
    rc, _, err = run_cli(capsys, "preprocess", "--fasta", chr20[0], "--out", out, *FLAGS, "--tokenizer", base,
                         "--exclude-from", task, "--exclude-from", fasta)
    assert rc == 0, err
    banned = set().union(*(_kmers(r) for r in rows), _kmers(seq[420_000:420_080]), _kmers(seq[500_000:500_090]))
    base_texts = _texts(base)
    dropped = {k for k, t in base_texts.items() if _kmers(t) & banned}
    assert len(dropped) >= 8
    after = _texts(out)
    assert not any(_kmers(t) & banned for t in after.values())
    _check_kept(base, out, dropped)
    man = load_manifest(out)
    _accounting(man, load_manifest(base), dropped, _samples(base))
    by_path = {s["path"]: s for s in man["exclusions"]["sources"]}
    assert by_path[str(task)]["kind"] == by_path[str(fasta)]["kind"] == "sequences"
    assert by_path[str(task)]["sequences"] == 36 and by_path[str(fasta)]["sequences"] == 2
    assert by_path[str(fasta)]["excluded_segments"] == len({k for k, t in base_texts.items() if _kmers(t) & (
        _kmers(seq[420_000:420_080]) | _kmers(seq[500_000:500_090]))}) >= 2


def test_nt_names_as_regions(hg38_shards, genome_dir, benchmark_dir, tmp_path):
    """Real NT revised rows: chr2:1010404-1010804 lies in the hg38 chr2 slice (its sequence is the slice's there,
    0-based half-open); the rows on other chromosomes are counted, not refused."""
    src = benchmark_dir / "nt_revised_sample" / "train.tsv"
    with open(src, newline="") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    header, body = rows[0], rows[1:]
    chosen = [r for r in body if r[1].startswith("chr2:1010404-")] + [r for r in body if r[1].startswith("chr1:")][:3]
    tsv = tmp_path / "nt.tsv"
    tsv.write_text("\t".join(header) + "\n" + "".join("\t".join(r) + "\n" for r in chosen))
    out = tmp_path / "ex"
    m = run_preprocess(PreprocessConfig(fasta=[str(genome_dir / HG38)], out=str(out), vocab_size=256,
                                        min_frequency=2, samples_per_shard=256, val_fraction=0.05, seed=0, workers=1,
                                        progress=False, tokenizer=str(hg38_shards), exclude_from=[str(tsv)]))
    b = _samples(hg38_shards)
    dropped = {k for k, (_, meta) in b.items() if meta["start"] < 1010804 and 1010404 < meta["end"]}
    assert 1 <= len(dropped) <= 2
    _check_kept(hg38_shards, out, dropped)
    (s,) = m["exclusions"]["sources"]
    assert s["kind"] == "nt_names" and s["regions"] == 4 and s["rows_on_absent_contigs"] == 3
    assert s["excluded_segments"] == len(dropped)
    # kmers: reads the same file as sequences instead
    ex = Exclusions([f"kmers:{tsv}"])
    assert ex.sources[0].kind == "sequences" and ex.sources[0].entries == 4


def test_task_name_through_the_app_layer(base, chr20, tmp_path, capsys):
    """`--exclude-from gue/prom_300_tata`: the name is resolved above prep (app/preprocess_cmd.py)."""
    import argparse

    from tinydnabert.eval.tasks import get_task, load_task_data
    from tinydnabert.formats import load_manifest

    out = tmp_path / "ex"
    argv = ["--fasta", str(chr20[0]), "--out", str(out), *FLAGS, "--tokenizer", str(base),
            "--exclude-from", "gue/prom_300_tata"]
    assert cli.run_stage(preprocess_cmd, argparse.ArgumentParser(), argv) == 0
    td = load_task_data(get_task("gue/prom_300_tata"))
    seqs = [x for sp in td.splits.values() for x in sp.sequences]
    (s,) = load_manifest(out)["exclusions"]["sources"]
    assert s["path"] == "gue/prom_300_tata" and s["kind"] == "sequences" and s["sequences"] == len(seqs) == 6130
    assert s["sha256"] == hashlib.sha256("\n".join(seqs).encode()).hexdigest() and s["excluded_segments"] > 0
    capsys.readouterr()
    bad = tmp_path / "bad"
    argv = ["--fasta", str(chr20[0]), "--out", str(bad), *FLAGS, "--exclude-from", "gue/prom_9000"]
    assert cli.run_stage(preprocess_cmd, argparse.ArgumentParser(), argv) == 2
    err = capsys.readouterr().err
    assert "--exclude-from gue/prom_9000: no such file or directory, and not a task: unknown task" in err
    assert not bad.exists()


# ------------------------------------------------------------------------------------------------ bad input

def _bad(tmp_path: Path, name: str, text: str | bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    return p


BAD = {  # file name, content, what the message must hold (besides the file's path)
    "start_after_end": ("r.bed", "# c\n20\t500\t400\n", ["line 2", "start > end"]),
    "past_the_end": ("r.bed", "20\t1\t2\n20\t599000\t600001\n", ["line 2", "ends past the end of record '20'",
                                                                "600,000 bp"]),
    "absent_contig": ("r.bed", "chr20\t1\t2\nchr7\t1\t100\n", ["line 2", "contig 'chr7' is not a record",
                                                             "its records: 20"]),
    "not_integers": ("r.bed", "20\tx\t100\n", ["line 1", "not integers"]),
    "too_few_fields": ("r.bed", "20\t100\n", ["line 1", "needs contig, start and end"]),
    "corrupt_gzip": ("r.bed.gz", b"\x1f\x8b\x08\x00garbage", ["cannot read"]),
    "bad_nt_name": ("nt.tsv", "sequence\tname\tlabel\nACGT\tchr1:1-5|0\t0\nACGT\tchr1:x-5|0\t0\n",
                    ["line 3", "not chr:start-end|label"]),
    "bad_character": ("t.csv", "sequence,label\n" + "A" * 40 + ",0\nACG-TACGT,1\n", ["line 3", "character '-'"]),
    "all_short": ("t.csv", "sequence,label\nACGT,0\nACGTT,1\n", ["every sequence is shorter than --exclude-k 32"]),
    "no_sequence_column": ("t.csv", "seq,label\nACGT,0\n", ["no 'sequence' column"]),
}


def _assert_clean(parent: Path, out: Path) -> None:
    assert not out.exists()
    assert not [p for p in parent.iterdir() if p.name.startswith(f".{out.name}")]


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_exclusion_file(case, chr20, tmp_path, capsys):
    name, text, needles = BAD[case]
    path = _bad(tmp_path, name, text)
    out = tmp_path / "out"
    rc, _, err = run_cli(capsys, "preprocess", "--fasta", chr20[0], "--out", out, *FLAGS, "--exclude-from", path)
    assert rc == 2 and err.startswith("error: ") and str(path) in err and "Traceback" not in err, err
    for n in needles:
        assert n in err, (n, err)
    _assert_clean(tmp_path, out)


def test_checked_before_the_scan_with_an_index(genome_dir, tmp_path, capsys):
    """The real chr20 has a .fai: a BED contig it lacks fails at once, before 63 Mbp are read."""
    import time

    bed = _bad(tmp_path, "r.bed", "20\t1\t2\n7\t5\t10\n")
    out = tmp_path / "out"
    t0 = time.perf_counter()
    rc, _, err = run_cli(capsys, "preprocess", "--fasta", genome_dir / "grch37_chr20.fa.gz", "--out", out, *FLAGS,
                         "--exclude-from", bed)
    assert rc == 2 and f"{bed}, line 2: contig '7'" in err and time.perf_counter() - t0 < 5, err
    _assert_clean(tmp_path, out)


@pytest.mark.parametrize("spec,needle", [("/no/such/regions.bed", "no such file or directory"),
                                         ("gue/prom_9000", "not a task: unknown task 'gue/prom_9000'"),
                                         ("EMPTYDIR", "no .bed, .csv, .tsv or FASTA files")])
def test_missing_or_empty(spec, needle, chr20, tmp_path, capsys):
    if spec == "EMPTYDIR":
        spec = str(tmp_path / "empty")
        Path(spec).mkdir()
    out = tmp_path / "out"
    rc, _, err = run_cli(capsys, "preprocess", "--fasta", chr20[0], "--out", out, *FLAGS, "--exclude-from", spec)
    assert rc == 2 and f"--exclude-from {spec}" in err and needle in err, err
    _assert_clean(tmp_path, out)


def test_gzip_bed_and_exclude_k(chr20, tmp_path, capsys):
    """A gzipped BED is read; --exclude-k outside [1, 32] is refused."""
    bed = tmp_path / "r.bed.gz"
    with gzip.open(bed, "wt") as f:
        f.write("20\t10\t20\n")
    assert Exclusions([str(bed)]).sources[0].entries == 1
    rc, _, err = run_cli(capsys, "preprocess", "--fasta", chr20[0], "--out", tmp_path / "o", *FLAGS,
                         "--exclude-from", bed, "--exclude-k", "40")
    assert rc == 2 and "--exclude-k 40" in err

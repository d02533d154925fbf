"""The preprocessing stage end to end on the real genome files, in runs of seconds: determinism across worker
counts (with reverse complements), a multi-file, multi-record genome with a record-level validation split. The
quick checks of its outputs: tests/unit/test_preprocess_outputs.py."""

from __future__ import annotations

from pathlib import Path

import pysam
import pytest

from tests.helpers import HG38, all_samples
from tinydnabert.prep.preprocess import PreprocessConfig, run_preprocess
from tinydnabert.prep.segment import reverse_complement
from tinydnabert.prep.tokenizer import load_tokenizer


def fetch_all(path: Path) -> dict[str, str]:
    with pysam.FastxFile(str(path)) as f:
        return {r.name: r.sequence for r in f}


def _run(tmp, name, genome_dir, **kw):
    cfg = dict(fasta=[str(genome_dir / HG38)], out=str(tmp / name), vocab_size=256, min_frequency=2,
               samples_per_shard=512, val_fraction=0.05, seed=1, progress=False)
    cfg.update(kw)
    return run_preprocess(PreprocessConfig(**cfg))


def _files(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*"))
            if p.is_file() and p.parent.name in ("train", "val", "tokenizer")}


@pytest.mark.timeout(120)
def test_deterministic_across_workers_with_reverse_complement(tmp_path, genome_dir):
    m1 = _run(tmp_path, "w1", genome_dir, workers=1, reverse_complement=True)
    m2 = _run(tmp_path, "w2", genome_dir, workers=2, reverse_complement=True)
    f1, f2 = _files(tmp_path / "w1"), _files(tmp_path / "w2")
    assert len(f1) >= 10 and f1 == f2  # byte-identical shards and tokenizer
    strip = lambda m: {k: v for k, v in m.items() if k != "config"}  # noqa: E731
    assert strip(m1) == strip(m2)
    # A different seed moves the segments.
    m3 = _run(tmp_path, "s2", genome_dir, workers=2, reverse_complement=True, seed=2)
    assert _files(tmp_path / "s2") != f1 and m3["input_acgt_bases"] == m1["input_acgt_bases"]
    # Minus-strand samples spell the reverse complement of their forward coordinates.
    tok = load_tokenizer(tmp_path / "w1")
    with pysam.FastaFile(str(genome_dir / HG38)) as fa:
        src = fa.fetch("chr2").upper()
    strands = {"+": 0, "-": 0}
    for key, ids, meta in all_samples(tmp_path / "w1", "train"):
        s, e = meta["start"], meta["end"]
        want = src[s:e] if meta["strand"] == "+" else reverse_complement(src[s:e])
        assert tok.decode(ids.tolist()) == want, key
        assert key.endswith(":f" if meta["strand"] == "+" else ":r")
        strands[meta["strand"]] += 1
    assert min(strands.values()) > 0.4 * sum(strands.values())


@pytest.mark.timeout(120)
def test_multi_file_multi_record_val_by_record(tmp_path, genome_dir):
    files = [genome_dir / "yeast_S288C_R64-2-1.fa.gz", genome_dir / "human_chrM.fa.gz",
             genome_dir / "lambda_phage.fa.gz"]
    out = tmp_path / "multi"
    m = run_preprocess(PreprocessConfig(
        fasta=[str(f) for f in files], out=str(out), vocab_size=300, min_frequency=2,
        val_records=["MT_human", "ref|NC_001139|"], exclude=[r"ref\|NC_001224\|"], samples_per_shard=2048,
        min_shards=4, seed=0, workers=2, progress=False))
    assert m["config"]["val_fraction"] == 0.0
    src: dict[str, str] = {}
    for f in files:
        src.update(fetch_all(f))
    assert len(src) == 19
    selected = [r["name"] for r in m["records"]]
    assert len(selected) == 18 and "ref|NC_001224|" not in selected and m["excluded_records"] == ["ref|NC_001224|"]
    acgt = lambda s: sum(s.upper().count(c) for c in "ACGT")  # noqa: E731
    assert m["input_acgt_bases"] == sum(acgt(s) for s in src.values())
    assert m["dropped"]["excluded_record_bases"] == acgt(src["ref|NC_001224|"])
    kept = m["splits"]["train"]["bases"] + m["splits"]["val"]["bases"]
    assert kept + m["dropped"]["short_leftover_bases"] + m["dropped"]["excluded_record_bases"] == m["input_acgt_bases"]
    tok = load_tokenizer(out)
    records = {"train": set(), "val": set()}
    for split in ("train", "val"):
        for i, (key, ids, meta) in enumerate(all_samples(out, split)):
            records[split].add(meta["record"])
            if i % 7 == 0:  # decode a spread of samples from every record
                assert tok.decode(ids.tolist()) == src[meta["record"]][meta["start"]:meta["end"]].upper(), key
    assert records["val"] == {"MT_human", "ref|NC_001139|"}
    assert not records["train"] & records["val"]
    assert "gi|9626243|ref|NC_001416.1|" in records["train"] and len(records["train"]) == 16
    assert len(m["splits"]["val"]["shards"]) == 4 and len(m["splits"]["train"]["shards"]) >= 4

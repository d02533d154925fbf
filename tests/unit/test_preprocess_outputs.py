"""The preprocessing stage's outputs on real and synthetic genomes, each made in well under a second (or the
session's `hg38_shards`): round trips to the source sequence, accounting, the tokenizer through plain
transformers, CRLF / IUPAC / soft-masking, the primary-assembly preset. The longer preprocessing runs
(determinism across worker counts, a multi-file genome): tests/integration/test_preprocess.py."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pysam
import webdataset as wds

from tests.helpers import HG38, all_samples
from tinydnabert.formats import SPECIAL_TOKENS, load_manifest, shard_paths, tokenizer_fingerprint
from tinydnabert.prep.preprocess import PreprocessConfig, run_preprocess
from tinydnabert.prep.shards import read_shard
from tinydnabert.prep.tokenizer import load_tokenizer


def test_hg38_round_trip_and_accounting(hg38_shards, genome_dir):
    """Every sample's ids decode to exactly the upper-cased soft-masked source at its coordinates."""
    m = load_manifest(hg38_shards)
    tok = load_tokenizer(hg38_shards)
    with pysam.FastaFile(str(genome_dir / HG38)) as fa:
        src = fa.fetch("chr2")
    upper = src.upper()
    assert m["input_acgt_bases"] == sum(upper.count(c) for c in "ACGT") == 2_323_275
    seen: dict[str, list[tuple[int, int]]] = {}
    for split in ("train", "val"):
        total = dict(samples=0, bases=0, tokens=0)
        for shard, info in zip(shard_paths(hg38_shards, split), m["splits"][split]["shards"], strict=True):
            samples = read_shard(shard)
            assert info["name"] == shard.name and info["samples"] == len(samples)
            assert info["tokens"] == sum(len(ids) for _, ids, _ in samples)
            for key, ids, meta in samples:
                s, e = meta["start"], meta["end"]
                assert key == f"chr2:{s}-{e}:f" and meta["strand"] == "+"
                assert 256 <= e - s <= 1024
                assert ids.min() >= len(SPECIAL_TOKENS) and ids.max() < m["tokenizer"]["vocab_size"]
                text = tok.decode(ids.tolist())
                assert text == upper[s:e], key  # exact, no spaces, upper-cased soft-masking
                seen.setdefault(split, []).append((s, e))
            total["samples"] += info["samples"]
            total["bases"] += info["bases"]
            total["tokens"] += info["tokens"]
        for k, v in total.items():
            assert m["splits"][split][k] == v
    assert any(c.islower() for c in src[10_000:20_000])  # the slice really is soft-masked
    # Splits never overlap, segments never overlap, and nothing falls in the leading 10 kb N run.
    spans = sorted(seen["train"] + seen["val"])
    assert spans[0][0] >= 10_000
    assert all(b[0] >= a[1] for a, b in zip(spans, spans[1:]))
    assert not set(seen["train"]) & set(seen["val"])
    kept = m["splits"]["train"]["bases"] + m["splits"]["val"]["bases"]
    assert kept + sum(v for k, v in m["dropped"].items() if k.endswith("_bases")) == m["input_acgt_bases"]
    # Enough shards for 2 ranks x 2 workers in both splits; plain webdataset reads them.
    assert len(shard_paths(hg38_shards, "train")) >= 4 and len(shard_paths(hg38_shards, "val")) >= 4
    n = sum(1 for s in wds.WebDataset([str(p) for p in shard_paths(hg38_shards, "val")], shardshuffle=False)
            if set(s) >= {"__key__", "ids.u16", "json"})
    assert n == m["splits"]["val"]["samples"] > 0
    assert m["tokenizer"]["sha256"] == tokenizer_fingerprint(hg38_shards / "tokenizer")
    assert json.loads((hg38_shards / "config.json").read_text()) == m["config"]
    assert m["inputs"][0]["sha256"] and m["inputs"][0]["bytes"] == (genome_dir / HG38).stat().st_size


def test_autotokenizer_round_trip(hg38_shards, genome_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(hg38_shards / "tokenizer"))
    assert tok.model_max_length == 512
    assert [tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3, 4]
    ids = (tok.bos_token_id, tok.pad_token_id, tok.eos_token_id, tok.unk_token_id, tok.mask_token_id)
    assert ids == (0, 1, 2, 3, 4)
    with pysam.FastaFile(str(genome_dir / HG38)) as fa:
        seq = fa.fetch("chr2", 50_000, 51_000).upper()
    ids = tok(seq)["input_ids"]
    assert ids[0] == 0 and ids[-1] == 2 and len(ids) < len(seq) // 2
    assert tok.decode(ids, skip_special_tokens=True) == seq
    assert tok.decode(ids) == "<s>" + seq + "</s>"
    batch = tok([seq[:300], seq], padding=True)
    assert batch["input_ids"][0][-1] == tok.pad_token_id


def test_synthetic_crlf_iupac_keep_case(tmp_path):
    rng = np.random.default_rng(0)
    parts = []
    for _ in range(40):
        parts.append("".join(rng.choice(list("ACGTacgt"), size=int(rng.integers(5, 300)))))
        parts.append("".join(rng.choice(list("NRYKMSWBDHV"), size=int(rng.integers(1, 4)))))
    seq = "".join(parts)
    lines = "\r\n".join(seq[i:i + 60] for i in range(0, len(seq), 60))
    path = tmp_path / "syn.fa.gz"
    with gzip.open(path, "wb") as f:
        f.write(f">syn desc\r\n{lines}\r\n>two\r\nACGTACGTACGTACGTTTGACCA\r\n".encode())
    for keep_case in (False, True):
        out = tmp_path / f"out{keep_case}"
        m = run_preprocess(PreprocessConfig(
            fasta=[str(path)], out=str(out), vocab_size=40, min_frequency=1, min_len=8, max_len=32,
            val_fraction=0.1, tokenizer_sample=1.0, keep_case=keep_case, min_shards=2, workers=1,
            progress=False))
        tok = load_tokenizer(out)
        want = seq if keep_case else seq.upper()
        n = 0
        for split in ("train", "val"):
            for _, ids, meta in all_samples(out, split):
                if meta["record"] != "syn":
                    continue
                text = tok.decode(ids.tolist())
                assert text == want[meta["start"]:meta["end"]]
                assert set(text.upper()) <= set("ACGT") and 8 <= len(text) <= 32
                n += 1
        assert n > 50
        acgt = sum(seq.upper().count(c) for c in "ACGT") + 23
        assert m["input_acgt_bases"] == acgt


def test_primary_preset_and_tokenizer_cap(tmp_path):
    """--records primary drops alt/random/chrUn records (counted); the tokenizer sample respects its cap."""
    rng = np.random.default_rng(1)
    names = ["chr1", "chr1_KI270706v1_random", "chrUn_GL000195v1", "chr6_GL000250v2_alt", "chrX", "chr10"]
    seqs = {n: "".join(rng.choice(list("ACGT"), size=3000)) for n in names}
    path = tmp_path / "mini.fa"
    path.write_text("".join(f">{n} some text\n{s}\n" for n, s in seqs.items()))
    m = run_preprocess(PreprocessConfig(
        fasta=[str(path)], out=str(tmp_path / "o"), records="primary", vocab_size=64, min_frequency=1,
        min_len=64, max_len=128, tokenizer_sample=1.0, tokenizer_max_bases=2000, val_fraction=0.1,
        min_shards=2, workers=1, progress=False))
    assert [r["name"] for r in m["records"]] == ["chr1", "chrX", "chr10"]
    assert m["excluded_records"] == ["chr1_KI270706v1_random", "chrUn_GL000195v1", "chr6_GL000250v2_alt"]
    assert m["dropped"]["excluded_record_bases"] == 9000 and m["input_acgt_bases"] == 18000
    assert 2000 <= m["tokenizer"]["trained_on"]["bases"] < 2000 + 128
    got = {meta["record"] for split in ("train", "val") for _, _, meta in all_samples(tmp_path / "o", split)}
    assert got == {"chr1", "chrX", "chr10"}

"""`preprocess --tokenizer-kind kmer|char`: fixed-vocabulary tokenizers (non-overlapping k-mers, single bases)
round-trip the real hg38 slice through the same stage as BPE (every sample of every shard decodes to its source
bases), load with plain transformers, record their kind, k and bp/token, and bad settings are refused."""

from __future__ import annotations

import json

import pysam
import pytest

from tests.helpers import HG38, all_samples
from tinydnabert.errors import InputError
from tinydnabert.formats import SPECIAL_TOKENS, load_manifest, shard_paths, tokenizer_fingerprint
from tinydnabert.prep.preprocess import PreprocessConfig, run_preprocess
from tinydnabert.prep.shards import read_shard
from tinydnabert.prep.tokenizer import fixed_vocab_size, load_existing, load_tokenizer


def _preprocess(out, genome_dir, **kw):
    return run_preprocess(PreprocessConfig(fasta=[str(genome_dir / HG38)], out=str(out), samples_per_shard=512,
                                           val_fraction=0.05, seed=0, workers=1, progress=False, **kw))


@pytest.mark.parametrize("kind,k", [("kmer", 6), ("kmer", 3), ("char", 1)])
def test_kmer_and_char_round_trip_the_real_genome(tmp_path, genome_dir, kind, k):
    out = tmp_path / f"{kind}{k}"
    m = _preprocess(out, genome_dir, tokenizer_kind=kind, **({"kmer_k": k} if kind == "kmer" else {}))
    assert m["tokenizer"]["kind"] == kind and m["tokenizer"]["k"] == k
    assert m["tokenizer"]["vocab_size"] == fixed_vocab_size(k) == len(SPECIAL_TOKENS) + 4 + (4 ** k if k > 1 else 0)
    assert "fixed_vocabulary" in m["tokenizer"]["trained_on"]
    assert m["config"]["tokenizer_kind"] == kind and m["config"]["kmer_k"] == (k if kind == "kmer" else 6)
    assert json.loads((out / "config.json").read_text()) == m["config"]
    assert m["tokenizer"]["sha256"] == tokenizer_fingerprint(out / "tokenizer")
    tok = load_tokenizer(out)
    with pysam.FastaFile(str(genome_dir / HG38)) as fa:
        upper = fa.fetch("chr2").upper()
    n = 0
    for split in ("train", "val"):
        tokens = bases = 0
        for shard, info in zip(shard_paths(out, split), m["splits"][split]["shards"], strict=True):
            samples = read_shard(shard)
            assert info["samples"] == len(samples)
            for key, ids, meta in samples:
                s, e = meta["start"], meta["end"]
                assert ids.min() >= len(SPECIAL_TOKENS) and ids.max() < m["tokenizer"]["vocab_size"]
                assert tok.decode(ids.tolist()) == upper[s:e], key
                # consecutive k-base words from the start, a remainder as single bases
                assert len(ids) == (e - s) // k + (e - s) % k, key
                tokens += len(ids)
                bases += e - s
                n += 1
        assert (m["splits"][split]["tokens"], m["splits"][split]["bases"]) == (tokens, bases)
    assert n == m["splits"]["train"]["samples"] + m["splits"]["val"]["samples"] > 2000
    # `tinydnabert verify` (the training loader's checks + every sample against the genome, fast decoder) agrees
    from tinydnabert.app.verify import verify_shards

    problems, _ = verify_shards(out, [str(genome_dir / HG38)])
    assert problems == []
    bp = m["splits"]["train"]["bp_per_token"]
    if kind == "char":
        assert bp == 1.0
    else:  # just under k: a segment's remainder (< k bases, mean (k - 1) / 2) is single-base tokens
        assert k - 0.3 < bp < k, bp


def test_kmer_tokenizer_through_transformers_and_reuse(tmp_path, genome_dir):
    """AutoTokenizer loads it with RoBERTa's special ids (pretraining, export and eval see nothing new); a second
    genome sharded with it (--tokenizer) keeps its kind, k and fingerprint."""
    from transformers import AutoTokenizer

    out = tmp_path / "k6"
    m = _preprocess(out, genome_dir, tokenizer_kind="kmer", min_shards=2)
    tok = AutoTokenizer.from_pretrained(str(out / "tokenizer"))
    ids = (tok.bos_token_id, tok.pad_token_id, tok.eos_token_id, tok.unk_token_id, tok.mask_token_id)
    assert ids == (0, 1, 2, 3, 4) and tok.model_max_length == 512
    with pysam.FastaFile(str(genome_dir / HG38)) as fa:
        seq = fa.fetch("chr2", 50_000, 51_003).upper()
    enc = tok(seq)["input_ids"]
    assert enc[0] == 0 and enc[-1] == 2 and len(enc) == 2 + 1003 // 6 + 1003 % 6
    assert tok.convert_ids_to_tokens(enc[1:3]) == [seq[:6], seq[6:12]]
    assert tok.decode(enc, skip_special_tokens=True) == seq and tok.decode(enc) == "<s>" + seq + "</s>"
    masked = tok(seq[:6] + "<mask>" + seq[12:18])["input_ids"]
    assert masked[1:4] == [enc[1], 4, tok.convert_tokens_to_ids(seq[12:18])]
    assert type(load_existing(out).model).__name__ == "WordLevel"
    lam = tmp_path / "lambda"
    m2 = run_preprocess(PreprocessConfig(fasta=[str(genome_dir / "lambda_phage.fa.gz")], out=str(lam),
                                         tokenizer=str(out), samples_per_shard=64, val_fraction=0.1, workers=1,
                                         progress=False))
    assert (m2["tokenizer"]["kind"], m2["tokenizer"]["k"], m2["tokenizer"]["sha256"]) == ("kmer", 6,
                                                                                         m["tokenizer"]["sha256"])
    _, ids2, meta = next(iter(all_samples(lam, "train")))
    assert len(load_tokenizer(lam).decode(ids2.tolist())) == meta["end"] - meta["start"]


@pytest.mark.parametrize("kw,flag", [
    ({"tokenizer_kind": "kmer", "kmer_k": 0}, "--kmer-k 0"),
    ({"tokenizer_kind": "kmer", "kmer_k": 13}, "--kmer-k 13"),
    ({"tokenizer_kind": "kmer", "kmer_k": 8}, "--kmer-k 8"),
    ({"kmer_k": 13}, "--kmer-k 13"),
    ({"tokenizer_kind": "wordpiece"}, "--tokenizer-kind 'wordpiece'"),
    ({"tokenizer_kind": "kmer", "vocab_size": 4096}, "--vocab-size 4096"),
    ({"tokenizer_kind": "char", "min_frequency": 2}, "--min-frequency 2"),
    ({"tokenizer_kind": "kmer", "keep_case": True}, "--keep-case"),
    ({"tokenizer_kind": "char", "tokenizer": "some/dir"}, "--tokenizer-kind char with --tokenizer"),
])
def test_bad_tokenizer_kind_settings_are_refused(tmp_path, kw, flag):
    with pytest.raises(InputError, match=flag.replace("'", ".")):
        PreprocessConfig(fasta=["x.fa"], out=str(tmp_path / "o"), **kw)


def test_cli_refuses_a_bad_kmer_k(tmp_path, genome_dir, capsys):
    from tinydnabert.app import cli

    code = cli.main(["preprocess", "--fasta", str(genome_dir / HG38), "--out", str(tmp_path / "o"),
                     "--tokenizer-kind", "kmer", "--kmer-k", "0", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "--kmer-k 0" in err and not (tmp_path / "o").exists()


def test_default_is_bpe(hg38_shards):
    m = load_manifest(hg38_shards)
    assert (m["tokenizer"]["kind"], m["tokenizer"]["k"]) == ("bpe", None)
    assert m["config"]["tokenizer_kind"] == "bpe"

"""`preprocess --tokenizer DIR`: a second genome sharded with the first one's tokenizer has the same
tokenizer fingerprint (so a mixture or a continued model sees the same ids); a tokenizer that is not ours
is refused before anything is written."""

from __future__ import annotations

import json

import pytest

from tinydnabert.app import cli
from tinydnabert.errors import InputError
from tinydnabert.formats import load_manifest, shard_paths
from tinydnabert.prep.preprocess import PreprocessConfig, run_preprocess
from tinydnabert.prep.shards import read_shard
from tinydnabert.prep.tokenizer import load_existing, load_tokenizer


def test_a_second_genome_with_the_first_ones_tokenizer(tmp_path, hg38_shards, genome_dir):
    out = tmp_path / "lambda"
    m = run_preprocess(PreprocessConfig(fasta=[str(genome_dir / "lambda_phage.fa.gz")], out=str(out),
                                        tokenizer=str(hg38_shards), samples_per_shard=64, val_fraction=0.1,
                                        seed=0, workers=1, progress=False))
    human = load_manifest(hg38_shards)
    assert m["tokenizer"]["sha256"] == human["tokenizer"]["sha256"]
    assert m["tokenizer"]["vocab_size"] == human["tokenizer"]["vocab_size"] == 256
    assert m["tokenizer"]["trained_on"] == {"reused": str(hg38_shards.resolve())}
    # the lambda shards decode with the human tokenizer back to lambda DNA
    tok = load_tokenizer(hg38_shards)
    key, ids, meta = read_shard(shard_paths(out, "train")[0])[0]
    assert set(tok.decode(ids.tolist())) <= set("ACGT") and len(tok.decode(ids.tolist())) == meta["end"] - meta["start"]


def test_a_tokenizer_that_is_not_ours_is_refused(tmp_path, hg38_shards, genome_dir, capsys):
    from tokenizers import Tokenizer, models

    wordlevel = tmp_path / "wl"
    wordlevel.mkdir()
    Tokenizer(models.WordLevel({"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "<mask>": 4, "A": 5},
                               unk_token="<unk>")).save(str(wordlevel / "tokenizer.json"))
    with pytest.raises(InputError, match="a WordLevel tokenizer"):
        load_existing(wordlevel)
    shuffled = tmp_path / "shuffled"
    shuffled.mkdir()
    raw = json.loads((hg38_shards / "tokenizer" / "tokenizer.json").read_text())
    for t in raw["added_tokens"]:
        if t["content"] in ("<s>", "<pad>"):
            t["id"] = 1 - t["id"]
    vocab = raw["model"]["vocab"]
    vocab["<s>"], vocab["<pad>"] = vocab["<pad>"], vocab["<s>"]
    (shuffled / "tokenizer.json").write_text(json.dumps(raw))
    with pytest.raises(InputError, match="special tokens"):
        load_existing(shuffled)
    code = cli.main(["preprocess", "--fasta", str(genome_dir / "lambda_phage.fa.gz"), "--out", str(tmp_path / "o"),
                     "--tokenizer", str(tmp_path / "none"), "--no-progress"])
    assert code == 2 and "no tokenizer.json there" in capsys.readouterr().err and not (tmp_path / "o").exists()

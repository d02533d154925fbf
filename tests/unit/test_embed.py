"""`tinydnabert embed` on real task files: shapes, input order, pooling arithmetic, determinism, truncation only
when asked, errors. Long sequences (windows) and both strands: test_embed_long.py."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from tinydnabert.app import cli
from tinydnabert.errors import InputError
from tinydnabert.eval.embed import embed_sequences, index_path, read_sequences
from tinydnabert.eval.encoder import load_encoder

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def enhancers(tmp_path_factory, benchmark_dir: Path) -> Path:
    """The first 40 records of the real iEnhancer-2L independent-test enhancers (a FASTA file)."""
    lines = (benchmark_dir / "iEnhancer2L" / "layer1" / "enhancer.ind.txt").read_text().splitlines()
    out = tmp_path_factory.mktemp("emb") / "enhancers.fa"
    out.write_text("\n".join(lines[:80]) + "\n")
    return out


def test_fasta_and_csv_give_one_row_per_sequence_in_input_order(tmp_path, tiny_export, enhancers, benchmark_dir):
    out = tmp_path / "e.npy"
    assert cli.main(["embed", "--model", str(tiny_export), "--input", str(enhancers), "--out", str(out),
                     "--batch-size", "7", "--no-progress"]) == 0
    vec = np.load(out)
    hidden = 32  # the tiny export's width
    assert vec.shape == (40, hidden) and vec.dtype == np.float32 and np.isfinite(vec).all()
    with open(index_path(out)) as f:
        rows = list(csv.DictReader(f))
    assert [r["name"] for r in rows][:2] == ["Chr11_6627824_6628024", "Chr11_9587224_9587424"]
    assert all(int(r["bases"]) == 200 and r["truncated"] == "0" and r["windows"] == "1" for r in rows)
    assert list(rows[0]) == ["index", "name", "bases", "tokens", "truncated", "windows"]  # new columns go last
    # Row i is sequence i whatever the batching: the same sequences reversed give the rows reversed.
    model, tok = load_encoder(tiny_export, "cpu")
    seqs = [s for _, s in read_sequences(enhancers)]
    back, _ = embed_sequences(model, tok, seqs[::-1], batch_size=5)
    np.testing.assert_allclose(back[::-1], vec, atol=1e-5)
    again, _ = embed_sequences(model, tok, seqs, batch_size=40)  # deterministic: eval mode, no dropout
    np.testing.assert_allclose(again, vec, atol=1e-5)
    # A real GUE CSV (a `sequence` column)
    csv_in = tmp_path / "test.csv"
    src = (benchmark_dir / "GUE" / "prom" / "prom_core_all" / "test.csv").read_text().splitlines()
    csv_in.write_text("\n".join(src[:26]) + "\n")
    assert cli.main(["embed", "--model", str(tiny_export), "--input", str(csv_in), "--out", str(tmp_path / "c.npy"),
                     "--no-progress"]) == 0
    assert np.load(tmp_path / "c.npy").shape == (25, hidden)


def test_pooling_is_the_mean_over_the_sequences_own_tokens(tiny_export, enhancers):
    import torch

    model, tok = load_encoder(tiny_export, "cpu")
    seq = read_sequences(enhancers)[0][1]
    ids = torch.tensor([tok(seq)["input_ids"]])
    with torch.no_grad():
        hs = model(input_ids=ids, output_hidden_states=True).hidden_states
    mean, n = embed_sequences(model, tok, [seq, seq[:50]], pooling="mean")
    np.testing.assert_allclose(mean[0], hs[-1][0, 1:-1].mean(0).numpy(), atol=1e-5)  # not <s>, not </s>
    cls, _ = embed_sequences(model, tok, [seq], pooling="cls", layer=0)
    np.testing.assert_allclose(cls[0], hs[0][0, 0].numpy(), atol=1e-5)
    assert n[0] == ids.shape[1]
    # A padded batch gives the same vector as the sequence alone (padding is masked out).
    alone, _ = embed_sequences(model, tok, [seq[:50]])
    np.testing.assert_allclose(alone[0], mean[1], atol=1e-5)


def test_truncation_only_when_asked_and_bad_input_is_refused(tmp_path, tiny_export, enhancers, capsys):
    import torch

    out = tmp_path / "t.npy"
    assert cli.main(["embed", "--model", str(tiny_export), "--input", str(enhancers), "--out", str(out),
                     "--long", "truncate", "--window", "12", "--no-progress"]) == 0
    with open(index_path(out)) as f:
        rows = list(csv.DictReader(f))
    assert all(r["truncated"] == "1" and r["tokens"] == "12" and r["windows"] == "1" for r in rows)
    # today's truncation: <s>, the first 10 sequence tokens, </s>
    model, tok = load_encoder(tiny_export, "cpu")
    ids = tok(read_sequences(enhancers)[0][1])["input_ids"]
    with torch.no_grad():
        h = model(input_ids=torch.tensor([ids[:11] + ids[-1:]])).last_hidden_state[0]
    np.testing.assert_allclose(np.load(out)[0], h[1:-1].mean(0).numpy(), atol=1e-6)
    # --max-length, the flag's old name, is the window now: the same sequences in windows, nothing truncated
    assert cli.main(["embed", "--model", str(tiny_export), "--input", str(enhancers), "--out", str(out),
                     "--max-length", "12", "--no-progress", "--overwrite"]) == 0
    with open(index_path(out)) as f:
        rows = list(csv.DictReader(f))
    assert all(r["truncated"] == "0" and int(r["windows"]) > 1 and int(r["tokens"]) == len(tok(s)["input_ids"])
               for r, (_, s) in zip(rows, read_sequences(enhancers)))
    assert cli.main(["embed", "--model", str(tiny_export), "--input", str(enhancers), "--out", str(out),
                     "--no-progress"]) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    bad = tmp_path / "bad.csv"
    bad.write_text("seq,label\nACGT,1\n")
    assert cli.main(["embed", "--model", str(tiny_export), "--input", str(bad), "--out", str(tmp_path / "b.npy")]) == 2
    assert "no 'sequence' column" in capsys.readouterr().err and not (tmp_path / "b.npy").exists()
    assert cli.main(["embed", "--model", str(tmp_path), "--input", str(enhancers),
                     "--out", str(tmp_path / "m.npy")]) == 2
    assert "no config.json" in capsys.readouterr().err
    with pytest.raises(InputError, match="--layer 9 out of range"):
        embed_sequences(model, tok, ["ACGT"], layer=9)
    with pytest.raises(InputError, match="--stride 11 is wider than a window's 10 sequence tokens"):
        embed_sequences(model, tok, ["ACGT"], max_length=12, stride=11)
    with pytest.raises(InputError, match="--window 300 exceeds what the model's position table allows \\(256"):
        embed_sequences(model, tok, ["ACGT"], max_length=300)

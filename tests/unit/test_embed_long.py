"""`embed` on sequences longer than the model's context (overlapping windows of token ids) and on both strands:
a real 20 kbp region of GRCh37 chr20 becomes one vector from every one of its tokens; the windows' pooling equals
a computation by hand with plain transformers; --strands both is the mean of the two strands' vectors; a sequence
that fits one window gets today's vector. No training: the session's tiny export, fractions of a second each."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from tinydnabert.app import cli
from tinydnabert.errors import InputError
from tinydnabert.eval.common import reverse_complement
from tinydnabert.eval.embed import embed, index_path, owned_ranges, window_starts
from tinydnabert.eval.encoder import load_encoder

pytestmark = pytest.mark.usefixtures("one_thread")

REGION = ("20", 30_000_000, 30_020_000)  # GRCh37 chr20:30,000,001-30,020,000: 20 kbp, no N


@pytest.fixture(scope="module")
def region(genome_dir: Path) -> str:
    import pysam

    with pysam.FastaFile(str(genome_dir / "grch37_chr20.fa.gz")) as fa:
        seq = fa.fetch(*REGION).upper()
    assert len(seq) == 20_000 and set(seq) <= set("ACGT")
    return seq


@pytest.fixture(scope="module")
def encoder(tiny_export):
    return load_encoder(tiny_export, "cpu")


def _by_hand(tiny_export: Path, seq: str, window: int, stride: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(mean, cls, windows) of `seq` with plain transformers, one window per forward pass, no padding: its token ids
    cut into windows of `window` - 2 sequence tokens `stride` apart (the last flush with the end), each token pooled
    from the covering window where it is furthest from an edge (the first such window on a tie)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_export))
    model = AutoModel.from_pretrained(str(tiny_export), add_pooling_layer=False).eval()
    ids = tok(seq)["input_ids"]
    body, w = ids[1:-1], window - 2
    starts, a = [], 0
    while a + w < len(body):
        starts.append(a)
        a += stride
    starts.append(max(0, len(body) - w))
    with torch.no_grad():
        states = [model(input_ids=torch.tensor([[ids[0], *body[a:a + w], ids[-1]]])).last_hidden_state[0]
                  for a in starts]
    pooled = []
    for p in range(len(body)):
        best = max((min(p - a, a + w - 1 - p), -j) for j, a in enumerate(starts) if a <= p < a + w)
        pooled.append(states[-best[1]][p - starts[-best[1]] + 1])
    return (torch.stack(pooled).mean(0).numpy(), torch.stack([h[0] for h in states]).mean(0).numpy(), len(starts))


def test_a_20kbp_region_is_one_vector_from_every_token(tmp_path, tiny_export, region, encoder):
    import torch

    fa = tmp_path / "region.fa"
    short = region[:300]  # fits one window
    fa.write_text(f">chr20:30000001-30020000\n{region}\n>short\n{short}\n")
    out = tmp_path / "r.npy"
    assert cli.main(["embed", "--model", str(tiny_export), "--input", str(fa), "--out", str(out),
                     "--no-progress"]) == 0
    vec = np.load(out)
    assert vec.shape == (2, 32) and np.isfinite(vec).all()
    with open(index_path(out)) as f:
        rows = list(csv.DictReader(f))
    model, tok = encoder
    n = len(tok(region)["input_ids"])  # ~6,500 tokens: 25x the model's 256
    width = 254                         # the model's 256 tokens minus <s> </s>; the default stride is half of it
    assert rows[0] == {"index": "0", "name": "chr20:30000001-30020000", "bases": "20000", "tokens": str(n),
                       "truncated": "0", "windows": str(len(window_starts(n - 2, width, 127)))}
    assert int(rows[0]["windows"]) == -(-(n - 2 - width) // 127) + 1 and rows[1]["windows"] == "1"
    # every token of the region pooled exactly once
    ranges = owned_ranges(window_starts(n - 2, width, 127), n - 2, width)
    assert ranges[0][0] == 0 and ranges[-1][1] == n - 2 and all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
    # --long truncate: the region's first window only, as before windows existed
    assert cli.main(["embed", "--model", str(tiny_export), "--input", str(fa), "--out", str(tmp_path / "t.npy"),
                     "--long", "truncate", "--no-progress"]) == 0
    # the short sequence: today's vector, the mean over its own tokens of one forward pass (padded in a batch with
    # the region's windows: to float32 rounding), and alone bit for bit the one truncation gives
    alone, _, _ = _by_hand(tiny_export, short, 256, 127)
    np.testing.assert_allclose(vec[1], alone, atol=1e-6)
    np.testing.assert_allclose(vec[1], np.load(tmp_path / "t.npy")[1], atol=1e-6)
    assert np.array_equal(embed(model, tok, [short]).vectors, embed(model, tok, [short], long="truncate").vectors)
    with open(index_path(tmp_path / "t.npy")) as f:
        cut = next(csv.DictReader(f))
    assert (cut["tokens"], cut["truncated"], cut["windows"]) == ("256", "1", "1")
    ids = tok(region)["input_ids"]
    with torch.no_grad():
        first = model(input_ids=torch.tensor([ids[:255] + ids[-1:]])).last_hidden_state[0, 1:-1].mean(0).numpy()
    np.testing.assert_allclose(np.load(tmp_path / "t.npy")[0], first, atol=1e-6)
    assert not np.allclose(first, vec[0], atol=1e-3)


@pytest.mark.parametrize("window, stride", [(0, 0), (64, 40), (40, 38)])
def test_windows_pooling_equals_a_computation_by_hand(tiny_export, region, encoder, window, stride):
    """Default window and stride on a sequence needing 2-3 windows; uneven strides (the last window's step
    shorter than the stride) on one needing more."""
    model, tok = encoder
    seq = region[3_000:4_200] if window == 0 else region[7_000:7_600]
    size = window or 256
    step = stride or (size - 2) // 2
    mean, cls, k = _by_hand(tiny_export, seq, size, step)
    assert (2 <= k <= 3) if window == 0 else k > 3
    e = embed(model, tok, [seq, region[:50]], window=window, stride=stride, batch_size=3)
    assert e.windows.tolist() == [k, 1]
    np.testing.assert_allclose(e.vectors[0], mean, atol=1e-5)
    c = embed(model, tok, [seq], pooling="cls", window=window, stride=stride)
    np.testing.assert_allclose(c.vectors[0], cls, atol=1e-5)  # cls over windows: the mean of their <s>


def test_both_strands_is_the_mean_of_the_sequence_and_its_reverse_complement(tiny_export, region, encoder):
    model, tok = encoder
    seqs = [region[:60], region[10_000:11_500]]  # one window (of 64 tokens); several
    rc = [s.translate(str.maketrans("ACGT", "TGCA"))[::-1] for s in seqs]
    both = embed(model, tok, seqs, strands="both", window=64)
    fwd = embed(model, tok, seqs, window=64)
    back = embed(model, tok, rc, window=64)
    np.testing.assert_allclose(both.vectors, (fwd.vectors + back.vectors) / 2, atol=1e-5)
    assert both.windows.tolist() == (fwd.windows + back.windows).tolist() and both.windows[0] == 2
    assert both.tokens.tolist() == fwd.tokens.tolist()
    for pooling in ("cls", "mean"):  # each sequence alone, too: batching changes nothing
        for s, r in zip(seqs, rc):
            v = embed(model, tok, [s], pooling, strands="both").vectors[0]
            one = (embed(model, tok, [s], pooling).vectors[0] + embed(model, tok, [r], pooling).vectors[0]) / 2
            np.testing.assert_allclose(v, one, atol=1e-5)


def test_reverse_complement_maps_iupac_and_refuses_the_rest(tmp_path, tiny_export, capsys):
    assert reverse_complement("AACGTN") == "NACGTT"
    assert reverse_complement("RYKMSWBDHVacgt") == "acgtBDHVWSKMRY"
    assert reverse_complement(reverse_complement("ACGTNRYKMSWBDHV")) == "ACGTNRYKMSWBDHV"
    with pytest.raises(InputError, match=r"row 2: character 'U' at position 4 has no complement"):
        reverse_complement("ACGU", "row 2")
    bad = tmp_path / "rna.csv"
    bad.write_text("name,sequence\nok,ACGTACGT\nrna,ACGUACGU\n")
    out = tmp_path / "b.npy"
    assert cli.main(["embed", "--model", str(tiny_export), "--input", str(bad), "--out", str(out),
                     "--strands", "both", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"error: {bad}: rna: character 'U' at position 4 has no complement" in err and "--strands forward" in err
    assert not out.exists() and not index_path(out).exists()

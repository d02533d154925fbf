"""FASTA reading, record selection, split points and seeded segmentation (synthetic + real files)."""

from __future__ import annotations

import gzip

import numpy as np
import pysam
import pytest

from tinydnabert.errors import InputError
from tinydnabert.prep.fasta import RecordSelector, acgt_runs, check_fasta_file, count_acgt, iter_records
from tinydnabert.prep.segment import cut_runs, record_rngs, reverse_complement, segment_record, segment_text


def write(path, data: bytes, gz: bool = False):
    if gz:
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)
    return path


def test_crlf_lowercase_multi_record(tmp_path):
    p = write(tmp_path / "a.fa.gz", b">r1 some description\r\nacgtNNAC\r\nGT\r\n\r\n>r2\r\nRYacgt\r\n", gz=True)
    recs = list(iter_records([p]))
    assert [(r.name, r.seq) for r in recs] == [("r1", b"ACGTNNACGT"), ("r2", b"RYACGT")]
    kept = list(iter_records([p], keep_case=True))
    assert kept[0].seq == b"acgtNNACGT"


def test_acgt_runs_split_at_n_and_iupac():
    seq = b"ACGTNACGRYKMSWBDHVTTTTNNNNA"
    runs = acgt_runs(seq)
    assert runs.tolist() == [[0, 4], [5, 8], [18, 22], [26, 27]]
    for s, e in runs.tolist():
        assert set(seq[s:e]) <= set(b"ACGT")
    assert acgt_runs(b"").shape == (0, 2)
    assert acgt_runs(b"NNNN").shape == (0, 2)
    # Lower case is a split point only when case is kept and the caller did not upper-case.
    assert acgt_runs(b"ACgtNA", keep_case=True).tolist() == [[0, 4], [5, 6]]
    assert acgt_runs(b"ACgtNA").tolist() == [[0, 2], [5, 6]]


def test_count_acgt():
    assert count_acgt(b"ACGTacgtNRY") == 8


def test_cut_runs_bounds_and_accounting():
    rng = np.random.default_rng(0)
    runs = np.array([[0, 100], [150, 5000], [5001, 5300], [6000, 6255]])
    starts, ends, dropped, pieces = cut_runs(runs, 256, 1024, rng)
    lengths = ends - starts
    assert lengths.min() >= 256 and lengths.max() <= 1024
    assert lengths.sum() + dropped == (runs[:, 1] - runs[:, 0]).sum()
    # Segments never leave their run and never overlap.
    for s, e in zip(starts, ends):
        assert any(a <= s and e <= b for a, b in runs)
    assert np.all(starts[1:] >= ends[:-1])
    assert pieces >= 2  # the 100 bp and 255 bp runs are dropped whole


def test_segmentation_is_seeded_per_record():
    runs = np.array([[0, 100_000]])
    kw = dict(seed=3, min_len=256, max_len=1024, reverse_complement=True, val_fraction=0.1, val_record=False)
    a = segment_record("chr1", runs, **kw)
    np.random.seed(123)  # global state must not matter
    b = segment_record("chr1", runs, **kw)
    c = segment_record("chr2", runs, **kw)
    assert np.array_equal(a.starts, b.starts) and np.array_equal(a.reverse, b.reverse)
    assert np.array_equal(a.val, b.val)
    assert not np.array_equal(a.starts[:20], c.starts[:20])
    # Changing the split fraction does not move a segment boundary.
    d = segment_record("chr1", runs, **{**kw, "val_fraction": 0.5, "reverse_complement": False})
    assert np.array_equal(a.starts, d.starts)
    assert 0.3 < a.reverse.mean() < 0.7 and 0.05 < a.val.mean() < 0.15
    assert not d.reverse.any()
    assert record_rngs(3, "x")["length"].random() == record_rngs(3, "x")["length"].random()


def test_segment_text_reverse_complement():
    seq = b"AACGTTTG"
    assert segment_text(seq, 1, 5, False) == "ACGT"
    assert segment_text(seq, 4, 8, True) == "CAAA"
    assert reverse_complement("AACG") == "CGTT"


def test_record_selector_primary_preset():
    sel = RecordSelector("primary")
    keep = ["NC_000001.11", "NC_000022.11", "NC_000023.11", "NC_000024.10", "NC_012920.1",
            "chr1", "chr22", "chrX", "chrY", "chrM", "1", "20", "X", "MT"]
    drop = ["NT_187361.1", "NW_025791756.1", "NC_000025.1", "chr1_KI270706v1_random", "chrUn_GL000195v1",
            "chr6_GL000250v2_alt", "chr1_KN196472v1_fix", "chr10", "chr23", "23", "NC_001133.9"]
    drop.remove("chr10")
    assert all(sel.keep(n) for n in keep), [n for n in keep if not sel.keep(n)]
    assert not any(sel.keep(n) for n in drop), [n for n in drop if sel.keep(n)]
    assert sel.keep("chr10")
    # include/exclude are whole-name regexes: chr1 does not select chr10.
    sel = RecordSelector("all", include=["chr1", "chr2"], exclude=["chr2"])
    assert sel.keep("chr1") and not sel.keep("chr10") and not sel.keep("chr2")
    with pytest.raises(InputError, match="not a valid regular expression"):
        RecordSelector("all", include=["chr(1"])


@pytest.mark.parametrize("data,match", [
    (b"", "empty file"),
    (b"hello\n>r1\nACGT\n", "line 1: expected a '>' FASTA header"),
    (b"@r1\nACGT\n+\nIIII\n", "line 1: expected a '>'"),
])
def test_check_fasta_file_rejects(tmp_path, data, match):
    p = write(tmp_path / "bad.fa", data)
    with pytest.raises(InputError, match=match) as e:
        check_fasta_file(p)
    assert str(p) in str(e.value)


@pytest.mark.parametrize("data,match", [
    (b">r1\nACGT\n>r2\n>r3\nACGT\n", r"record 'r2': header with no sequence"),
    (b">r1\nACGT\n>r2\nAC1GT\n", r"record 'r2', position 3: invalid character '1'"),
    (b">r1\nAC*GT\n", r"record 'r1', position 3: invalid character '\*'"),
    (b">r1\nACGT\nAC-GT\n", r"record 'r1', position 7: invalid character '-'"),
    (b">r1\nAC GT\n", r"position 3: invalid character ' '"),
    (b">r1\nACGT\n>\nACGT\n", r"record 2: header '>' with no name"),
])
def test_iter_records_rejects_bad_sequence(tmp_path, data, match):
    p = write(tmp_path / "bad.fa.gz", data, gz=True)
    with pytest.raises(InputError, match=match) as e:
        list(iter_records([p]))
    assert str(p) in str(e.value)


def test_truncated_gzip_and_duplicates(tmp_path, genome_dir):
    raw = (genome_dir / "lambda_phage.fa.gz").read_bytes()
    p = write(tmp_path / "trunc.fa.gz", raw[: len(raw) // 2])
    with pytest.raises(InputError, match="truncated or corrupt") as e:
        list(iter_records([p]))
    assert str(p) in str(e.value)
    # BGZF cut in half: the head check passes, htslib fails mid-record.
    raw = (genome_dir / "hg38_chr2_1-2333275.fa.gz").read_bytes()
    p = write(tmp_path / "trunc.bgzf.fa.gz", raw[: len(raw) // 2])
    with pytest.raises(InputError, match="truncated or corrupt") as e:
        list(iter_records([p]))
    assert str(p) in str(e.value)
    lam = genome_dir / "lambda_phage.fa.gz"
    with pytest.raises(InputError, match="duplicate record name"):
        list(iter_records([lam, lam]))


def test_real_files_formats_and_counts(genome_dir):
    """BGZF with index, plain gzip: names, lengths and A/C/G/T counts match pysam's indexed view."""
    recs = list(iter_records([genome_dir / "yeast_S288C_R64-2-1.fa.gz", genome_dir / "human_chrM.fa.gz",
                              genome_dir / "lambda_phage.fa.gz", genome_dir / "hg38_chr2_1-2333275.fa.gz"]))
    names = [r.name for r in recs]
    assert len(names) == 17 + 3 and names[-3:] == ["MT_human", "gi|9626243|ref|NC_001416.1|", "chr2"]
    assert sum(len(r.seq) for r in recs[:17]) == 12_157_105
    assert len(recs[17].seq) == 16_569 and len(recs[18].seq) == 48_502
    hg = recs[-1]
    with pysam.FastaFile(str(genome_dir / "hg38_chr2_1-2333275.fa.gz")) as fa:
        src = fa.fetch("chr2")
    assert hg.seq == src.upper().encode()
    assert sum(1 for c in src if c.islower()) == 831_507  # the soft-masking the reader upper-cased
    runs = acgt_runs(hg.seq)
    assert runs[0, 0] == 10_000  # starts with a 10 kb N run
    assert int((runs[:, 1] - runs[:, 0]).sum()) == count_acgt(hg.seq) == 2_323_275


def test_acgt_runs_chunked_matches_scalar_reference():
    """Runs crossing the 16 Mbp chunk boundaries (here: tiny chunks) are stitched correctly."""
    rng = np.random.default_rng(0)
    for _ in range(200):
        seq = bytes(rng.choice(list(b"ACGTN"), size=int(rng.integers(0, 60)), p=[.2, .2, .2, .2, .2]).astype(np.uint8))
        ref, i = [], 0
        while i < len(seq):
            if seq[i] != ord("N"):
                j = i
                while j < len(seq) and seq[j] != ord("N"):
                    j += 1
                ref.append([i, j])
                i = j
            else:
                i += 1
        for chunk in (1, 2, 7, 1 << 24):
            assert acgt_runs(seq, chunk=chunk).tolist() == ref

"""Reading VCFs (the real chr20 files; synthetic lines only for malformed input), the reference FASTA with contig
name matching, and where `score-variants` puts each variant's window — all without a model."""

from __future__ import annotations

import dataclasses
import gzip
import shutil
from pathlib import Path

import pytest

from tinydnabert.errors import InputError
from tinydnabert.eval.variants import diff_span, plan_variants, revcomp
from tinydnabert.prep.vcf import Reference, allele_frequency, is_symbolic, read_vcf

HEADER = "##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"


@pytest.fixture(scope="module")
def variants_dir(real_data: Path) -> Path:
    return real_data / "variants"


@pytest.fixture(scope="module")
def chr20(genome_dir: Path) -> Reference:
    return Reference(genome_dir / "grch37_chr20.fa.gz")


def _vcf_lines(path: Path) -> list[str]:
    with gzip.open(path, "rt") as f:
        return f.read().splitlines()


def test_real_snvs_parse_with_their_line_numbers_and_frequencies(variants_dir):
    path = variants_dir / "gonl_chr20_release4.vcf.gz"
    recs = read_vcf(path)
    lines = _vcf_lines(path)
    assert len(recs) == 7 and all(len(r.ref) == 1 and len(r.alts) == 1 and len(r.alts[0]) == 1 for r in recs)
    for r in recs:  # the line number is the file's (1-based), header lines counted
        assert lines[r.line - 1].split("\t")[:5] == [r.chrom, str(r.pos), r.id, r.ref, r.alts[0]]
    snp = next(r for r in recs if r.id == "rs6078030")
    assert (snp.chrom, snp.pos, snp.ref, snp.alts) == ("20", 61098, "C", ("T",))
    assert allele_frequency(snp, 0) == pytest.approx(225 / 996)  # no AF: AC/AN
    assert len({r.line for r in recs}) == 7


def test_real_indels_parse_with_af(variants_dir):
    for name in ("vt_chr20_indels.vcf.gz", "vt_chr20_indels.normalized.vcf.gz"):
        recs = read_vcf(variants_dir / name)
        assert len(recs) == 194 and all(len(r.ref) != len(r.alts[0]) for r in recs)
        assert recs[0].alts == (("ACCA",) if name.startswith("vt_chr20_indels.vcf") else ("TCCA",))
        assert allele_frequency(recs[0], 0) == pytest.approx(0.08)


def test_multiallelic_alt_splits_and_symbolic_alleles_are_recognised(tmp_path, variants_dir):
    line = _vcf_lines(variants_dir / "gonl_chr20_release4.vcf.gz")[-1].split("\t")
    line[4] = "t,A,<NON_REF>,*"
    line[7] = "AC=1,2,0,0;AN=996;AF=0.001,0.002,0,0"
    vcf = tmp_path / "multi.vcf"
    vcf.write_text(HEADER + "\t".join(line) + "\n")
    (rec,) = read_vcf(vcf)
    assert rec.alts == ("T", "A", "<NON_REF>", "*") and rec.line == 3
    assert [is_symbolic(a) for a in rec.alts] == [False, False, True, True]
    assert allele_frequency(rec, 1) == pytest.approx(0.002)
    assert all(is_symbolic(a) for a in ("<DEL>", "G]17:198982]", "]13:123456]T", ".A", "G."))


@pytest.mark.parametrize("line, message", [
    ("20 60309 . G T . PASS .", r"line 3: 1 tab-separated column\(s\).*spaces instead of tabs"),
    ("20\t60309\t.\tG\tT\t.\tPASS", r"line 3: 7 tab-separated column"),
    ("20\t6o309\t.\tG\tT\t.\tPASS\t.", r"line 3: POS '6o309' is not a whole number"),
    ("20\t60309\t.\tG-\tT\t.\tPASS\t.", r"line 3, 20:60309: REF 'G-' is not a base sequence"),
    ("20\t60309\t.\tG\tT,12\t.\tPASS\t.", r"line 3, 20:60309: ALT 'T,12' holds '12'"),
    ("20\t60309\t.\tG\t\t.\tPASS\t.", r"line 3, 20:60309: ALT '' holds ''"),
    ("\t60309\t.\tG\tT\t.\tPASS\t.", r"line 3: empty CHROM"),
])
def test_a_malformed_line_is_named_by_its_number(tmp_path, line, message):
    vcf = tmp_path / "bad.vcf"
    vcf.write_text(HEADER + line + "\n20\t60310\t.\tA\tC\t.\tPASS\t.\n")
    with pytest.raises(InputError, match=message):
        read_vcf(vcf)


def test_not_a_vcf_is_refused(tmp_path):
    bed = tmp_path / "regions.vcf"
    bed.write_text("20\t60308\t60309\tsnp\n")
    with pytest.raises(InputError, match=r"line 1: a record before the '#CHROM"):
        read_vcf(bed)
    bed.write_text("#chrom\tstart\tend\n20\t1\t2\n")
    with pytest.raises(InputError, match=r"line 1: expected the VCF header line"):
        read_vcf(bed)
    empty = tmp_path / "empty.vcf.gz"
    with gzip.open(empty, "wt") as f:
        f.write(HEADER)
    with pytest.raises(InputError, match="no variant records"):
        read_vcf(empty)
    with pytest.raises(InputError, match=r"missing\.vcf: VCF file not found"):
        read_vcf(tmp_path / "missing.vcf")
    broken = tmp_path / "broken.vcf.gz"
    broken.write_bytes(gzip.compress((HEADER + "20\t1\t.\tA\tC\t.\t.\t.\n").encode())[:40])
    with pytest.raises(InputError, match=r"broken\.vcf\.gz: cannot read"):
        read_vcf(broken)


# ------------------------------------------------------------------------------------------------ the reference

def test_reference_matches_chr_prefixes_and_every_real_ref(chr20, variants_dir, genome_dir):
    assert chr20.names == ["20"] and chr20.lengths["20"] == 63_025_520
    assert chr20.resolve("20") == "20" and chr20.resolve("chr20") == "20" and chr20.resolve("CHR20") == "20"
    assert chr20.resolve("X") is None and chr20.resolve("chrX") is None and chr20.resolve("2") is None
    for name in ("gonl_chr20_release4.vcf.gz", "vt_chr20_indels.vcf.gz", "vt_chr20_indels.normalized.vcf.gz"):
        assert all(chr20.mismatch(r, "20") is None for r in read_vcf(variants_dir / name))
    rec = read_vcf(variants_dir / "gonl_chr20_release4.vcf.gz")[0]
    wrong = dataclasses.replace(rec, ref="A")
    assert chr20.mismatch(wrong, "20") == "20:60309 REF is A but the FASTA holds G there"
    past = dataclasses.replace(rec, pos=63_025_520, ref="AC")
    assert "REF AC lies outside FASTA contig '20' (1-63,025,520)" in chr20.mismatch(past, "20")
    with pytest.raises(InputError, match=r"nope\.fa: reference FASTA not found"):
        Reference(genome_dir / "nope.fa")


def test_plain_and_plain_gzip_fastas_are_read_too(tmp_path, chr20, capsys):
    seq = chr20.fetch("20", 60_000, 62_000)
    plain = tmp_path / "chr20.fa"
    plain.write_text(">chr20 a slice\n" + "\n".join(seq[i:i + 60] for i in range(0, len(seq), 60)) + "\n")
    ref = Reference(plain)  # pysam writes chr20.fa.fai beside it
    assert ref.names == ["chr20"] and ref.resolve("20") == "chr20" and ref.fetch("chr20", 10, 20) == seq[10:20]
    gz = tmp_path / "chr20.fa.gz"  # plain gzip, not BGZF: pysam cannot index it, so it is read into memory
    with open(plain, "rb") as src, gzip.open(gz, "wb") as dst:
        shutil.copyfileobj(src, dst)
    ref = Reference(gz)
    assert ref.fetch("chr20", 1990, 2100) == seq[1990:] and "read it into memory" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ windows

def test_diff_span_covers_every_placement_of_an_indel():
    assert diff_span("xAy", "xCy") == (1, 2, 2)                   # SNV
    assert diff_span("xAAAy", "xAAy") == (1, 4, 3)                # a deletion anywhere in AAA
    assert diff_span("xAAy", "xAAAy") == (1, 3, 4)                # an insertion anywhere in AA
    assert diff_span("xy", "xGy") == (1, 1, 2)                    # no repeat: nothing of REF changed
    assert diff_span("xCACAy", "xCAy") == (1, 5, 3)               # a repeat unit of 2
    assert revcomp("AACGTN") == "NACGTT"


def test_windows_are_tiles_around_the_variant_and_ignore_how_an_indel_is_written(chr20, variants_dir):
    window = 512
    plans = {}
    for name in ("vt_chr20_indels.vcf.gz", "vt_chr20_indels.normalized.vcf.gz", "gonl_chr20_release4.vcf.gz"):
        vs = plan_variants(read_vcf(variants_dir / name), chr20, window)
        assert all(v.status == "ok" for v in vs), [(v.record.where, v.status) for v in vs if v.status != "ok"]
        for v in vs:
            assert v.start % (window // 2) == 0 and v.end - v.start == window
            s, er, ea = v.span
            assert v.ref_seq == chr20.fetch("20", v.start, v.end)
            assert v.alt_seq[:s] == v.ref_seq[:s] and v.alt_seq[ea:] == v.ref_seq[er:]
            assert min(s, window - er) >= window // 4 - (er - s) // 2 - 1  # context on each side
            # the ALT window is the reference with REF replaced by ALT, whatever the representation
            at = v.record.pos - 1 - v.start
            assert v.alt_seq == v.ref_seq[:at] + v.alt + v.ref_seq[at + len(v.record.ref):]
        plans[name] = vs
    # vt normalize moved many indels; each keeps its window and both haplotypes
    lines = [ln for ln in _vcf_lines(variants_dir / "vt_chr20_indels.normalized.vcf.gz") if not ln.startswith("#")]
    old = {}
    for ln, v in zip(lines, plans["vt_chr20_indels.normalized.vcf.gz"]):
        info = dict(kv.partition("=")[::2] for kv in ln.split("\t")[7].split(";"))
        old[info.get("OLD_VARIANT", f"20:{v.record.pos}:{v.record.ref}/{v.alt}")] = v
    moved = 0
    for v in plans["vt_chr20_indels.vcf.gz"]:
        n = old[f"20:{v.record.pos}:{v.record.ref}/{v.alt}"]
        moved += n.record.pos != v.record.pos
        assert (n.start, n.ref_seq, n.alt_seq, n.span) == (v.start, v.ref_seq, v.alt_seq, v.span)
    assert moved >= 60


def test_ref_mismatch_names_the_record_unless_skipped(tmp_path, chr20, variants_dir, capsys):
    lines = _vcf_lines(variants_dir / "gonl_chr20_release4.vcf.gz")
    i = next(k for k, ln in enumerate(lines) if ln.startswith("20\t61098\t"))
    cols = lines[i].split("\t")
    cols[3] = "G"  # the FASTA holds C
    lines[i] = "\t".join(cols)
    vcf = tmp_path / "mismatch.vcf"
    vcf.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=rf"mismatch\.vcf, line {i + 1}: 20:61098 REF is G but the FASTA holds C "
                                         r"there .*--on-mismatch skip"):
        plan_variants(read_vcf(vcf), chr20, 512, "error", vcf)
    vs = plan_variants(read_vcf(vcf), chr20, 512, "skip", vcf)
    assert [v.status for v in vs].count("ref_mismatch") == 1 and [v.status for v in vs].count("ok") == 6
    assert f"line {i + 1}, 20:61098: 20:61098 REF is G" in capsys.readouterr().err


def test_statuses_of_what_cannot_be_scored(tmp_path, chr20):
    first = next(i for i in range(0, 200_000, 1000) if "N" not in chr20.fetch("20", i, i + 1000))
    gap_edge = next(i for i in range(first - 1000, first + 1000) if chr20.fetch("20", i, i + 1) != "N")
    base = lambda p: chr20.fetch("20", p - 1, p)  # noqa: E731 - 1-based
    long_ref = chr20.fetch("20", 1_000_000, 1_000_300)
    rows = [("20", gap_edge + 5, base(gap_edge + 5), "A" if base(gap_edge + 5) != "A" else "C"),  # N in window
            ("20", 1_000_001, long_ref, long_ref[0]),                    # a 299-bp deletion: > window / 2
            ("20", 2_000_000, base(2_000_000), "<DEL>"),
            ("20", 2_000_000, base(2_000_000), "."),
            ("20", 2_000_000, base(2_000_000), base(2_000_000)),
            ("22", 100, "A", "C")]
    vcf = tmp_path / "odd.vcf"
    vcf.write_text(HEADER + "".join(f"{c}\t{p}\t.\t{r}\t{a}\t.\tPASS\t.\n" for c, p, r, a in rows))
    vs = plan_variants(read_vcf(vcf), chr20, 512, "error", vcf)
    assert [v.status for v in vs] == ["n_in_window", "too_long", "symbolic_alt", "no_alt", "not_a_variant",
                                      "contig_missing"]
    only_22 = tmp_path / "only22.vcf"
    only_22.write_text(HEADER + "22\t100\t.\tA\tC\t.\tPASS\t.\nchr22\t200\t.\tA\tC\t.\tPASS\t.\n")
    with pytest.raises(InputError, match=r"none of its contigs \(22, chr22\) is in .*which has: 20"):
        plan_variants(read_vcf(only_22), chr20, 512, "error", only_22)


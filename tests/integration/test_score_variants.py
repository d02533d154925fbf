"""`tinydnabert score-variants` on the real chr20 VCFs with the tiny export: every row scored or skipped with a
reason, scores equal to a by-hand computation with plain transformers, REF/ALT swap negates, an indel's score does
not depend on how the VCF writes it, and bad input is an `error:` with nothing written."""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

import pysam
import pytest

from tests.helpers import run_cli
from tinydnabert.eval.variants import COLUMNS, STATUSES

pytestmark = pytest.mark.usefixtures("one_thread")

GONL = "gonl_chr20_release4.vcf.gz"
INDELS = "vt_chr20_indels.vcf.gz"
NORMALIZED = "vt_chr20_indels.normalized.vcf.gz"


@pytest.fixture(scope="module")
def variants_dir(real_data: Path) -> Path:
    return real_data / "variants"


@pytest.fixture(scope="module")
def chr20_fa(genome_dir: Path) -> Path:
    return genome_dir / "grch37_chr20.fa.gz"


def _score(capsys, model: Path, fasta: Path, vcf: Path, out: Path, *flags) -> tuple[int, str, str]:
    return run_cli(capsys, "score-variants", "--model", model, "--fasta", fasta, "--vcf", vcf, "--out", out,
                   "--no-progress", *flags)


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        reader = csv.DictReader(f, delimiter="\t")
        assert tuple(reader.fieldnames) == COLUMNS
        return list(reader)


def _lines(path: Path) -> list[str]:
    with gzip.open(path, "rt") as f:
        return f.read().splitlines()


def _write_vcf(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def gonl_scores(tmp_path_factory, tiny_export, chr20_fa, variants_dir) -> list[dict[str, str]]:
    import torch

    from tinydnabert.app import cli

    out = tmp_path_factory.mktemp("gonl") / "scores.tsv"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # see one_thread
    try:
        assert cli.main(["score-variants", "--model", str(tiny_export), "--fasta", str(chr20_fa), "--vcf",
                         str(variants_dir / GONL), "--out", str(out), "--no-progress"]) == 0
    finally:
        torch.set_num_threads(threads)
    return _rows(out)


def test_every_real_snv_is_scored(gonl_scores):
    assert len(gonl_scores) == 7
    assert all(r["status"] == "ok" and r["strands"] == "both" and r["score"] for r in gonl_scores)
    assert [r["pos"] for r in gonl_scores] == ["60309", "60573", "60828", "61098", "61270", "61289", "61682"]
    assert any(r["llr"] for r in gonl_scores)  # at least one SNV keeps its token boundaries
    for r in gonl_scores:
        start, end = map(int, r["window"].split("-"))
        assert end - start + 1 == 512 and start + 127 <= int(r["pos"]) <= end - 127
        if r["llr"] and r["tokens"] == "1/1":  # one differing token: the LLR is the PLL difference
            assert float(r["llr"]) == pytest.approx(float(r["score"]), abs=1e-6)


def test_real_indels_are_scored_the_same_however_the_vcf_writes_them(tmp_path, capsys, tiny_export, chr20_fa,
                                                                      variants_dir):
    scores = {}
    for name in (INDELS, NORMALIZED):
        rc, out, err = _score(capsys, tiny_export, chr20_fa, variants_dir / name, tmp_path / f"{name}.tsv")
        assert rc == 0, err
        assert "194 of 194 variants scored, 0 skipped" in out and "forward passes" in out
        scores[name] = _rows(tmp_path / f"{name}.tsv")
    rows = scores[INDELS]
    assert all(r["status"] in STATUSES for r in rows)
    assert all(r["status"] == "ok" and r["score"] and not r["llr"] for r in rows)  # indels: no same-boundary LLR
    # vt normalize left-aligned ~70 of them (OLD_VARIANT says what each was): same window, tokens and score
    old = []
    for line in (ln for ln in _lines(variants_dir / NORMALIZED) if not ln.startswith("#")):
        c = line.split("\t")
        info = dict(kv.partition("=")[::2] for kv in c[7].split(";"))
        old.append(info.get("OLD_VARIANT", f"{c[0]}:{c[1]}:{c[3]}/{c[4]}"))
    normalized = dict(zip(old, scores[NORMALIZED]))
    moved = 0
    for r in rows:
        n = normalized[f"{r['chrom']}:{r['pos']}:{r['ref']}/{r['alt']}"]
        moved += n["pos"] != r["pos"]
        assert (n["score"], n["window"], n["tokens"]) == (r["score"], r["window"], r["tokens"])
    assert moved >= 60


def _pll_difference(model, tok, ref: str, alt: str) -> float:
    """By hand: the tokens where the two tokenizations differ (common prefix and suffix left out), each masked in
    turn; sum log p(ALT tokens) - sum log p(REF tokens)."""
    import torch

    ir, ia = tok(ref)["input_ids"], tok(alt)["input_ids"]
    p = 0
    while ir[p] == ia[p]:
        p += 1
    q = 0
    while q < min(len(ir), len(ia)) - p and ir[-1 - q] == ia[-1 - q]:
        q += 1

    def pll(ids: list[int], lo: int, hi: int) -> float:
        total = 0.0
        for i in range(lo, hi):
            x = torch.tensor([ids])
            x[0, i] = tok.mask_token_id
            with torch.no_grad():
                total += model(input_ids=x).logits[0, i].log_softmax(-1)[ids[i]].item()
        return total

    return pll(ia, p, len(ia) - q) - pll(ir, p, len(ir) - q)


def _revcomp(s: str) -> str:
    return s.translate(str.maketrans("ACGT", "TGCA"))[::-1]


def test_snv_scores_equal_a_by_hand_computation_with_plain_transformers(gonl_scores, tiny_export, chr20_fa):
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    model = AutoModelForMaskedLM.from_pretrained(str(tiny_export)).eval()
    tok = AutoTokenizer.from_pretrained(str(tiny_export))
    fa = pysam.FastaFile(str(chr20_fa))
    for r in gonl_scores:
        start, end = map(int, r["window"].split("-"))
        ref = fa.fetch("20", start - 1, end).upper()
        i = int(r["pos"]) - start
        assert ref[i] == r["ref"]
        alt = ref[:i] + r["alt"] + ref[i + 1:]
        both = (_pll_difference(model, tok, ref, alt) + _pll_difference(model, tok, _revcomp(ref), _revcomp(alt))) / 2
        assert float(r["score"]) == pytest.approx(both, abs=1e-5), r


def test_swapping_ref_and_alt_negates_an_snv(tmp_path, capsys, gonl_scores, tiny_export, chr20_fa, variants_dir):
    """A FASTA of the window with the ALT base in it, the record with REF and ALT swapped, at shifted coordinates."""
    fa = pysam.FastaFile(str(chr20_fa))
    lines = _lines(variants_dir / GONL)
    header = [ln for ln in lines if ln.startswith("#")]
    picked = [r for r in gonl_scores if r["llr"]][:1] + [r for r in gonl_scores if not r["llr"]][:1]
    assert len(picked) == 2
    for r in picked:
        start, end = map(int, r["window"].split("-"))
        seq = fa.fetch("20", start - 1, end).upper()
        i = int(r["pos"]) - start
        alt_fa = tmp_path / f"alt{r['pos']}.fa"
        alt_fa.write_text(">20\n" + seq[:i] + r["alt"] + seq[i + 1:] + "\n")
        swapped = f"20\t{i + 1}\t.\t{r['alt']}\t{r['ref']}\t.\tPASS\t."  # REF is now the ALT base
        vcf = _write_vcf(tmp_path / f"swap{r['pos']}.vcf", header + [swapped])
        rc, _, err = _score(capsys, tiny_export, alt_fa, vcf, tmp_path / f"swap{r['pos']}.tsv")
        assert rc == 0, err
        (s,) = _rows(tmp_path / f"swap{r['pos']}.tsv")
        assert s["window"] == f"1-{end - start + 1}" and s["status"] == "ok"
        assert float(s["score"]) == pytest.approx(-float(r["score"]), abs=1e-5)
        assert bool(s["llr"]) == bool(r["llr"])
        if r["llr"]:
            assert float(s["llr"]) == pytest.approx(-float(r["llr"]), abs=1e-5)


def test_a_ref_mismatch_is_an_error_naming_the_record_and_nothing_is_written(tmp_path, capsys, tiny_export, chr20_fa,
                                                                             variants_dir):
    lines = _lines(variants_dir / GONL)
    i = next(k for k, ln in enumerate(lines) if ln.startswith("20\t60828\t"))
    cols = lines[i].split("\t")
    cols[3] = "A"  # the FASTA holds T
    lines[i] = "\t".join(cols)
    vcf = _write_vcf(tmp_path / "mismatch.vcf", lines)
    out = tmp_path / "out" / "scores.tsv"
    rc, _, err = _score(capsys, tiny_export, chr20_fa, vcf, out)
    assert rc == 2
    assert f"error: {vcf}, line {i + 1}: 20:60828 REF is A but the FASTA holds T there" in err
    assert "--on-mismatch skip" in err
    assert not out.exists() and not (out.parent.exists() and any(out.parent.iterdir()))
    # --on-mismatch skip: that row is listed with its status, the others are scored
    rc, stdout, err = _score(capsys, tiny_export, chr20_fa, vcf, out, "--on-mismatch", "skip")
    assert rc == 0 and "6 of 7 variants scored, 1 skipped (ref_mismatch 1)" in stdout
    assert f"line {i + 1}, 20:60828" in err
    rows = _rows(out)
    assert [r["status"] for r in rows] == ["ok", "ok", "ref_mismatch", "ok", "ok", "ok", "ok"]
    assert rows[2]["score"] == "" and rows[2]["window"] == ""
    # an existing --out is kept as it was: refused without --overwrite, untouched by a failed run
    before = out.read_bytes()
    rc, _, err = _score(capsys, tiny_export, chr20_fa, vcf, out)
    assert rc == 2 and "already exists; pass --overwrite" in err
    rc, _, err = _score(capsys, tiny_export, chr20_fa, vcf, out, "--overwrite")
    assert rc == 2 and "REF is A" in err
    assert out.read_bytes() == before and sorted(p.name for p in out.parent.iterdir()) == ["scores.tsv"]


def test_chr_prefixes_are_matched_or_refused_with_the_fastas_names(tmp_path, capsys, gonl_scores, tiny_export,
                                                                   chr20_fa, variants_dir):
    lines = _lines(variants_dir / GONL)
    header = [ln for ln in lines if ln.startswith("#")]
    records = [ln for ln in lines if not ln.startswith("#")]
    chr_vcf = _write_vcf(tmp_path / "chr.vcf", header + ["chr" + ln for ln in records])
    rc, _, err = _score(capsys, tiny_export, chr20_fa, chr_vcf, tmp_path / "chr.tsv")
    assert rc == 0, err
    got = _rows(tmp_path / "chr.tsv")
    assert [r["chrom"] for r in got] == ["chr20"] * 7  # as the VCF wrote it
    assert [r["score"] for r in got] == [r["score"] for r in gonl_scores]
    # the other way: a plain FASTA whose contig is chr20, a VCF saying 20
    seq = pysam.FastaFile(str(chr20_fa)).fetch("20", 0, 63_000)
    chr_fa = tmp_path / "chr20_head.fa"
    chr_fa.write_text(">chr20\n" + "\n".join(seq[k:k + 60] for k in range(0, len(seq), 60)) + "\n")
    rc, _, err = _score(capsys, tiny_export, chr_fa, variants_dir / GONL, tmp_path / "plain.tsv")
    assert rc == 0, err
    assert [r["score"] for r in _rows(tmp_path / "plain.tsv")] == [r["score"] for r in gonl_scores]
    # no contig in common: refused, listing what the FASTA has
    x_vcf = _write_vcf(tmp_path / "x.vcf", header + ["X" + ln[2:] for ln in records])
    rc, _, err = _score(capsys, tiny_export, chr20_fa, x_vcf, tmp_path / "x.tsv")
    assert rc == 2 and "none of its contigs (X) is in" in err and "which has: 20" in err
    assert not (tmp_path / "x.tsv").exists()
    # some rows on a contig it lacks: those are skipped with their status
    part = _write_vcf(tmp_path / "part.vcf", header + records + ["22" + records[0][2:]])
    rc, out, err = _score(capsys, tiny_export, chr20_fa, part, tmp_path / "part.tsv")
    assert rc == 0 and "7 of 8 variants scored, 1 skipped (contig_missing 1)" in out and "(22)" in err
    assert _rows(tmp_path / "part.tsv")[-1]["status"] == "contig_missing"


def test_multiallelic_and_symbolic_alts(tmp_path, capsys, gonl_scores, tiny_export, chr20_fa, variants_dir):
    lines = _lines(variants_dir / GONL)
    header = [ln for ln in lines if ln.startswith("#")]
    records = [ln.split("\t") for ln in lines if not ln.startswith("#")]
    first, second, third = records[0][:], records[1][:], records[2][:]
    first[4] = f"{first[4]},<NON_REF>,*"   # G -> T plus two symbolic alleles: three rows
    second[4] = "<DEL>"
    third[4] = "."
    vcf = _write_vcf(tmp_path / "sym.vcf", header + ["\t".join(c) for c in (first, second, third)])
    rc, out, err = _score(capsys, tiny_export, chr20_fa, vcf, tmp_path / "sym.tsv")
    assert rc == 0, err
    assert "1 of 5 variants scored, 4 skipped (symbolic_alt 3, no_alt 1)" in out
    rows = _rows(tmp_path / "sym.tsv")
    assert [(r["pos"], r["alt"], r["status"]) for r in rows] == [
        ("60309", "T", "ok"), ("60309", "<NON_REF>", "symbolic_alt"), ("60309", "*", "symbolic_alt"),
        ("60573", "<DEL>", "symbolic_alt"), ("60828", ".", "no_alt")]
    assert rows[0]["score"] == gonl_scores[0]["score"]


def test_other_options_and_statuses(tmp_path, capsys, gonl_scores, tiny_export, chr20_fa, variants_dir):
    vcf = variants_dir / GONL
    rc, _, err = _score(capsys, tiny_export, chr20_fa, vcf, tmp_path / "fwd.tsv", "--strands", "forward")
    assert rc == 0, err
    fwd = _rows(tmp_path / "fwd.tsv")
    assert all(r["strands"] == "forward" for r in fwd)
    assert [r["score"] for r in fwd] != [r["score"] for r in gonl_scores]
    # --pll-tokens window: every token of both windows (2 x ~170 passes a strand), one SNV
    one = _write_vcf(tmp_path / "one.vcf", [ln for ln in _lines(vcf) if ln.startswith("#")]
                     + [ln for ln in _lines(vcf) if ln.startswith("20\t60828\t")])
    rc, out, err = _score(capsys, tiny_export, chr20_fa, one, tmp_path / "win.tsv", "--pll-tokens", "window",
                          "--strands", "forward")
    assert rc == 0, err
    (w,) = _rows(tmp_path / "win.tsv")
    assert w["status"] == "ok" and float(out.split("forward passes")[0].split()[-1]) > 200
    # 1024 bp windows are ~340 tokens of this 128-token vocabulary: over the tiny model's 256
    rc, out, err = _score(capsys, tiny_export, chr20_fa, vcf, tmp_path / "big.tsv", "--window", "1024")
    assert rc == 0 and "0 of 7 variants scored, 7 skipped (too_many_tokens 5, n_in_window 2)" in out  # near the gap
    assert "a smaller --window" in err
    # the method is in --help
    with pytest.raises(SystemExit):
        run_cli(capsys, "score-variants", "--help")
    assert "pseudo-log-likelihood" in capsys.readouterr().out


def test_missing_files_are_named(tmp_path, capsys, tiny_export, chr20_fa, variants_dir):
    rc, _, err = _score(capsys, tiny_export, chr20_fa, tmp_path / "none.vcf", tmp_path / "o.tsv")
    assert rc == 2 and f"{tmp_path / 'none.vcf'}: VCF file not found" in err
    rc, _, err = _score(capsys, tiny_export, tmp_path / "none.fa", variants_dir / GONL, tmp_path / "o.tsv")
    assert rc == 2 and f"{tmp_path / 'none.fa'}: reference FASTA not found" in err
    rc, _, err = _score(capsys, tmp_path / "nomodel", chr20_fa, variants_dir / GONL, tmp_path / "o.tsv")
    assert rc == 2 and "model not found" in err
    assert not (tmp_path / "o.tsv").exists()

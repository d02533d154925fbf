"""Reading a VCF's sites and checking them against a reference FASTA.

A small hand-written reader, not pysam.VariantFile: htslib refuses or silently drops what we want to name by
line number (a record with 7 columns, a POS that is not a number, an ALT of digits), and we need only the 8
fixed columns. Plain or gzip/BGZF text (`io.open_text`). Each record keeps its 1-based line number, so every
later error can name it.

    ##...                      meta lines: skipped
    #CHROM POS ID REF ALT ...  the header line: required before the first record (catches a BED / TSV given by mistake)
    20  60309  .  G  T,A  ...  a record: REF upper-cased, ALT split at ',' (one variant per ALT)

`Reference` is random access to the FASTA the VCF was called against: pysam.FastaFile on a BGZF file with its
.fai/.gzi (or a plain FASTA, indexed on first use); a FASTA it cannot index (plain gzip, a read-only directory)
is read into memory through prep.fasta instead. VCF contig names are matched to the FASTA's exactly, or with a
`chr` prefix added or removed when that is the only difference (`chr20` <-> `20`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from tinydnabert.console import eprint
from tinydnabert.errors import InputError
from tinydnabert.io import open_text

FIXED_COLUMNS = ("#CHROM", "POS", "ID", "REF", "ALT", "QUAL", "FILTER", "INFO")
_BASES = re.compile(r"[ACGTNRYKMSWBDHV]+", re.IGNORECASE)  # REF/ALT letters VCF 4.x allows (IUPAC kept: skipped later)


@dataclass(frozen=True)
class VcfRecord:
    line: int                 # 1-based line number in the file
    chrom: str
    pos: int                  # 1-based position of REF's first base
    id: str
    ref: str                  # upper case
    alts: tuple[str, ...]     # ALT split at ','; bases upper-cased, symbolic alleles as written
    info: str = "."

    @property
    def where(self) -> str:
        return f"line {self.line}, {self.chrom}:{self.pos}"


def is_symbolic(alt: str) -> bool:
    """An ALT that is not a base sequence: <DEL>, <NON_REF>, the spanning deletion `*`, breakends, `.` (none)."""
    return alt == "*" or alt.startswith(("<", ".")) or alt.endswith(".") or "[" in alt or "]" in alt


def iter_vcf(path: str | Path) -> Iterator[VcfRecord]:
    """Every record of a VCF (plain or gzip), in file order; a malformed line is an InputError naming it."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: VCF file not found; check the --vcf path")
    header_seen = False
    with open_text(p) as f:
        for lineno, raw in enumerate(f, start=1):
            line = raw.rstrip("\r\n")
            if line.startswith("##") or not line.strip():
                continue
            if line.startswith("#"):
                cols = line.split("\t")
                if [c.upper() for c in cols[:8]] != list(FIXED_COLUMNS):
                    raise InputError(f"{p}, line {lineno}: expected the VCF header line '{chr(9).join(FIXED_COLUMNS)}' "
                                     f"(tab-separated), found {line[:80]!r}; is this a VCF file?")
                header_seen = True
                continue
            if not header_seen:
                raise InputError(f"{p}, line {lineno}: a record before the '#CHROM POS ID REF ALT ...' header line; "
                                 f"is this a VCF file? (found {line[:60]!r})")
            yield parse_record(line, lineno, p)
    if not header_seen:
        raise InputError(f"{p}: no '#CHROM POS ID REF ALT ...' header line; is this a VCF file?")


def parse_record(line: str, lineno: int, path: Path | str = "VCF") -> VcfRecord:
    cols = line.split("\t")
    where = f"{path}, line {lineno}"
    if len(cols) < 8:
        raise InputError(f"{where}: {len(cols)} tab-separated column(s), a VCF record has at least 8 (CHROM POS ID "
                         f"REF ALT QUAL FILTER INFO); are the columns separated by spaces instead of tabs?")
    chrom, pos, vid, ref, alt = (c.strip() for c in cols[:5])
    if not chrom:
        raise InputError(f"{where}: empty CHROM column")
    if not pos.isdigit():
        raise InputError(f"{where}: POS {pos!r} is not a whole number (1-based position of REF's first base)")
    if not _BASES.fullmatch(ref):
        raise InputError(f"{where}, {chrom}:{pos}: REF {ref!r} is not a base sequence (A C G T N, IUPAC codes); "
                         f"fix the record or remove it")
    alts = tuple(a.strip() for a in alt.split(","))
    for a in alts:
        if not a or not (is_symbolic(a) or _BASES.fullmatch(a)):
            raise InputError(f"{where}, {chrom}:{pos}: ALT {alt!r} holds {a!r}, which is neither bases (A C G T N) "
                             f"nor a symbolic allele (<DEL>, *, a breakend); fix the record or remove it")
    alts = tuple(a if is_symbolic(a) else a.upper() for a in alts)
    return VcfRecord(lineno, chrom, int(pos), vid or ".", ref.upper(), alts, cols[7].strip() or ".")


def read_vcf(path: str | Path) -> list[VcfRecord]:
    records = list(iter_vcf(path))
    if not records:
        raise InputError(f"{path}: no variant records (only header lines); nothing to score")
    return records


def info_value(info: str, key: str) -> str | None:
    """The raw value of INFO key `key` (None if absent; '' for a flag)."""
    for item in info.split(";"):
        k, _, v = item.partition("=")
        if k == key:
            return v
    return None


def allele_frequency(record: VcfRecord, alt_index: int) -> float | None:
    """The ALT's frequency from INFO: AF (one value per ALT), else AC/AN; None when neither is usable."""
    def per_alt(key: str) -> float | None:
        v = info_value(record.info, key)
        vals = v.split(",") if v else []
        try:
            return float(vals[alt_index]) if alt_index < len(vals) else None
        except ValueError:
            return None
    af = per_alt("AF")
    if af is not None:
        return af
    ac, an = per_alt("AC"), info_value(record.info, "AN")
    try:
        return ac / float(an) if ac is not None and an and float(an) > 0 else None
    except ValueError:
        return None


# ------------------------------------------------------------------------------------------------ the reference

class Reference:
    """Random access to a FASTA: upper-case bases by 0-based half-open interval, VCF contig names matched."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise InputError(f"{self.path}: reference FASTA not found; check the --fasta path")
        self._fa = None
        self._seqs: dict[str, str] = {}
        import pysam

        verbosity = pysam.set_verbosity(0)  # htslib's own lines would only repeat what we say
        try:
            self._fa = pysam.FastaFile(str(self.path))
            self.lengths = dict(zip(self._fa.references, self._fa.lengths))
        except (OSError, ValueError) as e:
            self._load_into_memory(e)
        finally:
            pysam.set_verbosity(verbosity)
        if not self.lengths:
            raise InputError(f"{self.path}: no FASTA records; is this the reference FASTA?")

    def _load_into_memory(self, why: Exception) -> None:
        from tinydnabert.prep.fasta import iter_records

        self._seqs = {r.name: r.seq.decode("ascii") for r in iter_records([self.path])}
        self.lengths = {n: len(s) for n, s in self._seqs.items()}
        eprint(f"note: {self.path} has no usable index ({str(why).strip() or type(why).__name__}); read it into "
               f"memory instead. `bgzip` it and run `samtools faidx` on it for random access")

    @property
    def names(self) -> list[str]:
        return list(self.lengths)

    def resolve(self, chrom: str) -> str | None:
        """The FASTA's name for VCF contig `chrom`: itself, or with `chr` removed / added; None if none."""
        if chrom in self.lengths:
            return chrom
        other = chrom[3:] if chrom.lower().startswith("chr") else "chr" + chrom
        return other if other in self.lengths else None

    def names_shown(self, most: int = 12) -> str:
        names = self.names
        return ", ".join(names[:most]) + (f", ... ({len(names)} in all)" if len(names) > most else "")

    def fetch(self, contig: str, start: int, end: int) -> str:
        """Bases [start, end) (0-based) of `contig`, upper case, clipped to the contig."""
        start, end = max(0, start), min(end, self.lengths[contig])
        if end <= start:
            return ""
        if self._fa is not None:
            return self._fa.fetch(contig, start, end).upper()
        return self._seqs[contig][start:end]

    def mismatch(self, record: VcfRecord, contig: str) -> str | None:
        """None if REF is what the FASTA holds at POS; else what is wrong, for an error message or a log."""
        start, length = record.pos - 1, self.lengths[contig]
        if record.pos < 1 or start + len(record.ref) > length:
            return (f"{record.chrom}:{record.pos} REF {record.ref} lies outside FASTA contig {contig!r} "
                    f"(1-{length:,})")
        held = self.fetch(contig, start, start + len(record.ref))
        if held != record.ref:
            return f"{record.chrom}:{record.pos} REF is {record.ref} but the FASTA holds {held} there"
        return None

    def close(self) -> None:
        if self._fa is not None:
            self._fa.close()

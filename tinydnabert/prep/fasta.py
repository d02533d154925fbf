"""Reading genome FASTA: plain, gzip or BGZF, one or many files, record selection, validation.

pysam.FastxFile streams every one of those formats (no index needed) one record at a time, so
memory is bounded by the longest record (GRCh38 chr1: 248 Mbp, ~250 MB as bytes), not the genome.
pysam is lenient where we want errors (it silently skips text before the first header, keeps
digits, '*', '-' and spaces inside sequences, and returns headers with no sequence as empty
records), so every record goes through a light check of our own: a `bytes.translate` pass that
costs ~15 ms per 60 Mbp.

Split points: N and the IUPAC ambiguity codes (R Y K M S W B D H V) are allowed in the input but
never enter a segment; `acgt_runs` returns the maximal A/C/G/T-only intervals of a record.
"""

from __future__ import annotations

import gzip
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from tinydnabert.errors import InputError

# Letters a genome FASTA may contain (either case): nucleotides, N and IUPAC ambiguity codes.
ACGT = b"ACGT"
AMBIGUOUS = b"NRYKMSWBDHV"
VALID_UPPER = ACGT + AMBIGUOUS

# GRCh38.p14 (NCBI RefSeq naming), UCSC hg38 and Ensembl/GRCh37 naming of the primary assembly:
# chromosomes 1-22, X, Y and the mitochondrion. Everything else in GRCh38.p14 (alt loci NT_/NW_
# "_alt", fix/novel patches, unlocalized "_random" and unplaced "chrUn_" scaffolds) either
# duplicates primary sequence (alts, patches: training on them double-counts those regions) or is
# short unplaced contigs; `--records primary` drops them.
PRIMARY_PATTERNS = (
    r"NC_0000(0[1-9]|1[0-9]|2[0-4])\.\d+",  # RefSeq chr1..22 (NC_000001-22), X (23), Y (24)
    r"NC_012920\.\d+",                       # RefSeq chrM (rCRS)
    r"chr([1-9]|1[0-9]|2[0-2]|X|Y|M)",       # UCSC
    r"([1-9]|1[0-9]|2[0-2]|X|Y|MT)",         # Ensembl / GRCh37
)
RECORD_PRESETS = {"all": (), "primary": PRIMARY_PATTERNS}

_UPPER_LUT = np.zeros(256, dtype=bool)
_UPPER_LUT[np.frombuffer(ACGT, np.uint8)] = True
_MIXED_LUT = _UPPER_LUT.copy()
_MIXED_LUT[np.frombuffer(ACGT.lower(), np.uint8)] = True
_VALID_LUT = np.zeros(256, dtype=bool)
_VALID_LUT[np.frombuffer(VALID_UPPER + VALID_UPPER.lower(), np.uint8)] = True


@dataclass
class Record:
    path: str
    name: str
    seq: bytes  # upper-cased unless keep_case; may contain N / IUPAC codes (split points)
    description: str = ""  # the header after the name (task files put '|label' there when it has spaces)


class RecordSelector:
    """Keep a record if it matches the preset (when not "all") and any include pattern (when
    given), and no exclude pattern. Patterns are Python regular expressions matched against the
    whole record name (the header's first word): `chr1` does not select `chr10`."""

    def __init__(self, preset: str = "all", include: Sequence[str] = (), exclude: Sequence[str] = ()):
        if preset not in RECORD_PRESETS:
            raise InputError(f"unknown record preset {preset!r}; choose one of {sorted(RECORD_PRESETS)}")
        self.preset = [_compile(p, "records") for p in RECORD_PRESETS[preset]]
        self.include = [_compile(p, "include") for p in include]
        self.exclude = [_compile(p, "exclude") for p in exclude]

    def keep(self, name: str) -> bool:
        if self.preset and not any(p.fullmatch(name) for p in self.preset):
            return False
        if self.include and not any(p.fullmatch(name) for p in self.include):
            return False
        return not any(p.fullmatch(name) for p in self.exclude)


def _compile(pattern: str, flag: str) -> re.Pattern:
    try:
        return re.compile(pattern)
    except re.error as e:
        raise InputError(f"--{flag} {pattern!r}: not a valid regular expression ({e})") from e


def _open_maybe_gzip(path: Path):
    with open(path, "rb") as f:
        magic = f.read(2)
    return gzip.open(path, "rb") if magic == b"\x1f\x8b" else open(path, "rb")


def check_fasta_file(path: str | Path) -> None:
    """Cheap checks pysam does not make: the file exists, is not empty, and its first non-blank
    line is a '>' header (pysam silently skips leading text, and reads FASTQ as if it were FASTA)."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: FASTA file not found; check the --fasta path")
    if not p.is_file():
        raise InputError(f"{p}: not a file; pass FASTA files (plain, .gz or BGZF) to --fasta")
    if p.stat().st_size == 0:
        raise InputError(f"{p}: empty file; expected FASTA ('>name' header lines followed by sequence)")
    try:
        with _open_maybe_gzip(p) as f:
            head = f.read(1 << 16)
    except (OSError, EOFError, zlib.error) as e:
        raise InputError(f"{p}: cannot read the file ({e}); it looks truncated or corrupt: re-download it "
                         "(and check it with `gzip -t`)") from e
    for lineno, line in enumerate(head.splitlines(), 1):
        if not line.strip():
            continue
        if not line.startswith(b">"):
            shown = line[:40].decode("ascii", "replace")
            raise InputError(f"{p}, line {lineno}: expected a '>' FASTA header before any sequence, "
                             f"found {shown!r}; is this a FASTA file?")
        return
    raise InputError(f"{p}: no FASTA header ('>name') found in the first 64 KiB; is this a FASTA file?")


def validate_sequence(path: str, name: str, seq: bytes) -> None:
    """InputError naming file, record and 1-based position if `seq` is empty or holds anything but
    nucleotide / N / IUPAC letters (digits, '*', '-', '.', spaces...)."""
    if not seq:
        raise InputError(f"{path}, record {name!r}: header with no sequence; remove the record or fix the file")
    if seq.translate(None, VALID_UPPER + VALID_UPPER.lower()):
        arr = np.frombuffer(seq, np.uint8)
        pos = int(np.argmin(_VALID_LUT[arr]))
        ch = chr(seq[pos])
        raise InputError(f"{path}, record {name!r}, position {pos + 1}: invalid character {ch!r} in the "
                         "sequence (allowed: A C G T, N and IUPAC codes R Y K M S W B D H V, either case)")


def iter_records(paths: Iterable[str | Path], keep_case: bool = False, unique_names: bool = True) -> Iterator[Record]:
    """Yield every record of every file in order, validated (and upper-cased unless keep_case).
    Selection is the caller's job (`RecordSelector`), so dropped records can still be counted.
    Genome names must be unique (they become sample keys); `unique_names=False` for task files."""
    import pysam

    seen: dict[str, str] = {}
    for path in paths:
        path = str(path)
        check_fasta_file(path)
        n, name = 0, None
        # htslib's own stderr lines about truncated blocks would only duplicate our InputError.
        verbosity = pysam.set_verbosity(0)
        try:
            with pysam.FastxFile(path) as fx:
                for entry in fx:
                    n += 1
                    name = entry.name
                    if not name:
                        raise InputError(f"{path}, record {n}: header '>' with no name; give every record a name")
                    if unique_names and name in seen:
                        raise InputError(f"{path}, record {name!r}: duplicate record name (also in {seen[name]}); "
                                         "record names must be unique across all --fasta files")
                    seen[name] = path
                    seq = (entry.sequence or "").encode("ascii", "replace")
                    description = entry.comment or ""
                    del entry  # drop pysam's str copy: one chromosome is held once, as bytes
                    validate_sequence(path, name, seq)
                    if not keep_case:
                        seq = seq.upper()  # rebinding frees the mixed-case copy
                    yield Record(path, name, seq, description)
                    del seq
        except (OSError, ValueError) as e:
            # htslib reports a truncated or corrupt (BGZF) gzip stream as "unknown problem parsing".
            where = f"in or after record {name!r} (record {n})" if n else "before the first record"
            raise InputError(f"{path}: cannot read FASTA {where}: {e}; the file looks truncated "
                             "or corrupt: re-download it (and check it with `gzip -t`)") from e
        finally:
            pysam.set_verbosity(verbosity)
        if n == 0:
            raise InputError(f"{path}: no FASTA records found; expected '>name' header lines followed by sequence")


def acgt_runs(seq: bytes, keep_case: bool = False, chunk: int = 1 << 24) -> np.ndarray:
    """Maximal A/C/G/T-only intervals of `seq` as an int64 array of shape (n_runs, 2): [start, end).

    N and IUPAC codes split runs (and lower case too when keep_case is False and the caller did not
    upper-case). Works in 16 Mbp chunks so the temporary masks stay ~50 MB even for a 248 Mbp chr1.
    """
    lut = _MIXED_LUT if keep_case else _UPPER_LUT
    arr = np.frombuffer(seq, np.uint8)
    edges: list[np.ndarray] = []
    prev = False
    for off in range(0, len(arr), chunk):
        mask = lut[arr[off:off + chunk]]
        if mask[0] != prev:
            edges.append(np.array([off], dtype=np.int64))
        edges.append(np.flatnonzero(mask[1:] != mask[:-1]).astype(np.int64) + (off + 1))
        prev = bool(mask[-1])
    if prev:
        edges.append(np.array([len(arr)], dtype=np.int64))
    if not edges:
        return np.zeros((0, 2), dtype=np.int64)
    return np.concatenate(edges).reshape(-1, 2)


def count_acgt(seq: bytes) -> int:
    """A/C/G/T bases of either case."""
    return sum(seq.count(c) for c in b"ACGTacgt")

"""What `preprocess --exclude-from` keeps out of the shards: regions of the genome, or the sequences of a task.

Each source is a file (or every such file of a directory), of one of three kinds:

  * `bed`: BED regions (`contig start end ...`, 0-based, half-open; `#`, `track` and `browser` lines skipped);
  * `nt_names`: a CSV/TSV whose `name` column holds coordinates `chr:start-end|label` (the NT FASTA headers, as in
    the NT revised TSV; 0-based half-open on GRCh38: checked against hg38 chr2), taken as regions. Its rows on
    contigs the FASTA lacks are counted, not refused: one NT task spans the genome, the FASTA may be one
    chromosome. A region past the end of its contig is refused (the coordinates are of another assembly);
  * `sequences`: a task's sequences (a CSV/TSV with a `sequence` column, or FASTA), matched by exact canonical
    k-mer (prep/kmers.py: both strands), the same match `tinydnabert overlap` measures.

`kmers:PATH` / `regions:PATH` force how a CSV/TSV with both columns is read (an NT TSV against a FASTA of another
assembly than GRCh38 must be matched by k-mers). A task by name comes pre-resolved from above (`TaskSequences`:
prep does not import the task registry).

Whole segments are dropped, never cut: a segment overlapping a region by one base, or holding one k-mer of a task,
is left out, and segmentation is what it would be without the exclusion. So the segments kept are exactly those
of a run without it (same boundaries, strands, split; byte-identical token ids with the same tokenizer), and
nothing of a region survives in a shortened neighbour. The cost is the rest of each dropped segment: up to
~1 kbp of flank either side of a region.

Contig names: a region's contig is the FASTA record of that name, else the record that matches it once a leading
`chr` is dropped and `MT` read as `M` (`chr20` = `20`).
"""

from __future__ import annotations

import csv
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from tinydnabert.errors import InputError
from tinydnabert.io import open_text, sha256_file
from tinydnabert.prep.kmers import KmerIndex, check_k, record_hits, segment_of_hits

_COORD = re.compile(r"^([^:|\s]+):(\d+)-(\d+)(\|.*)?$")
_FASTA_SUFFIXES = (".fa", ".fna", ".fasta", ".fas", ".txt")
_TABLE_SUFFIXES = (".csv", ".tsv")
_FORCED = ("kmers:", "regions:")
_NOT_LETTER = re.compile(r"[^A-Za-z]")


@dataclass
class TaskSequences:
    """A task's sequences, resolved by name above prep (app layer): every split's rows, and where they came from."""
    name: str
    sequences: list[str]
    source: str = ""


@dataclass
class Source:
    """One file (or named task) to exclude, and what it excluded."""
    path: str
    kind: str                                  # bed | nt_names | sequences
    sha256: str
    bytes: int | None = None
    entries: int = 0                           # regions, or sequences
    entry_bases: int = 0
    regions: dict[str, list[tuple[int, int, int]]] = field(default_factory=dict)  # contig -> (start, end, line)
    sequences: list[str] = field(default_factory=list)
    absent_rows: int = 0                       # nt_names rows on contigs the FASTA lacks
    excluded_segments: int = 0
    excluded_bases: int = 0

    def where(self, line: int) -> str:
        return f"{self.path}, line {line}"

    def summary(self, k: int) -> dict:
        out = {"path": self.path, "kind": self.kind, "sha256": self.sha256}
        if self.bytes is not None:
            out["bytes"] = self.bytes
        out["regions" if self.kind != "sequences" else "sequences"] = self.entries
        out["region_bases" if self.kind != "sequences" else "sequence_bases"] = self.entry_bases
        if self.kind == "nt_names":
            out["rows_on_absent_contigs"] = self.absent_rows
        if self.kind == "sequences":
            out["shorter_than_k"] = int(sum(len(s) < k for s in self.sequences))
        out["excluded_segments"], out["excluded_bases"] = self.excluded_segments, self.excluded_bases
        return out


def _norm(contig: str) -> str:
    c = contig[3:] if contig.lower().startswith("chr") else contig
    return "M" if c.upper() in ("M", "MT") else c


# ------------------------------------------------------------------------------------------------ reading sources

def _kind(path: Path, forced: str | None) -> str:
    name = path.name.lower().removesuffix(".gz")
    if name.endswith(".bed"):
        return "bed"
    if name.endswith(_TABLE_SUFFIXES):
        with open_text(path) as f:
            rows = csv.reader(f, delimiter="\t" if name.endswith(".tsv") else ",")
            header = [h.strip().lower() for h in next(rows, [])]
            first = next((r for r in rows if any(c.strip() for c in r)), [])
        named = "name" in header and len(first) > header.index("name") and _COORD.match(first[header.index("name")])
        if forced == "kmers:" or (not named and forced != "regions:"):
            if "sequence" not in header:
                raise InputError(f"{path}: header {header} has no 'sequence' column (nor a 'name' column of "
                                 "chr:start-end names); expected a task file (sequence,label) or the NT revised TSV")
            return "sequences"
        if not named:
            raise InputError(f"{path}: regions:{path} asked, but its 'name' column holds no chr:start-end names")
        return "nt_names"
    with open_text(path) as f:
        first = next((line for line in f if line.strip() and not line.startswith(("#", "track", "browser"))), "")
    if first.startswith(">") or name.endswith(_FASTA_SUFFIXES):
        return "sequences"
    fields = first.rstrip("\n").split("\t")
    if len(fields) >= 3 and fields[1].strip().isdigit() and fields[2].strip().isdigit():
        return "bed"
    raise InputError(f"{path}: unknown format; --exclude-from takes BED (.bed), a CSV/TSV with a 'sequence' column "
                     "(or NT 'name' coordinates chr:start-end|label), or FASTA")


def _read_bed(src: Source, path: Path) -> None:
    with open_text(path) as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip() or line.startswith(("#", "track", "browser")):
                continue
            fields = line.rstrip("\r\n").split("\t")
            if len(fields) < 3:
                fields = line.split()
            if len(fields) < 3:
                raise InputError(f"{src.where(line_no)}: {len(fields)} field(s); a BED line needs contig, start "
                                 "and end (tab-separated)")
            try:
                start, end = int(fields[1]), int(fields[2])
            except ValueError:
                raise InputError(f"{src.where(line_no)}: start {fields[1]!r} / end {fields[2]!r} are not integers; "
                                 "BED columns 2 and 3 are 0-based start and end") from None
            _add_region(src, fields[0].strip(), start, end, line_no)


def _add_region(src: Source, contig: str, start: int, end: int, line_no: int) -> None:
    if start < 0 or start > end:
        raise InputError(f"{src.where(line_no)}: {contig}:{start}-{end} has start > end (or start < 0); regions are "
                         "0-based, half-open: 0 <= start <= end")
    src.regions.setdefault(contig, []).append((start, end, line_no))
    src.entries += 1
    src.entry_bases += end - start


def _read_table(src: Source, path: Path) -> None:
    delimiter = "\t" if path.name.lower().removesuffix(".gz").endswith(".tsv") else ","
    with open_text(path) as f:
        rows = csv.reader(f, delimiter=delimiter)
        header = [h.strip().lower() for h in next(rows, [])]
        col = header.index("name" if src.kind == "nt_names" else "sequence")
        for line_no, row in enumerate(rows, 2):
            if not row or not any(c.strip() for c in row):
                continue
            if col >= len(row):
                raise InputError(f"{src.where(line_no)}: {len(row)} columns, expected {len(header)}")
            value = row[col].strip()
            if src.kind == "nt_names":
                m = _COORD.match(value)
                if not m:
                    raise InputError(f"{src.where(line_no)}: name {value!r} is not chr:start-end|label")
                _add_region(src, m.group(1), int(m.group(2)), int(m.group(3)), line_no)
            else:
                _add_sequence(src, value, src.where(line_no))


def _add_sequence(src: Source, seq: str, where: str) -> None:
    bad = _NOT_LETTER.search(seq)
    if bad or not seq:
        what = f"character {bad.group()!r} at position {bad.start() + 1}" if bad else "an empty sequence"
        raise InputError(f"{where}: {what}; sequences are letters (A/C/G/T; N and other codes split k-mers)")
    src.sequences.append(seq.upper())
    src.entries += 1
    src.entry_bases += len(seq)


def _read_fasta(src: Source, path: Path) -> None:
    from tinydnabert.prep.fasta import iter_records

    for n, rec in enumerate(iter_records([path], unique_names=False), 1):
        _add_sequence(src, rec.seq.decode("ascii"), f"{path}, record {rec.name!r} (record {n})")


def _files(spec: str) -> list[tuple[Path, str | None]]:
    forced = next((p for p in _FORCED if spec.startswith(p) and not Path(spec).exists()), None)
    path = Path(spec[len(forced):] if forced else spec)
    if path.is_dir():
        found = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")
                       and p.name.lower().removesuffix(".gz").endswith((".bed", *_TABLE_SUFFIXES, *_FASTA_SUFFIXES)))
        if not found:
            raise InputError(f"--exclude-from {spec}: no .bed, .csv, .tsv or FASTA files in the directory")
        return [(p, forced) for p in found]
    if not path.exists():
        hint = (" (a task name? prep does not read the task registry: pass the task's files, e.g. its directory "
                "under $TINYDNABERT_DATA/benchmark)" if "/" in spec and not spec.startswith(("/", ".")) else "")
        raise InputError(f"--exclude-from {spec}: no such file or directory{hint}")
    try:
        with open(path, "rb") as f:
            f.read(1)
    except OSError as e:
        raise InputError(f"--exclude-from {path}: cannot read it ({e.strerror})") from e
    return [(path, forced)]


# ------------------------------------------------------------------------------------------------ applying them

class Exclusions:
    """Every --exclude-from source; `drop` says which segments of a record go, and counts what each source took."""

    def __init__(self, specs: Sequence[str], k: int = 32, tasks: Mapping[str, TaskSequences] | None = None):
        self.k = check_k(k, "--exclude-k")
        self.sources: list[Source] = []
        for spec in specs:
            if tasks and spec in tasks:
                t = tasks[spec]
                src = Source(t.name, "sequences", hashlib.sha256("\n".join(t.sequences).encode()).hexdigest())
                for i, s in enumerate(t.sequences):
                    _add_sequence(src, s, f"task {t.name} ({t.source}), row {i}")
                self.sources.append(src)
                continue
            for path, forced in _files(spec):
                src = Source(str(path.resolve()), _kind(path, forced), sha256_file(path), path.stat().st_size)
                if src.kind == "bed":
                    _read_bed(src, path)
                elif src.kind == "nt_names" or path.name.lower().removesuffix(".gz").endswith(_TABLE_SUFFIXES):
                    _read_table(src, path)
                else:
                    _read_fasta(src, path)
                if not src.entries:
                    raise InputError(f"{path}: no regions or sequences in it; remove it from --exclude-from")
                self.sources.append(src)
        seq_sources = [s for s in self.sources if s.kind == "sequences"]
        for s in seq_sources:
            if all(len(x) < self.k for x in s.sequences):
                raise InputError(f"{s.path}: every sequence is shorter than --exclude-k {self.k}: nothing to match "
                                 "by k-mer; lower --exclude-k")
        if len(seq_sources) > 64:
            raise InputError(f"--exclude-from: {len(seq_sources)} sequence files; at most 64 (merge them)")
        # One index over every sequence source (one pass over each record), each k-mer tagged with the sources
        # that hold it (a bit each).
        self.index = self.key_sources = None
        if seq_sources:
            rows = [x for s in seq_sources for x in s.sequences]
            self.index = KmerIndex(rows, self.k)
            owner = np.repeat(np.arange(len(seq_sources), dtype=np.uint64), [len(s.sequences) for s in seq_sources])
            self.key_sources = np.zeros(len(self.index.keys), dtype=np.uint64)
            np.bitwise_or.at(self.key_sources, self.index.members,
                             np.left_shift(np.uint64(1), np.repeat(owner, self.index.counts)))
        self._seq_sources = seq_sources
        self._matched: set[tuple[int, str]] = set()   # (source, contig) whose contig the FASTA holds

    def __bool__(self) -> bool:
        return bool(self.sources)

    def _regions_of(self, record: str) -> list[tuple[int, str, Source, list[tuple[int, int, int]]]]:
        return [(i, contig, src, regions) for i, src in enumerate(self.sources) for contig, regions in
                src.regions.items() if contig == record or _norm(contig) == _norm(record)]

    def check_record(self, record: str, length: int, fasta: str) -> None:
        """A region on this record must lie within it (every record of the FASTA, selected or not)."""
        for i, contig, src, regions in self._regions_of(record):
            self._matched.add((i, contig))
            for start, end, line_no in regions:
                if end > length:
                    raise InputError(f"{src.where(line_no)}: region {record}:{start}-{end} ends past the end of "
                                     f"record {record!r} ({length:,} bp) in {fasta}; are the regions of another "
                                     "assembly?")

    def check_contigs(self, records: Mapping[str, int]) -> None:
        """Every BED contig must be a record of the FASTA (`records`: all of them); NT rows on other contigs are
        counted. Call after check_record has seen every record (again after the scan: it recounts)."""
        for i, src in enumerate(self.sources):
            src.absent_rows = 0
            for contig, regions in src.regions.items():
                if (i, contig) in self._matched:
                    continue
                if src.kind == "nt_names":
                    src.absent_rows += len(regions)
                    continue
                names = list(records)
                shown = ", ".join(names[:30]) + (" ..." if len(names) > 30 else "")
                raise InputError(f"{src.where(regions[0][2])}: contig {contig!r} is not a record of the FASTA "
                                 f"(its records: {shown}; 'chr20' and '20' are taken as the same); remove its "
                                 "lines or add the FASTA that holds it")

    def drop(self, record: str, seq: bytes, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
        """Bool per segment [start, end) of the record: to be left out. Counts what each source excluded."""
        drop = np.zeros(len(starts), dtype=bool)
        lengths = ends - starts
        for _, _, src, regions in self._regions_of(record):
            r = np.array([(s, e) for s, e, _ in regions if e > s], dtype=np.int64).reshape(-1, 2)
            hit = _overlapping(r, starts, ends)
            src.excluded_segments += int(hit.sum())
            src.excluded_bases += int(lengths[hit].sum())
            drop |= hit
        if self.index is not None and len(starts):
            hit_starts, keys = record_hits(seq, self.index)
            seg = segment_of_hits(hit_starts, starts, ends, self.k)
            tags = np.zeros(len(starts), dtype=np.uint64)
            inside = seg >= 0
            np.bitwise_or.at(tags, seg[inside], self.key_sources[keys[inside]])
            for j, src in enumerate(self._seq_sources):
                hit = (tags >> np.uint64(j)) & np.uint64(1) == 1
                src.excluded_segments += int(hit.sum())
                src.excluded_bases += int(lengths[hit].sum())
            drop |= tags != 0
        return drop

    def summary(self, segments: int, bases: int) -> dict:
        """The manifest's `exclusions`: the sources, and the segments and bases left out in all (a segment two
        sources would drop counts once here, in each source's own counts)."""
        return {"k": self.k, "rule": "whole segments dropped: overlapping a region, or holding a k-mer of a sequence",
                "excluded_segments": segments, "excluded_bases": bases,
                "sources": [s.summary(self.k) for s in self.sources]}


def _overlapping(regions: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Bool per segment: it overlaps one of the (non-empty) regions."""
    if not len(regions):
        return np.zeros(len(starts), dtype=bool)
    regions = regions[np.argsort(regions[:, 0], kind="stable")]
    # The union of the regions as disjoint sorted intervals: the last one starting before a segment's end then
    # has the largest end of all that do.
    run_end = np.maximum.accumulate(regions[:, 1])
    new = np.concatenate(([True], regions[1:, 0] > run_end[:-1]))
    first = np.flatnonzero(new)
    u_start, u_end = regions[first, 0], np.maximum.reduceat(regions[:, 1], first)
    i = np.searchsorted(u_start, ends, side="left") - 1
    return (i >= 0) & (u_end[np.maximum(i, 0)] > starts)


def fai_records(paths: Sequence[str]) -> dict[str, tuple[int, str]] | None:
    """{record: (length, FASTA)} from every FASTA's .fai index, or None if one has none: regions are then checked
    as the scan reads the records, instead of before it."""
    out: dict[str, tuple[int, str]] = {}
    for p in paths:
        fai = Path(str(p) + ".fai")
        if not fai.is_file():
            return None
        try:
            for line in fai.read_text().splitlines():
                name, length = line.split("\t")[:2]
                out[name] = (int(length), str(p))
        except (OSError, ValueError):
            return None
    return out

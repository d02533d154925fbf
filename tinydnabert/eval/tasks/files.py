"""Task files on disk, in the formats the real data ships in (see the package docstring).

Every sequence is upper-cased and must be A/C/G/T/N (`clean_sequence`); every label an integer class id
or, for one-FASTA-per-class tasks, the file's class name. FASTA files are read through fasta.py.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tinydnabert.errors import InputError
from tinydnabert.eval.tasks.registry import Task
from tinydnabert.io import open_text

SPLIT_NAMES = ("train", "dev", "test")
# NT's hub splits are called train/test; GUE's validation file is dev.csv; accept the usual aliases.
SPLIT_ALIASES = {"train": "train", "dev": "dev", "validation": "dev", "valid": "dev", "val": "dev",
                  "test": "test", "cv": "train", "ind": "test"}
_FASTA_SUFFIXES = (".fa", ".fna", ".fasta", ".txt")
_BAD_BASE = re.compile(r"[^ACGTN]")


@dataclass
class Split:
    sequences: list[str]
    labels: list[Any]                  # source labels (int, or str for class-file tasks)
    source: str                        # where it came from, for messages and results


@dataclass
class TaskData:
    task: Task
    splits: dict[str, Split]           # "train", "test", maybe "dev"
    labels: list[Any]                  # sorted distinct labels; id = index
    source: str
    # which data exactly: kind (hub / clone / local / ...), and for NT files the repository, the revision asked
    # for, the commit read and {path in the repository: sha256}; copied into results.json
    provenance: dict[str, Any] = field(default_factory=dict)

    def label_ids(self, split: str) -> list[int]:
        index = {lab: i for i, lab in enumerate(self.labels)}
        return [index[lab] for lab in self.splits[split].labels]

    def counts(self) -> dict[str, int]:
        return {name: len(s.sequences) for name, s in self.splits.items()}


def clean_sequence(seq: str, where: str) -> str:
    """Upper-case (soft-masked repeats are lower case) and check the alphabet."""
    s = seq.strip().upper()
    if not s:
        raise InputError(f"{where}: empty sequence; remove the row or fix the file")
    bad = _BAD_BASE.search(s)
    if bad:
        raise InputError(f"{where}: character {bad.group()!r} at position {bad.start() + 1} is not one of "
                         f"A/C/G/T/N; fix or remove this row (IUPAC codes other than N are not accepted)")
    return s


def parse_label(raw: str, where: str) -> Any:
    raw = raw.strip()
    if raw == "":
        raise InputError(f"{where}: missing label; every row needs a label (an integer class id)")
    try:
        return int(raw)
    except ValueError:
        try:
            f = float(raw)
        except ValueError:
            raise InputError(f"{where}: label {raw!r} is not an integer class id") from None
        if not f.is_integer():
            raise InputError(f"{where}: label {raw!r} is not an integer class id") from None
        return int(f)


def read_csv_split(path: Path, delimiter: str = ",", task_filter: str | None = None) -> Split:
    """`sequence,label` CSV (GUE) or the NT revised TSV (`sequence,name,label,task`).

    Rows are reported by their line number in the file (the header is line 1)."""
    seqs, labels = [], []
    with open_text(path) as f:
        reader = csv.reader(f, delimiter=delimiter)
        header = next(reader, None)
        if header is None:
            raise InputError(f"{path}: empty file; expected a header line with 'sequence' and 'label' columns")
        cols = [h.strip().lower() for h in header]
        if "sequence" not in cols or "label" not in cols:
            raise InputError(f"{path}: header {header!r} lacks 'sequence' and 'label' columns; "
                             f"expected e.g. 'sequence{delimiter}label'")
        si, li = cols.index("sequence"), cols.index("label")
        ti = cols.index("task") if "task" in cols else None
        if task_filter is not None and ti is None:
            raise InputError(f"{path}: no 'task' column to select task {task_filter!r} from")
        for lineno, row in enumerate(reader, start=2):
            if not row or all(not c.strip() for c in row):
                continue
            where = f"{path}, line {lineno}"
            if ti is not None and task_filter is not None:
                if ti >= len(row):
                    raise InputError(f"{where}: {len(row)} columns, expected {len(cols)}")
                if row[ti].strip() != task_filter:
                    continue
            if li >= len(row) or si >= len(row):
                raise InputError(f"{where}: missing label (only {len(row)} of {len(cols)} columns); "
                                 f"every row needs 'sequence{delimiter}label'")
            seqs.append(clean_sequence(row[si], where))
            labels.append(parse_label(row[li], where))
    if not seqs:
        what = f" for task {task_filter!r}" if task_filter else ""
        raise InputError(f"{path}: no rows{what}")
    return Split(seqs, labels, str(path))


def read_fasta_split(path: Path, label: Any = None) -> Split:
    """FASTA (through fasta.py, plain or gzip); the label is `label` (one file per class) or the header's
    text after its last '|'. Task files may repeat a header (the same coordinates with two labels)."""
    from tinydnabert.prep.fasta import iter_records

    seqs, labels = [], []
    for n, rec in enumerate(iter_records([path], unique_names=False), start=1):
        header = f"{rec.name} {rec.description}".strip()
        seq = rec.seq.decode("ascii")
        where = f"{path}, record {header!r} (record {n})"
        if label is None:
            if "|" not in header:
                raise InputError(f"{where}: missing label; headers must end in '|LABEL' (e.g. "
                                 f"'>chr1:100-400|1'), or give one file per class")
            lab = parse_label(header.rsplit("|", 1)[1], where)
        else:
            lab = label
        seqs.append(clean_sequence(seq, where))
        labels.append(lab)
    if not seqs:
        raise InputError(f"{path}: no FASTA records")
    return Split(seqs, labels, str(path))


def _merge(parts: list[Split], source: str) -> Split:
    return Split([s for p in parts for s in p.sequences], [lab for p in parts for lab in p.labels], source)


def split_name(stem: str) -> str | None:
    """'train' from train.csv / train.fna / enhancer.cv (iEnhancer's cv = train, ind = test)."""
    for piece in reversed(re.split(r"[._]", stem.lower())):
        if piece in SPLIT_ALIASES:
            return SPLIT_ALIASES[piece]
    return None


def _is_fasta(path: Path) -> bool:
    name = path.name.lower().removesuffix(".gz")
    if not name.endswith(_FASTA_SUFFIXES):
        return False
    with open_text(path) as f:
        for line in f:
            if line.strip():
                return line.lstrip().startswith(">")
    return False


def _read_file(path: Path, task_filter: str | None) -> Split:
    name = path.name.lower().removesuffix(".gz")
    # A `task` column (the NT revised table) is filtered to the task; a plain sequence,label file is all one task.
    if name.endswith(".tsv"):
        return read_csv_split(path, "\t", task_filter if _has_task_column(path, "\t") else None)
    if name.endswith(".csv"):
        return read_csv_split(path, ",", task_filter if _has_task_column(path, ",") else None)
    if _is_fasta(path):
        return read_fasta_split(path)
    raise InputError(f"{path}: unknown format; expected .csv (sequence,label), .tsv (sequence,name,label,task) "
                     f"or FASTA with '|label' headers")


def _has_task_column(path: Path, delimiter: str) -> bool:
    with open_text(path) as f:
        return "task" in [h.strip().lower() for h in next(csv.reader(f, delimiter=delimiter), [])]


def load_local(task: Task, path: str | Path) -> dict[str, Split]:
    """Splits from a local file or directory (see the module docstring for the layouts)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: task data not found; pass --data with a directory of train/test files, "
                         f"or set TINYDNABERT_DATA to the shared data directory")
    tsv_task = task.tsv_task or (task.short if task.benchmark in ("nt_revised", "nt_original", "custom") else None)
    if task.class_files:
        return {split: _merge([read_fasta_split(path / f, label=lab)
                               for lab, files in by_label.items() for f in files], str(path))
                for split, by_label in task.class_files.items()}
    if path.is_file():
        split = split_name(path.stem.removesuffix(".csv").removesuffix(".tsv")) or "train"
        return {split: _read_file(path, tsv_task)}
    splits: dict[str, list[Split]] = {}
    for f in sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")):
        split = split_name(f.name.lower().removesuffix(".gz").rsplit(".", 1)[0])
        if split is None or not (f.name.lower().removesuffix(".gz").endswith((".csv", ".tsv")) or _is_fasta(f)):
            continue
        splits.setdefault(split, []).append(_read_file(f, tsv_task))
    if not splits:
        # one file per class: DIR/train/<label>.fa, DIR/test/<label>.fa
        for sub in sorted(p for p in path.iterdir() if p.is_dir()):
            split = SPLIT_ALIASES.get(sub.name.lower())
            files = sorted(f for f in sub.iterdir() if f.is_file() and _is_fasta(f))
            if split and files:
                splits[split] = [read_fasta_split(f, label=_class_label(f)) for f in files]
    if not splits:
        raise InputError(f"{path}: no task files found; expected train.csv/test.csv (sequence,label), "
                         f"train.fna/test.fna with '|label' headers, train/<label>.fa + test/<label>.fa, "
                         f"or an NT revised .tsv")
    return {s: _merge(parts, str(path)) for s, parts in splits.items()}


def _class_label(path: Path) -> Any:
    stem = path.name.removesuffix(".gz").rsplit(".", 1)[0]
    return int(stem) if stem.lstrip("-").isdigit() else stem

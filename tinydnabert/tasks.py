"""Downstream classification tasks: the Nucleotide Transformer (NT) registry and the loaders.

A task is a named set of labelled DNA sequences in splits ("train", optionally "dev", "test").
Where the sequences come from:

  * the Hugging Face hub (the 18 original NT tasks and the 18 revised ones; the TinyDNABERT
    reference used the revised set), file by file: `<task>/train.fna` and `<task>/test.fna` through
    `huggingface_hub.hf_hub_download`, parsed by `read_fasta_split`. The repositories also hold a
    `datasets` loading script and a README without configs: the script is never run (datasets >= 4
    refuses scripts), so `datasets.load_dataset` cannot read them. The same layout from a clone works
    with `--data CLONE`. `TaskData.provenance` records the commit and the sha256 of every file read;
  * local files, by path (`load_task_data(task, path)`), in the formats the real data ships in:
      - a directory of `train.csv` / `dev.csv` / `test.csv` with `sequence,label` (GUE layout);
      - FASTA whose headers end in `|label` (the NT files' own format: `>chr1:100-400|1`),
        one file per split (`train.fna`, `test.fna`, ...);
      - one FASTA file per class (iEnhancer-2L), from the registry's file map or a directory
        `train/<label>.fa`, `test/<label>.fa`;
      - the NT revised TSV (`sequence,name,label,task`), filtered to the task's rows;
      - parquet / csv files served over http(s), or a directory whose README.md declares configs,
        read by `datasets`.

Labels: whatever the source calls them (integers or file-class names); `TaskData.labels` is the
SORTED list of distinct labels and a label's id is its index there, so ids never depend on file
or directory order. Sequences are upper-cased (soft-masked repeats are lower case); anything but
A/C/G/T/N is an `InputError` naming the file and row.

The published figures beside each NT task come from tinydnabert/published/nt_scores.csv (see its
SOURCE.md for where each column comes from).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import gzip
import io
import os
import re
import subprocess
import zlib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Iterator

from .common import InputError, data_dir, sha256_file

NT_ORIGINAL_HUB = "InstaDeepAI/nucleotide_transformer_downstream_tasks"
NT_REVISED_HUB = "InstaDeepAI/nucleotide_transformer_downstream_tasks_revised"
SPLIT_NAMES = ("train", "dev", "test")
# Each NT task is a folder of its hub repository holding these two FASTA files ('>chr1:100-400|1' headers).
NT_SPLIT_FILES = ("train.fna", "test.fna")
# The loading scripts the NT repositories ship (never run): a clone's script says which repository it is.
_NT_SCRIPTS = {"nucleotide_transformer_downstream_tasks.py": NT_ORIGINAL_HUB,
               "nucleotide_transformer_downstream_tasks_revised.py": NT_REVISED_HUB}
# NT's hub splits are called train/test; GUE's validation file is dev.csv; accept the usual aliases.
_SPLIT_ALIASES = {"train": "train", "dev": "dev", "validation": "dev", "valid": "dev", "val": "dev",
                  "test": "test", "cv": "train", "ind": "test"}
_FASTA_SUFFIXES = (".fa", ".fna", ".fasta", ".txt")
_BAD_BASE = re.compile(r"[^ACGTN]")


# ---------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Task:
    """One benchmark task: what it is, where its data lives, and the published figures beside it."""

    name: str                       # registry key, e.g. "nt_revised/promoter_tata", "gue/prom_300_tata"
    benchmark: str                  # nt_original | nt_revised | gue | ienhancer | nt_revised_sample
    num_classes: int
    seq_len_bp: int                 # the dataset's sequence length (the longest, where lengths vary)
    metric: str = "mcc"
    description: str = ""
    hub_id: str | None = None       # HF dataset repository, for NT tasks
    hub_config: str | None = None   # its config (= the NT task name)
    local_path: str | None = None   # relative to data_dir(), for local tasks
    # one-file-per-class tasks: split -> label -> files (relative to local_path)
    class_files: dict[str, dict[Any, tuple[str, ...]]] | None = None
    tsv_task: str | None = None     # rows of an NT revised TSV with this `task` value
    # published figures (nt_scores.csv): column -> MCC, and which NT task they belong to
    published: dict[str, float] = field(default_factory=dict)
    published_for: str | None = None  # e.g. "nt_revised/promoter_tata"; differs from name for local tasks
    comparable: bool = True         # False: the published figure is on other data (same kind of task)

    @property
    def short(self) -> str:
        return self.name.split("/", 1)[1]


def load_published_scores() -> list[dict[str, str]]:
    """The rows of tinydnabert/published/nt_scores.csv (published MCC figures; see published/SOURCE.md)."""
    text = resources.files("tinydnabert").joinpath("published/nt_scores.csv").read_text(encoding="utf-8")
    return list(csv.DictReader(io.StringIO(text)))


_SCORE_COLUMNS = ("nt_ms_2_5b_mcc", "reference_sota_mcc", "reference_scratch_mcc", "reference_tinydnabert_mcc")

# Local real tasks under data_dir(): (name, path, classes, bp, NT task whose figures to show, description)
_LOCAL = [
    ("gue/prom_300_tata", "benchmark/GUE/prom/prom_300_tata", 2, 300, "nt_revised/promoter_tata",
     "GUE human promoter (TATA) vs non-promoter, 300 bp"),
    ("gue/prom_core_all", "benchmark/GUE/prom/prom_core_all", 2, 70, "nt_revised/promoter_all",
     "GUE human core promoter vs non-promoter, 70 bp"),
    ("gue/H3", "benchmark/GUE/EMP/H3", 2, 500, "nt_original/H3",
     "GUE yeast H3 occupancy, 500 bp (no train split: trains on dev)"),
    ("gue/H3K4me3", "benchmark/GUE/EMP/H3K4me3", 2, 500, "nt_original/H3K4me3",
     "GUE yeast H3K4me3, 500 bp (no train split: trains on dev)"),
    ("gue/splice_reconstructed", "benchmark/GUE/splice/reconstructed", 3, 400, "nt_original/splice_sites_all",
     "GUE splice site: 0 acceptor, 1 donor, 2 neither; 400 bp (no train split: trains on dev)"),
    ("gue/mouse_0", "benchmark/GUE/mouse/0", 2, 101, None, "GUE mouse TF binding, 101 bp (not in NT)"),
]

_IENHANCER = [
    ("ienhancer/enhancers", 2, "nt_original/enhancers",
     "iEnhancer-2L layer 1: enhancer (1) vs non-enhancer (0), 200 bp",
     {"train": {0: ("layer1/non.cv.txt",), 1: ("layer1/enhancer.cv.txt",)},
      "test": {0: ("layer1/non.ind.txt",), 1: ("layer1/enhancer.ind.txt",)}}),
    ("ienhancer/enhancers_types", 3, "nt_original/enhancers_types",
     "iEnhancer-2L: non-enhancer (0), strong (1), weak (2) enhancer, 200 bp",
     {"train": {0: ("layer1/non.cv.txt",), 1: ("layer2/strong_742.txt",), 2: ("layer2/weak_742.txt",)},
      "test": {0: ("layer1/non.ind.txt",), 1: ("layer2/strong_100.txt",), 2: ("layer2/weak_100.txt",)}}),
]


def _build_registry() -> dict[str, Task]:
    reg: dict[str, Task] = {}
    published: dict[str, dict[str, float]] = {}
    for row in load_published_scores():
        name = f"{row['benchmark']}/{row['task']}"
        scores = {c: float(row[c]) for c in _SCORE_COLUMNS if row.get(c)}
        published[name] = scores
        hub = NT_ORIGINAL_HUB if row["benchmark"] == "nt_original" else NT_REVISED_HUB
        reg[name] = Task(name=name, benchmark=row["benchmark"], num_classes=int(row["classes"]),
                         seq_len_bp=int(row["seq_len_bp"]), hub_id=hub, hub_config=row["task"],
                         published=scores, published_for=name,
                         description=f"Nucleotide Transformer {row['benchmark'].split('_')[1]} task "
                                     f"{row['task']} ({row['seq_len_bp']} bp, {row['classes']} classes)")
    for name, path, k, bp, nt, desc in _LOCAL:
        reg[name] = Task(name=name, benchmark="gue", num_classes=k, seq_len_bp=bp, local_path=path,
                         description=desc, published=published.get(nt, {}) if nt else {},
                         published_for=nt, comparable=False)
    for name, k, nt, desc, files in _IENHANCER:
        reg[name] = Task(name=name, benchmark="ienhancer", num_classes=k, seq_len_bp=200,
                         local_path="benchmark/iEnhancer2L", class_files=files, description=desc,
                         published=published.get(nt, {}), published_for=nt, comparable=False)
    # The real 1,500-row sample of the revised NT TSV: one addressable task per NT task in it.
    # Only a train split (too small for scores); it exercises the TSV loader on real rows.
    for row in load_published_scores():
        if row["benchmark"] == "nt_revised":
            name = f"nt_revised_sample/{row['task']}"
            reg[name] = Task(name=name, benchmark="nt_revised_sample", num_classes=int(row["classes"]),
                             seq_len_bp=int(row["seq_len_bp"]),
                             local_path="benchmark/nt_revised_sample/train.tsv", tsv_task=row["task"],
                             description=f"rows of NT revised {row['task']} in the 1,500-row real sample",
                             published=published[f"nt_revised/{row['task']}"],
                             published_for=f"nt_revised/{row['task']}", comparable=False)
    return reg


TASKS: dict[str, Task] = _build_registry()
GROUPS = {
    "nt_revised": [n for n, t in TASKS.items() if t.benchmark == "nt_revised"],
    "nt_original": [n for n, t in TASKS.items() if t.benchmark == "nt_original"],
    "local": [n for n, t in TASKS.items() if t.benchmark in ("gue", "ienhancer")],
}
GROUPS["all"] = GROUPS["nt_revised"] + GROUPS["nt_original"] + GROUPS["local"]


def get_task(name: str) -> Task:
    """A registered task by name. A bare NT name ("promoter_tata") means the revised task,
    the version the reference used; "original/..." / "revised/..." work as prefixes too."""
    if name in TASKS:
        return TASKS[name]
    for candidate in (f"nt_revised/{name}", f"nt_{name}", f"gue/{name}", f"ienhancer/{name}"):
        if candidate in TASKS:
            return TASKS[candidate]
    close = [n for n in TASKS if name.lower() in n.lower()]
    hint = f" Did you mean: {', '.join(close[:6])}?" if close else ""
    raise InputError(f"unknown task {name!r}.{hint} Known tasks: `tinydnabert finetune --list-tasks`; "
                     f"or pass a file/directory with --data and any --task name.")


def resolve_tasks(spec: str) -> list[Task]:
    """"all", a group name (nt_revised, nt_original, local) or a comma-separated list."""
    out: list[Task] = []
    for part in [p.strip() for p in spec.split(",") if p.strip()]:
        if part in GROUPS:
            out.extend(TASKS[n] for n in GROUPS[part])
        else:
            out.append(get_task(part))
    if not out:
        raise InputError(f"--tasks {spec!r}: no tasks named; use all, {', '.join(GROUPS)} or a comma-separated list")
    return list({t.name: t for t in out}.values())


def adhoc_task(name: str) -> Task:
    """A task that is not registered: addressed by --data PATH; classes/length come from the data."""
    return Task(name=f"custom/{name}", benchmark="custom", num_classes=0, seq_len_bp=0,
                description=f"user data for task {name!r}", comparable=False)


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------

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


def _parse_label(raw: str, where: str) -> Any:
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


@contextlib.contextmanager
def _open_text(path: Path) -> Iterator[io.TextIOBase]:
    """The file as text; a binary, non-UTF-8 or broken .gz file is an InputError naming it, not a traceback."""
    try:
        with (io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="") if path.suffix == ".gz"
              else open(path, encoding="utf-8", newline="")) as f:
            yield f
    except (UnicodeDecodeError, EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise InputError(f"{path}: cannot read as UTF-8 text{' (gzip)' if path.suffix == '.gz' else ''} "
                         f"({type(e).__name__}: {e}); is it the right file, complete and not corrupt?") from e


def read_csv_split(path: Path, delimiter: str = ",", task_filter: str | None = None) -> Split:
    """`sequence,label` CSV (GUE) or the NT revised TSV (`sequence,name,label,task`).

    Rows are reported by their line number in the file (the header is line 1)."""
    seqs, labels = [], []
    with _open_text(path) as f:
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
            labels.append(_parse_label(row[li], where))
    if not seqs:
        what = f" for task {task_filter!r}" if task_filter else ""
        raise InputError(f"{path}: no rows{what}")
    return Split(seqs, labels, str(path))


def iter_fasta(path: Path) -> Iterator[tuple[str, str, int]]:
    """(header without '>', sequence joined over lines, line number of the header)."""
    header, chunks, start = None, [], 0
    with _open_text(path) as f:
        for lineno, line in enumerate(f, start=1):
            line = line.strip()
            if not line:
                continue
            if line.startswith(">"):
                if header is not None:
                    yield header, "".join(chunks), start
                header, chunks, start = line[1:].strip(), [], lineno
            else:
                if header is None:
                    raise InputError(f"{path}, line {lineno}: sequence before the first '>' header; "
                                     f"is this a FASTA file?")
                chunks.append(line)
    if header is not None:
        yield header, "".join(chunks), start


def read_fasta_split(path: Path, label: Any = None) -> Split:
    """FASTA; the label is `label` (one file per class) or the header's text after its last '|'."""
    seqs, labels = [], []
    for header, seq, lineno in iter_fasta(path):
        where = f"{path}, record {header!r} (line {lineno})"
        if label is None:
            if "|" not in header:
                raise InputError(f"{where}: missing label; headers must end in '|LABEL' (e.g. "
                                 f"'>chr1:100-400|1'), or give one file per class")
            lab = _parse_label(header.rsplit("|", 1)[1], where)
        else:
            lab = label
        seqs.append(clean_sequence(seq, where))
        labels.append(lab)
    if not seqs:
        raise InputError(f"{path}: no FASTA records")
    return Split(seqs, labels, str(path))


def _merge(parts: list[Split], source: str) -> Split:
    return Split([s for p in parts for s in p.sequences], [lab for p in parts for lab in p.labels], source)


def _split_name(stem: str) -> str | None:
    """'train' from train.csv / train.fna / enhancer.cv (iEnhancer's cv = train, ind = test)."""
    for piece in reversed(re.split(r"[._]", stem.lower())):
        if piece in _SPLIT_ALIASES:
            return _SPLIT_ALIASES[piece]
    return None


def _is_fasta(path: Path) -> bool:
    name = path.name.lower().removesuffix(".gz")
    if not name.endswith(_FASTA_SUFFIXES):
        return False
    with _open_text(path) as f:
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
    with _open_text(path) as f:
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
        split = _split_name(path.stem.removesuffix(".csv").removesuffix(".tsv")) or "train"
        return {split: _read_file(path, tsv_task)}
    splits: dict[str, list[Split]] = {}
    for f in sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")):
        split = _split_name(f.name.lower().removesuffix(".gz").rsplit(".", 1)[0])
        if split is None or not (f.name.lower().removesuffix(".gz").endswith((".csv", ".tsv")) or _is_fasta(f)):
            continue
        splits.setdefault(split, []).append(_read_file(f, tsv_task))
    if not splits:
        # one file per class: DIR/train/<label>.fa, DIR/test/<label>.fa
        for sub in sorted(p for p in path.iterdir() if p.is_dir()):
            split = _SPLIT_ALIASES.get(sub.name.lower())
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


def _fetch(url: str, cache_dir: str | None) -> str:
    """Download an http(s) data file once into the cache (atomic rename); returns the local path.

    Plain urllib rather than fsspec's HTTP filesystem, which needs aiohttp on top of `datasets`."""
    import hashlib
    import os
    import tempfile
    import urllib.request

    base = Path(cache_dir) if cache_dir else Path.home() / ".cache" / "tinydnabert" / "task_files"
    name = url.rsplit("?", 1)[0].rsplit("/", 1)[-1] or "data"
    dest = base / hashlib.sha256(url.encode()).hexdigest()[:16] / name
    if dest.is_file():
        return str(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as f, urllib.request.urlopen(url, timeout=60) as r:
            while block := r.read(1 << 20):
                f.write(block)
        os.replace(tmp, dest)
    except Exception as e:
        Path(tmp).unlink(missing_ok=True)
        raise InputError(f"{url}: download failed ({type(e).__name__}: {e}); check the URL, or download the "
                         f"file and pass its local path with --data") from e
    return str(dest)


# ---------------------------------------------------------------------------------------------
# NT task files: from the hub (huggingface_hub) or from a clone of the hub repository
# ---------------------------------------------------------------------------------------------

def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in ("1", "ON", "YES", "TRUE")


def hub_endpoint() -> str:
    """HF_ENDPOINT as set now: huggingface_hub reads it once, at import, so we read it per call and pass it on."""
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def _snapshot_commit(local: str, rel: str) -> str | None:
    """The commit a cached file belongs to: hf_hub_download returns CACHE/<repo>/snapshots/<commit>/<rel>,
    online and offline alike (an HTTP header would need the network)."""
    top = Path(local).parents[len(rel.split("/")) - 1]
    return top.name if top.parent.name == "snapshots" else None


def _refuse_lfs_pointer(path: Path) -> None:
    """A clone made without git-lfs holds ~130-byte pointer files where the FASTA should be."""
    with open(path, "rb") as f:
        head = f.read(64)
    if head.startswith(b"version https://git-lfs.github.com/spec/"):
        raise InputError(f"{path}: a Git LFS pointer, not the FASTA file; run `git lfs pull` in the clone "
                         f"(or download the repository with `hf download REPO --repo-type dataset --local-dir DIR`)")


def load_hub(task: Task, revision: str | None = "main",
             cache_dir: str | None = None) -> tuple[dict[str, Split], dict[str, Any]]:
    """(splits, provenance) of an NT task, read file by file from its hub repository.

    `<task>/train.fna` and `<task>/test.fna` come through `huggingface_hub.hf_hub_download` (its cache,
    retries, HF_HUB_OFFLINE, HF_ENDPOINT) and are parsed by `read_fasta_split`; nothing else of the
    repository is fetched, and its loading script is never run. `revision` is a branch, tag or commit;
    the test file is read at the commit the train file came from, so a branch moving in between cannot
    mix two versions. Provenance: repository, endpoint, revision asked for, commit read, sha256 per file."""
    try:
        from huggingface_hub import constants, hf_hub_download
        from huggingface_hub.utils import (
            EntryNotFoundError,
            LocalEntryNotFoundError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )
    except ImportError as e:  # pragma: no cover - an install_requires dependency (and one of transformers)
        raise InputError("reading the NT tasks from the hub needs huggingface_hub: pip install huggingface_hub") from e
    repo, config = task.hub_id, task.hub_config or task.short
    revision = revision or "main"
    endpoint = hub_endpoint()
    # HF_HUB_OFFLINE set after huggingface_hub was imported (a notebook, a test) counts too
    offline = _env_true("HF_HUB_OFFLINE") or bool(constants.HF_HUB_OFFLINE)
    cache = str(cache_dir or constants.HF_HUB_CACHE)
    where = f"hf://datasets/{repo}@{revision}"
    no_network = (f"without network, clone the repository where there is network (git clone "
                  f"https://huggingface.co/datasets/{repo}, then git lfs pull in it) and pass --data CLONE, "
                  f"or download once and then set HF_HUB_OFFLINE=1")
    splits: dict[str, Split] = {}
    files: dict[str, str] = {}
    commit: str | None = None
    for name in NT_SPLIT_FILES:
        rel = f"{config}/{name}"
        try:
            local = hf_hub_download(repo, rel, repo_type="dataset", revision=commit or revision, cache_dir=cache_dir,
                                    endpoint=endpoint, local_files_only=offline)
        # offline or unreachable, and not in the cache; caught before EntryNotFoundError, of which it is a subclass
        except LocalEntryNotFoundError as e:
            if offline:
                raise InputError(f"{where}: HF_HUB_OFFLINE is set and {rel} is not in the Hugging Face hub cache "
                                 f"{cache}; download it once with network (unset HF_HUB_OFFLINE, same cache), "
                                 f"or clone the repository and pass --data CLONE") from e
            raise InputError(f"{where}: could not download {rel} from the Hugging Face hub ({endpoint}), and it is "
                             f"not in the cache {cache} ({type(e.__cause__ or e).__name__}); {no_network}") from e
        except RevisionNotFoundError as e:
            raise InputError(f"{where}: revision {revision!r} not found in {repo} at {endpoint}; pass --hub-revision "
                             f"main, or a branch, tag or full commit sha of the repository "
                             f"({endpoint}/datasets/{repo}/commits/main)") from e
        except EntryNotFoundError as e:
            raise InputError(f"{where}: no file {rel} in the repository; every NT task is a folder <task>/ with "
                             f"{' and '.join(NT_SPLIT_FILES)}, and task {config!r} has no {name} at this revision. "
                             f"Check --task (tinydnabert finetune --list-tasks) and --hub-revision") from e
        except RepositoryNotFoundError as e:
            raise InputError(f"hf://datasets/{repo}: repository not found at {endpoint} (or it is private/gated: "
                             f"log in with `hf auth login`); check HF_ENDPOINT if you use a mirror") from e
        except Exception as e:  # a connection dropped mid-download, a 5xx after the retries, a full disk, ...
            raise InputError(f"{where}: could not download {rel} from the Hugging Face hub ({endpoint}) "
                             f"({type(e).__name__}: {str(e)[:200]}); retry, or {no_network}") from e
        commit = commit or _snapshot_commit(local, rel)
        files[rel] = sha256_file(local)
        split = read_fasta_split(Path(local))
        split.source = f"hf://datasets/{repo}@{commit or revision}/{rel}"
        splits[name.split(".")[0]] = split
    provenance = {"kind": "hub", "repo": repo, "endpoint": endpoint, "revision": revision, "commit": commit,
                  "files": files}
    return splits, provenance


def _is_nt_clone(path: Path) -> bool:
    """A directory laid out like an NT hub repository: task folders holding train.fna / test.fna
    (and, in a real clone, the loading script and a README without configs, which are not read)."""
    return path.is_dir() and any(next(path.glob(f"*/{name}"), None) for name in NT_SPLIT_FILES)


def _git_head(path: Path) -> str | None:
    """The clone's commit, if it is a git clone (only its own .git: never an enclosing repository's)."""
    if not (path / ".git").exists():
        return None
    try:
        r = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    sha = r.stdout.strip()
    return sha if r.returncode == 0 and re.fullmatch(r"[0-9a-f]{40}", sha) else None


def load_nt_clone(task: Task, path: Path) -> tuple[dict[str, Split], dict[str, Any]]:
    """(splits, provenance) from a clone of an NT hub repository: the same files as load_hub, read the same way
    (never through datasets, never running the script). Provenance: the clone, its git commit, sha256 per file."""
    config = task.hub_config or task.short
    folder = path / config
    script = next((p.name for p in sorted(path.glob("*.py")) if p.name in _NT_SCRIPTS), None)
    commit = _git_head(path)
    about = [f"clone of {_NT_SCRIPTS[script]}"] if script else []
    about.append(f"git commit {commit}" if commit else "not a git clone: commit unknown")
    what = f"{path} ({', '.join(about)})"
    if not folder.is_dir():
        here = sorted({p.parent.name for name in NT_SPLIT_FILES for p in path.glob(f"*/{name}")})
        raise InputError(f"{what}: no task folder {config}/ (with {' and '.join(NT_SPLIT_FILES)}); it has: "
                         f"{', '.join(here)}. Pass --task with one of them, or a clone of the repository that has "
                         f"{config!r} ({NT_REVISED_HUB} or {NT_ORIGINAL_HUB})")
    splits: dict[str, Split] = {}
    files: dict[str, str] = {}
    for name in NT_SPLIT_FILES:
        f = folder / name
        if not f.is_file():
            raise InputError(f"{what}: no file {config}/{name}; an NT task folder holds "
                             f"{' and '.join(NT_SPLIT_FILES)}. Is the clone complete (git status, git lfs pull)?")
        _refuse_lfs_pointer(f)
        files[f"{config}/{name}"] = sha256_file(f)
        splits[name.split(".")[0]] = read_fasta_split(f)
    provenance = {"kind": "clone", "path": str(path.resolve()), "repo": _NT_SCRIPTS.get(script or ""),
                  "commit": commit, "files": files}
    return splits, provenance


def load_datasets(task: Task, source: str | None = None, data_files: dict[str, str] | None = None,
                  cache_dir: str | None = None) -> dict[str, Split]:
    """Splits through `datasets.load_dataset`: `data_files` (split -> local path or http(s) URL of
    parquet/csv/json), or `source`, a local directory whose README.md declares one config per task.
    Never the NT hub repositories: they hold a loading script, which datasets >= 4 refuses (see load_hub).
    Rows of a combined table (a `task` column) are filtered to this task."""
    try:
        import datasets
    except ImportError as e:  # pragma: no cover - datasets is a test dependency
        raise InputError("reading parquet/csv URLs or a README-configs directory needs `datasets`: "
                         "pip install 'tinydnabert[hub]'") from e
    if data_files:
        data_files = {split: _fetch(f, cache_dir) if "://" in f else f for split, f in data_files.items()}
        first = next(iter(data_files.values()))
        kind = first.rsplit(".", 1)[-1].lower()
        builder = {"parquet": "parquet", "csv": "csv", "tsv": "csv", "json": "json", "jsonl": "json"}.get(kind)
        if builder is None:
            raise InputError(f"{first}: cannot tell the format (expected .parquet, .csv, .tsv or .json)")
        kwargs: dict[str, Any] = {"delimiter": "\t"} if kind == "tsv" else {}
        what = ", ".join(data_files.values())
        try:
            ds = datasets.load_dataset(builder, data_files=data_files, cache_dir=cache_dir, **kwargs)
        except Exception as e:
            raise InputError(f"{what}: could not load with datasets ({type(e).__name__}: {e})") from e
    else:
        config = task.hub_config or task.short
        what = f"{source} (config {config})"
        try:
            ds = datasets.load_dataset(str(source), config, cache_dir=cache_dir)
        except Exception as e:
            raise InputError(f"{what}: could not load with datasets ({type(e).__name__}: {str(e)[:200]}); "
                             f"is config {config!r} declared in its README.md?") from e
    out: dict[str, Split] = {}
    for split_name, table in ds.items():
        split = _SPLIT_ALIASES.get(split_name, split_name)
        cols = table.column_names
        if "sequence" not in cols or "label" not in cols:
            raise InputError(f"{what}: split {split_name} has columns {cols}, expected 'sequence' and 'label'")
        seqs, labels = [], []
        tasks = table["task"] if "task" in cols else None
        for i, (seq, lab) in enumerate(zip(table["sequence"], table["label"])):
            if tasks is not None and task.hub_config and tasks[i] != task.hub_config:
                continue
            where = f"{what}, split {split_name}, row {i}"
            seqs.append(clean_sequence(seq or "", where))
            labels.append(_parse_label(str(lab) if lab is not None else "", where))
        if not seqs:
            raise InputError(f"{what}: split {split_name} has no rows for task {task.hub_config!r}")
        out[split] = Split(seqs, labels, f"{what}:{split_name}")
    return out


def _is_hub_repo_copy(path: Path) -> bool:
    readme = path / "README.md"
    if not (path.is_dir() and readme.is_file()):
        return False
    head = readme.read_text(encoding="utf-8", errors="replace")[:20000]
    return head.startswith("---") and "\nconfigs:" in head


def _parquet_files(path: Path) -> dict[str, str]:
    """split -> file for a .parquet file or a directory of train/test .parquet files; {} otherwise."""
    if path.is_file() and path.suffix == ".parquet":
        return {_split_name(path.stem) or "train": str(path)}
    if path.is_dir():
        found = {_split_name(f.stem): str(f) for f in sorted(path.glob("*.parquet"))}
        return {k: v for k, v in found.items() if k}
    return {}


def parse_data_urls(spec: str) -> dict[str, str]:
    """"train=URL,test=URL" -> {"train": URL, "test": URL}; a bare URL is the train split."""
    files: dict[str, str] = {}
    for part in [p.strip() for p in spec.split(",") if p.strip()]:
        head, sep, rest = part.partition("=")
        if sep and "://" not in head:
            split = _SPLIT_ALIASES.get(head.strip().lower())
            if split is None:
                raise InputError(f"--data {spec!r}: unknown split {head!r}; use train=URL,test=URL")
            files[split] = rest.strip()
        else:
            files["train"] = part
    return files


def load_task_data(task: Task, path: str | Path | None = None, cache_dir: str | None = None,
                   revision: str | None = "main") -> TaskData:
    """The task's splits with sorted label ids. `path` overrides where the data comes from:
    a local file/directory (a clone of an NT hub repository among them), or an http(s) URL of a
    parquet/csv file (read with `datasets`). `revision`: of the hub repository, for NT tasks without `path`."""
    provenance: dict[str, Any]
    if path is not None and "://" in str(path):
        files = parse_data_urls(str(path))
        splits, source = load_datasets(task, data_files=files, cache_dir=cache_dir), str(path)
        provenance = {"kind": "urls", "files": files}
    elif path is not None and _is_nt_clone(Path(path)):
        # a clone of an NT hub repository (script, README without configs, <task>/train.fna): its files, read directly
        (splits, provenance), source = load_nt_clone(task, Path(path)), str(path)
    elif path is not None and _is_hub_repo_copy(Path(path)):
        # a dataset repository whose README.md declares the configs: what `datasets` can read without a script
        splits, source = load_datasets(task, source=str(path), cache_dir=cache_dir), str(path)
        provenance = {"kind": "local", "path": str(Path(path).resolve())}
    elif path is not None and _parquet_files(Path(path)):
        splits, source = load_datasets(task, data_files=_parquet_files(Path(path)), cache_dir=cache_dir), str(path)
        provenance = {"kind": "local", "path": str(Path(path).resolve())}
    elif path is not None:
        splits, source = load_local(task, path), str(path)
        provenance = {"kind": "local", "path": str(Path(path).resolve())}
    elif task.local_path:
        p = data_dir() / task.local_path
        splits, source = load_local(task, p), str(p)
        provenance = {"kind": "local", "path": str(p.resolve())}
    elif task.hub_id:
        splits, provenance = load_hub(task, revision=revision, cache_dir=cache_dir)
        source = f"hf://datasets/{task.hub_id}@{provenance['commit'] or revision}/{task.hub_config}"
    else:
        raise InputError(f"task {task.name!r} has no data source; pass --data PATH")
    if "train" not in splits and "dev" in splits and "test" in splits:
        # GUE's EMP and splice tasks ship only dev/test: dev is the training data (SOURCES.md).
        splits["train"] = splits.pop("dev")
    labels = sorted({lab for s in splits.values() for lab in s.labels}, key=lambda v: (isinstance(v, str), v))
    if task.num_classes and len(labels) > task.num_classes:
        raise InputError(f"{source}: {len(labels)} distinct labels {labels[:10]}, but task {task.name} has "
                         f"{task.num_classes} classes; is this the right --task for this --data?")
    if len(labels) < 2:
        raise InputError(f"{source}: only one distinct label ({labels}); a classification task needs two or more")
    return TaskData(task=task, splits=splits, labels=labels, source=source, provenance=provenance)


def task_summary(task: Task) -> dict[str, Any]:
    d = dataclasses.asdict(task)
    d.pop("class_files", None)
    return d


def list_tasks() -> Iterable[str]:
    for name, t in TASKS.items():
        pub = ", ".join(f"{k}={v}" for k, v in t.published.items())
        line = f"{name:36s} {t.num_classes} classes {t.seq_len_bp:5d} bp  {t.description}"
        yield line + (f"  [{pub}]" if pub else "")

"""The task registry: every benchmark task by name, with where its data lives and the published figures.

The 18 original and 18 revised Nucleotide Transformer tasks (from tinydnabert/published/nt_scores.csv,
sources in its SOURCE.md), the real GUE and iEnhancer-2L tasks shipped in the shared data, and one
addressable task per NT task in the real 1,500-row sample of the revised TSV.
"""

from __future__ import annotations

import csv
import dataclasses
import io
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Iterable

from tinydnabert.errors import InputError

NT_ORIGINAL_HUB = "InstaDeepAI/nucleotide_transformer_downstream_tasks"
NT_REVISED_HUB = "InstaDeepAI/nucleotide_transformer_downstream_tasks_revised"

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

# DNABERT-2's GUE benchmark, 28 tasks, in GUE's own layout under a root directory (default: the shared data's
# benchmark/GUE, which holds 6 of them; `tinydnabert benchmark --data GUE_ROOT` reads all of a full copy).
# (name, path under the GUE root, classes, bp, NT task whose published figure is shown beside it, description)
GUE_DIR = "benchmark/GUE"
_EMP = ("H3", "H3K14ac", "H3K36me3", "H3K4me1", "H3K4me2", "H3K4me3", "H3K79me3", "H3K9ac", "H4", "H4ac")
_EMP_NT = {"H3": "nt_original/H3", "H3K14ac": "nt_original/H3K14ac", "H3K36me3": "nt_original/H3K36me3",
           "H3K4me1": "nt_original/H3K4me1", "H3K4me2": "nt_original/H3K4me2", "H3K4me3": "nt_original/H3K4me3",
           "H3K79me3": "nt_original/H3K79me3", "H3K9ac": "nt_original/H3K9ac", "H4": "nt_original/H4",
           "H4ac": "nt_original/H4ac"}
_GUE = [
    *[(f"gue/{m}", f"EMP/{m}", 2, 500, _EMP_NT[m], f"GUE yeast {m} (epigenetic mark), 500 bp") for m in _EMP],
    *[(f"gue/mouse_{i}", f"mouse/{i}", 2, 101, None, f"GUE mouse TF binding #{i}, 101 bp (not in NT)")
      for i in range(5)],
    ("gue/prom_300_all", "prom/prom_300_all", 2, 300, "nt_revised/promoter_all",
     "GUE human promoter (all) vs non-promoter, 300 bp"),
    ("gue/prom_300_notata", "prom/prom_300_notata", 2, 300, "nt_revised/promoter_no_tata",
     "GUE human promoter (no TATA) vs non-promoter, 300 bp"),
    ("gue/prom_300_tata", "prom/prom_300_tata", 2, 300, "nt_revised/promoter_tata",
     "GUE human promoter (TATA) vs non-promoter, 300 bp"),
    ("gue/prom_core_all", "prom/prom_core_all", 2, 70, "nt_revised/promoter_all",
     "GUE human core promoter vs non-promoter, 70 bp"),
    ("gue/prom_core_notata", "prom/prom_core_notata", 2, 70, "nt_revised/promoter_no_tata",
     "GUE human core promoter (no TATA), 70 bp"),
    ("gue/prom_core_tata", "prom/prom_core_tata", 2, 70, "nt_revised/promoter_tata",
     "GUE human core promoter (TATA), 70 bp"),
    ("gue/splice_reconstructed", "splice/reconstructed", 3, 400, "nt_original/splice_sites_all",
     "GUE splice site: 0 acceptor, 1 donor, 2 neither; 400 bp"),
    *[(f"gue/tf_{i}", f"tf/{i}", 2, 101, None, f"GUE human TF binding #{i}, 101 bp (not in NT)") for i in range(5)],
    ("gue/covid", "virus/covid", 9, 1000, None, "GUE SARS-CoV-2 variant classification, 9 classes, 1,000 bp"),
]
assert len(_GUE) == 28, len(_GUE)
# The six the shared data ships (SOURCES.md): the `local` group, which needs no download.
_SHIPPED_GUE = ("gue/prom_300_tata", "gue/prom_core_all", "gue/H3", "gue/H3K4me3", "gue/splice_reconstructed",
                "gue/mouse_0")

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
    for name, path, k, bp, nt, desc in _GUE:
        reg[name] = Task(name=name, benchmark="gue", num_classes=k, seq_len_bp=bp, local_path=f"{GUE_DIR}/{path}",
                         description=desc, published=published.get(nt, {}) if nt else {},
                         published_for=nt if nt in published else None, comparable=False)
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
    "local": [*_SHIPPED_GUE, *(n for n, t in TASKS.items() if t.benchmark == "ienhancer")],
    "gue": [n for n, t in TASKS.items() if t.benchmark == "gue"],
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
    """"all", a group name (nt_revised, nt_original, local, gue) or a comma-separated list."""
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


def task_summary(task: Task) -> dict[str, Any]:
    d = dataclasses.asdict(task)
    d.pop("class_files", None)
    return d


def list_tasks() -> Iterable[str]:
    for name, t in TASKS.items():
        pub = ", ".join(f"{k}={v}" for k, v in t.published.items())
        line = f"{name:36s} {t.num_classes} classes {t.seq_len_bp:5d} bp  {t.description}"
        yield line + (f"  [{pub}]" if pub else "")

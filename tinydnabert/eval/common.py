"""What every evaluation shares: its settings, the task and its splits, MCC, and the files a run leaves.

    EvalSettings   what a benchmark sets once for all its runs (seeds, validation, data revision, device, ...)
    EvalConfig     + which model, which task, where: the base of FinetuneConfig and ProbeConfig
    STRANDS / reverse_complement   --strands forward|both, and the other strand of a sequence
    load_task / task_splits / carve_validation / Splits / cv_folds / Folds / mcc
    results_record, write_run, write_predictions / read_predictions, read_results, finished
    run_id / run_scores   each run's id (seed S, or fold K under --cv): what pairs two arms

The run directory (written atomically by the protocol; a failed run leaves nothing):
    OUT/results.json        format, protocol, task, data source and provenance (hub commit, sha256 per file),
                            labels (sorted; id = index), counts, validation, strands, model, device, per-seed
                            val/test MCC, mean ± sd, versions, and the protocol's own keys
    OUT/config.json         {protocol: the resolved config, ...what the protocol derived}
    OUT/predictions/seed<S>.csv   index,label,pred on the test split (source label values); fold<K>.csv under --cv
    OUT/folds.json          --cv only: the training rows used and each fold's validation rows (file order, 0-based)
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import math
import platform
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Optional

import numpy as np

from tinydnabert.config import config_to_dict
from tinydnabert.errors import InputError
from tinydnabert.eval.encoder import DeviceSettings
from tinydnabert.eval.tasks import TaskData, adhoc_task, get_task, load_task_data, task_summary
from tinydnabert.io import atomic_write_json

RESULTS = "results.json"
CONFIG = "config.json"
FOLDS_FILE = "folds.json"  # --cv: each fold's validation rows
PROTOCOLS = ("finetune", "probe")  # each protocol's config section in config.json
# results' "protocol" and the benchmark's Protocol column: finetune (seeds, a carved validation split), probe,
# nt-cv (finetune --cv N: the NT paper's N-fold cross-validation, scored on the test split per fold)
TABLE_PROTOCOLS = ("finetune", "probe", "nt-cv")

# A field with `"protocol": False` changes where or how fast a run goes, not what it measures: a finished run
# is reused across it (device, cache, output path). Every other field must match for a run to be reused.
RUN_ONLY = {"protocol": False}

# --strands: forward reads each sequence as given; both also reads its reverse complement (the other strand of the
# same DNA) and averages: the two vectors (embed, probe), the two logits (finetune's validation and test, which
# trains on a random strand per example). A protocol key like any other: a run saved before it existed read forward.
STRANDS = ("forward", "both")

# Complements of the letters a DNA sequence may hold: A C G T, N, and the IUPAC ambiguity codes (R = A/G pairs
# with Y = C/T, K = G/T with M = A/C, B = not A with V = not T, D = not C with H = not G; S, W, N are their own).
_COMPLEMENT = str.maketrans("ACGTNRYKMSWBDHVacgtnrykmswbdhv", "TGCANYRMKSWVHDBtgcanyrmkswvhdb")
_NO_COMPLEMENT = re.compile(r"[^ACGTNRYKMSWBDHVacgtnrykmswbdhv]")


def reverse_complement(seq: str, where: str = "sequence") -> str:
    """The other strand, 5' to 3'. A letter with no complement (U, '-', a digit ...) is an InputError naming
    `where` and the position."""
    bad = _NO_COMPLEMENT.search(seq)
    if bad:
        raise InputError(f"{where}: character {bad.group()!r} at position {bad.start() + 1} has no complement "
                         "(A C G T N and the IUPAC codes R Y K M S W B D H V have); fix the sequence or use "
                         "--strands forward")
    return seq.translate(_COMPLEMENT)[::-1]





@dataclass(kw_only=True)
class EvalSettings(DeviceSettings):
    """The settings every run of an evaluation shares, whatever the model, task and protocol. A benchmark
    sets them once (BenchmarkConfig extends this) and every arm of every task gets them all, by name."""

    command: ClassVar[str] = "evaluation"  # names the command in messages (and the config.json section)

    seed: int = field(default=0, metadata={"help": "first seed; also seeds the train/validation carve"})
    seeds: int = field(default=1, metadata={"help": "number of seeds (seed, seed+1, ...); reports mean ± sd"})
    val_fraction: float = field(default=0.1, metadata={"help": "fraction of train carved out for validation"})
    validation: str = field(default="carve", metadata={
        "help": "carve: validation carved from train with --seed; dev: the task's own dev split (GUE)",
        "choices": ["carve", "dev"]})
    max_train_samples: int = field(default=0, metadata={
        "help": "use a seeded, class-stratified subset of N training rows (0 = all); for quick runs"})
    max_length: int = field(default=0, metadata={
        "help": "tokens per sequence incl. <s> </s>: finetune truncates to it, the probe's windows are this wide "
                "(probe --window) (0 = automatic, at most what the model's positions allow)"})
    hub_revision: str = field(default="main", metadata={
        "help": "revision of the NT hub repository to read (branch, tag or commit sha); results.json records "
                "the commit actually read and the sha256 of each file (a --data clone is read as it is)"})
    strands: str = field(default="forward", metadata={
        "help": "forward: each sequence as given; both: also its reverse complement, averaged (probe: the two "
                "embeddings; finetune: each training example on a random strand, the two strands' logits averaged "
                "at validation and test)", "choices": list(STRANDS)})
    cache_dir: Optional[str] = field(default=None, metadata={
        "help": "download cache: the huggingface_hub cache for NT hub tasks (default $HF_HUB_CACHE, "
                "~/.cache/huggingface/hub), the datasets cache for URL data", **RUN_ONLY})

    def __post_init__(self) -> None:
        if self.seeds < 1:
            raise InputError(f"{self.command}: --seeds {self.seeds} must be >= 1")
        if not 0.0 < self.val_fraction < 0.5:
            raise InputError(f"{self.command}: --val-fraction {self.val_fraction} must be in (0, 0.5)")
        if self.max_length < 0 or self.max_train_samples < 0:
            raise InputError(f"{self.command}: --max-length and --max-train-samples must be >= 0 "
                             "(0 = automatic / all)")
        if not self.hub_revision.strip():
            raise InputError(f"{self.command}: --hub-revision is empty; use main, a branch, a tag or a commit sha")
        if self.strands not in STRANDS:
            raise InputError(f"{self.command}: --strands {self.strands!r}: use forward or both")

    @property
    def protocol_name(self) -> str:
        """results.json's `protocol`: the command (finetune, probe), or nt-cv for finetune --cv."""
        return self.command


@dataclass(kw_only=True)
class EvalConfig(EvalSettings):
    """One evaluation run: the shared settings + which model, which task, and where its results go."""

    model: str = field(metadata={"help": "HF export directory (config.json + weights + tokenizer), a pretraining "
                                         "checkpoint directory, or 'scratch' (random weights; see --scratch-from)"})
    task: str = field(metadata={"help": "task name (see `tinydnabert finetune --list-tasks`; a bare NT name means "
                                        "the revised task), or any name for your own --data", **RUN_ONLY})
    out: str = field(metadata={"help": "output directory (results.json, config.json, predictions/)", **RUN_ONLY})
    data: Optional[str] = field(default=None, metadata={
        "help": "task data instead of the registry's: a directory of train/test .csv, .tsv or .fna files, "
                "one FASTA per class (DIR/train/<label>.fa), an NT revised .tsv, or http(s) URLs "
                "'train=URL,test=URL' of parquet/csv read with `datasets`", **RUN_ONLY})
    scratch_from: Optional[str] = field(default=None, metadata={
        "help": "with --model scratch: an export directory (its config.json + tokenizer: the same architecture) "
                "or a tokenizer directory (then the reference ModelConfig)"})
    overwrite: bool = field(default=False, metadata={"help": "replace an existing --out", **RUN_ONLY})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.model == "scratch" and not self.scratch_from:
            raise InputError(f"{self.command}: --model scratch needs --scratch-from DIR: the pretrained export to "
                             "copy the architecture and tokenizer from (or a tokenizer directory)")


def shared_settings(src: Any, cls: type = EvalSettings) -> dict[str, Any]:
    """{name: value} of every field of settings class `cls`, read from `src` (a config that extends it): how a
    driver hands ALL the shared settings on, so a field added to `cls` reaches every run without a new line."""
    return {f.name: getattr(src, f.name) for f in dataclasses.fields(cls) if f.init}


def protocol_keys(cls: type) -> tuple[str, ...]:
    """The fields of config class `cls` that define what a run measures (all but the RUN_ONLY ones)."""
    return tuple(f.name for f in dataclasses.fields(cls) if f.init and f.metadata.get("protocol", True))


# ---------------------------------------------------------------------------------------------
# The task and its splits
# ---------------------------------------------------------------------------------------------

def resolve_task(cfg: EvalConfig):
    try:
        return get_task(cfg.task)
    except InputError:
        if cfg.data:  # any name is fine for the user's own data
            return adhoc_task(cfg.task)
        raise


def load_task(cfg: EvalConfig):
    """(task, its data): from --data, or the registry's place (the hub at --hub-revision for NT tasks)."""
    task = resolve_task(cfg)
    return task, load_task_data(task, cfg.data, cache_dir=cfg.cache_dir, revision=cfg.hub_revision)


def carve_validation(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, validation indices): a seeded, class-stratified carve where every class allows it."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(labels))
    _, counts = np.unique(labels, return_counts=True)
    n_val = math.ceil(fraction * len(labels))
    if n_val < 1 or n_val >= len(labels):
        raise InputError(f"{len(labels)} training rows are too few to carve a validation fraction of {fraction}; "
                         "use more data or --validation dev")
    # Stratify where every class can be on both sides (sklearn raises otherwise, e.g. 1 val row, 2 classes).
    strat = labels if counts.min() >= 2 and min(n_val, len(labels) - n_val) >= len(counts) else None
    tr, va = train_test_split(idx, test_size=fraction, random_state=seed, stratify=strat)
    # (used with fraction = 1 - N/len to draw a stratified subset of N rows, too)
    return np.sort(tr), np.sort(va)


@dataclass
class Splits:
    """(sequences, label ids) of train, validation and test: what both arms of a comparison share."""

    train: tuple[list[str], np.ndarray]
    val: tuple[list[str], np.ndarray]
    test: tuple[list[str], np.ndarray]

    def counts(self) -> dict[str, int]:
        return {"train": len(self.train[0]), "val": len(self.val[0]), "test": len(self.test[0])}


def _test_split(data: TaskData) -> tuple[list[str], np.ndarray]:
    if "test" not in data.splits:
        raise InputError(f"{data.source}: no test split (found {sorted(data.splits)}); the protocols report test "
                         f"MCC, so the data needs a test file (test.csv / test.fna / a 'test' split)")
    return data.splits["test"].sequences, np.asarray(data.label_ids("test"))


def train_rows(data: TaskData, seed: int, max_train_samples: int = 0) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(sequences, label ids, their row indices in the train split's file order, 0-based) of the training rows a
    run uses: all of them, or with `max_train_samples` a seeded, class-stratified subset (files are often sorted
    by class)."""
    seqs = data.splits["train"].sequences
    y = np.asarray(data.label_ids("train"))
    rows = np.arange(len(seqs))
    if 0 < max_train_samples < len(seqs):
        rows, _ = carve_validation(y, 1 - max_train_samples / len(seqs), seed)
        seqs, y = [seqs[i] for i in rows], y[rows]
    return seqs, y, rows


def _check_labels(data: TaskData, y: np.ndarray, what: str = "training split") -> None:
    missing = sorted(set(range(len(data.labels))) - set(y.tolist()))
    if missing:
        raise InputError(f"{data.source}: {what} has no rows of label(s) "
                         f"{[data.labels[i] for i in missing]}; check the labels or the --data files")


def task_splits(data: TaskData, seed: int, val_fraction: float, validation: str = "carve",
                max_train_samples: int = 0) -> Splits:
    """Validation carved from train with `seed` (class-stratified) or the task's dev split; test untouched,
    used once. `max_train_samples`: a seeded, class-stratified subset first (files are often sorted by class)."""
    test = _test_split(data)
    train_seqs, train_y, _ = train_rows(data, seed, max_train_samples)
    if validation == "dev":
        if "dev" not in data.splits:
            raise InputError(f"{data.source}: --validation dev but there is no dev split; use --validation carve")
        val = (data.splits["dev"].sequences, np.asarray(data.label_ids("dev")))
    else:
        tr, va = carve_validation(train_y, val_fraction, seed)
        val = ([train_seqs[i] for i in va], train_y[va])
        train_seqs, train_y = [train_seqs[i] for i in tr], train_y[tr]
    _check_labels(data, train_y)
    return Splits((train_seqs, train_y), val, test)


def sha256_ints(values) -> str:
    """sha256 of a sequence of integers as little-endian int64: a fingerprint of row indices or batch order."""
    return hashlib.sha256(np.asarray(values, dtype="<i8").tobytes()).hexdigest()


@dataclass
class Folds:
    """N-fold cross-validation of the training split (--cv; the NT paper's protocol): every training row is in
    exactly one fold's validation set; fold k trains on the other folds, selects on fold k, and is scored on the
    task's test split. The assignment depends only on the data, --seed and --max-train-samples, so both arms of
    a comparison get the same folds."""

    whole: Splits            # train: every row the folds partition; val: empty; test: the task's test split
    rows: np.ndarray         # each of those rows' index in the train split's file order (0-based)
    val: list[np.ndarray]    # per fold, the positions (into whole.train) of its validation rows, sorted
    stratified: bool
    seed: int

    def split(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(train positions, validation positions) of fold k, positions into whole.train."""
        va = self.val[k]
        return np.setdiff1d(np.arange(len(self.rows)), va), va

    def val_rows(self, k: int) -> list[int]:
        """Fold k's validation rows as row indices of the train split's file."""
        return self.rows[self.val[k]].tolist()

    def record(self) -> dict[str, Any]:
        """results.json's `cv`: the number of folds, how they were drawn, and per fold its validation rows'
        count and sha256 (the indices themselves are in FOLDS_FILE)."""
        return {"folds": len(self.val), "assignment_seed": self.seed, "stratified": self.stratified,
                "rows": len(self.rows), "rows_sha256": sha256_ints(self.rows), "file": FOLDS_FILE,
                "per_fold": [{"fold": k, "val_rows": len(v), "train_rows": len(self.rows) - len(v),
                              "val_rows_sha256": sha256_ints(self.val_rows(k))} for k, v in enumerate(self.val)]}

    def listing(self) -> dict[str, Any]:
        """FOLDS_FILE: the training rows used and each fold's validation rows (train split file order, 0-based)."""
        return {"train_rows": self.rows.tolist(), "folds": [self.val_rows(k) for k in range(len(self.val))]}


def cv_folds(data: TaskData, seed: int, n_folds: int, max_train_samples: int = 0) -> Folds:
    """`n_folds` disjoint validation folds covering the training rows once: a seeded StratifiedKFold where every
    class has at least n_folds rows (each fold keeps the class balance), else a seeded KFold."""
    from sklearn.model_selection import KFold, StratifiedKFold

    test = _test_split(data)
    seqs, y, rows = train_rows(data, seed, max_train_samples)
    if not 2 <= n_folds <= len(seqs):
        raise InputError(f"{data.source}: --cv/--folds {n_folds}: need 2 <= folds <= the {len(seqs)} training rows; "
                         "use fewer folds or more rows (--max-train-samples)")
    _, counts = np.unique(y, return_counts=True)
    stratified = bool(counts.min() >= n_folds)
    splitter = (StratifiedKFold if stratified else KFold)(n_splits=n_folds, shuffle=True, random_state=seed)
    val = [np.sort(va) for _, va in splitter.split(np.zeros(len(y)), y)]
    folds = Folds(Splits((seqs, y), ([], y[:0]), test), rows, val, stratified, seed)
    for k in range(n_folds):
        _check_labels(data, y[folds.split(k)[0]], f"fold {k}'s training part")
    return folds


def mcc(y_true, y_pred) -> float:
    from sklearn.metrics import matthews_corrcoef

    return float(matthews_corrcoef(y_true, y_pred))


# ---------------------------------------------------------------------------------------------
# The run directory: results.json, config.json, predictions/
# ---------------------------------------------------------------------------------------------

def prediction_file(seed: int, fold: int | None = None) -> str:
    """Where a run's test predictions go, relative to the run directory (results' seeds[i].predictions): one
    file per seed, or per fold under --cv."""
    return f"predictions/seed{seed}.csv" if fold is None else f"predictions/fold{fold}.csv"


def run_id(entry: dict[str, Any]) -> str:
    """The id that pairs a run of one arm with the same run of the other: 'fold K' under --cv, else 'seed S'."""
    return f"fold {entry['fold']}" if entry.get("fold") is not None else f"seed {entry['seed']}"


def run_scores(results: dict[str, Any], key: str = "test_mcc") -> dict[str, float]:
    """{run id: its `key`} of a results.json: what stats.paired_interval pairs by id."""
    scores = {}
    for entry in results["seeds"]:
        if run_id(entry) in scores:
            raise InputError(f"results list {run_id(entry)} twice; the run directory is damaged: delete it and rerun")
        scores[run_id(entry)] = entry[key]
    return scores


def write_predictions(path: Path, y: np.ndarray, pred: np.ndarray, labels: list[Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["index", "label", "pred"])  # source label values; ids are their index in results' labels
    for i, (a, b) in enumerate(zip(y.tolist(), pred.tolist())):
        w.writerow([i, labels[a], labels[b]])
    path.write_text(buf.getvalue(), encoding="utf-8")


def read_predictions(path: str | Path) -> tuple[list[str], list[str]]:
    with open(path, encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [r["label"] for r in rows], [r["pred"] for r in rows]


def versions() -> dict[str, str]:
    import torch
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__}


def results_record(cfg: EvalConfig, fmt: str, data: TaskData, counts: dict[str, int], model: dict[str, Any],
                   device: Any, per_seed: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    """results.json of one run, the same keys for every protocol (`extra`: the protocol's own, e.g. the
    derived max length or the probe's pooling). `per_seed`: one dict per seed (per fold under --cv: it has `fold`)
    with at least val_mcc, test_mcc."""
    mccs = [s["test_mcc"] for s in per_seed]
    return {
        "format": fmt,
        "protocol": cfg.protocol_name,
        "task": task_summary(data.task),
        "data_source": data.source,
        "data_provenance": data.provenance,   # the commit and sha256 of each file the numbers come from
        "labels": list(data.labels),
        "label_ids": {str(lab): i for i, lab in enumerate(data.labels)},
        "counts": counts,
        "validation": cfg.validation,
        "strands": cfg.strands,
        "model": model,
        "device": str(device),
        **extra,
        "seeds": per_seed,
        "test_mcc_mean": statistics.fmean(mccs),
        "test_mcc_sd": statistics.stdev(mccs) if len(mccs) > 1 else 0.0,
        "val_mcc_mean": statistics.fmean(s["val_mcc"] for s in per_seed),
        "versions": versions(),
    }


def write_run(run_dir: Path, cfg: EvalConfig, results: dict[str, Any], **config_extra: Any) -> None:
    """results.json and config.json ({cfg.command: the resolved config, **config_extra}) into run_dir."""
    atomic_write_json(run_dir / RESULTS, results)
    atomic_write_json(run_dir / CONFIG, {cfg.command: config_to_dict(cfg), **config_extra})


def read_results(run_dir: str | Path) -> dict[str, Any] | None:
    """results.json of a finished run; None if the directory holds no finished run."""
    p = Path(run_dir) / RESULTS
    return json.loads(p.read_text()) if p.is_file() else None


def read_config(run_dir: str | Path, cls: type) -> dict[str, Any]:
    """The settings a finished run was made with (its config.json section for `cls`'s protocol)."""
    return json.loads((Path(run_dir) / CONFIG).read_text())[cls.command]


def finished(run_dir: str | Path, cfg: EvalConfig) -> dict[str, Any] | None:
    """The results of a run already finished in run_dir under cfg's protocol settings (protocol_keys), None if
    there is none. A run finished under other settings is an error, so one table never mixes protocols."""
    results = read_results(run_dir)
    if results is None:
        return None
    saved = read_config(run_dir, type(cfg))
    fields = {f.name: f for f in dataclasses.fields(cfg)}
    keys = protocol_keys(type(cfg))
    # a run saved before a key existed ran with its default (hub_revision: earlier runs read "main")
    old = {k: saved[k] if k in saved else fields[k].default for k in keys}
    diff = {k: (old[k], getattr(cfg, k)) for k in keys if old[k] != getattr(cfg, k)}
    if diff:
        raise InputError(f"{run_dir}: finished under other settings {diff} (saved, asked); use another --out "
                         f"or delete that run directory")
    return results

"""NT benchmark: fine-tune the pretrained model AND the same architecture from scratch on each task.

    tinydnabert benchmark --model RUN/export --tasks all --out runs/benchmark
    tinydnabert benchmark --model RUN/export --tasks gue/prom_300_tata,gue/H3 \
        --steps 400 --batch-size 32 --warmup-steps 40 --eval-every 100 --seeds 3
    tinydnabert benchmark --model RUN/export --tasks nt_revised --protocol nt-cv     # the NT paper's 10-fold CV

For every task: `scratch` (random weights, the pretrained model's config.json and tokenizer) and
`pretrained` runs, each with `tinydnabert.eval.finetune.run_finetune` (or `probe.run_probe`) under the
same protocol and seeds, so the difference is pretraining alone. Every arm's config is built from the one
BenchmarkConfig by `arm_config`: every shared setting (EvalSettings, and for fine-tuning FinetuneSettings)
is handed on by name, so a setting given to the benchmark reaches both protocols. Runs already finished
under OUT/runs/ with the same settings are reused (resumable); a task whose data cannot be loaded (e.g. an
NT task with the hub unreachable) is reported as skipped with the reason, and the rest go on.

--protocol nt-cv runs each arm as `finetune --cv --folds` (fold k of both arms: the same rows, the same
held-out fold, seeded --seed+k) and pairs the arms by fold; only its rows on NT tasks are compared like for
like with the published figures, which the NT paper measured the same way (report.sota_for).

Writes OUT/nt_benchmark.{json,csv,md,png} (eval/report.py): per task and protocol Scratch, Ours (test MCC mean ±
sd over seeds, or over folds), SOTA (and WHICH SOTA), gain over scratch and % of SOTA, and in the JSON the data it
was computed on
(`data_provenance`: hub repository, --hub-revision, commit, sha256 per file); summary means, medians and ratios.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from tinydnabert.config import add_dataclass_args, dataclass_from_args
from tinydnabert.errors import InputError
from tinydnabert.eval import report
from tinydnabert.eval.common import PROTOCOLS, EvalSettings, finished, read_results, shared_settings
from tinydnabert.eval.finetune import FinetuneConfig, FinetuneSettings, run_finetune
from tinydnabert.eval.probe import ProbeConfig, run_probe
from tinydnabert.eval.tasks import Task, load_task_data, resolve_tasks
from tinydnabert.eval.tasks.registry import GUE_DIR
from tinydnabert.io import OutputLock, atomic_write_json

KINDS = ("scratch", "pretrained")
ArmConfig = Union[FinetuneConfig, ProbeConfig]


@dataclass(kw_only=True)
class BenchmarkConfig(FinetuneSettings):
    """The benchmark: which model and tasks, the arms and protocols, and the settings every arm shares
    (inherited: EvalSettings for both protocols, FinetuneSettings for fine-tuning)."""

    command = "benchmark"

    model: str = field(metadata={"help": "pretrained HF export directory (its config.json + tokenizer also define "
                                         "the scratch model)"})
    tasks: str = field(default="all", metadata={
        "help": "all, nt_revised, nt_original, local (the shipped real tasks), gue (DNABERT-2's 28), or a "
                "comma-separated list"})
    data: Optional[str] = field(default=None, metadata={
        "help": "GUE_ROOT: a local copy of GUE in its own layout (EMP/H3/train.csv, prom/prom_300_tata/..., "
                "tf/0/...): gue/ tasks are read from there (default: the 6 in the shared data)"})
    out: str = field(default="runs/benchmark", metadata={"help": "output directory"})
    kinds: str = field(default="scratch,pretrained", metadata={
        "help": "which runs to make: scratch,pretrained or one of them; scratch needs only the model's config.json "
                "and tokenizer, so it can run while pretraining goes on"})
    protocol: str = field(default="finetune", metadata={
        "help": "finetune: the whole model trained per task, --seeds with a carved validation split; probe: a "
                "frozen encoder + logistic regression (minutes per task on a CPU); both (finetune and probe); "
                "nt-cv: the NT paper's protocol, --folds-fold cross-validation of the training split, each fold's "
                "model scored on the test split (--folds fine-tunings per arm per task)",
        "choices": ["finetune", "probe", "both", "nt-cv"]})
    folds: int = field(default=10, metadata={
        "help": "--protocol nt-cv: number of folds (the NT paper's 10; fewer for CPU-sized runs)"})
    pretraining_shards: Optional[str] = field(default=None, metadata={
        "help": "the pretraining's shard directory (a preprocess --out): each task's share of rows that share a "
                "32-mer (either strand) with its train shards, and that it holds whole, as table columns "
                "(`tinydnabert overlap`; one streaming pass, OUT/overlap.json)"})
    probe_c_grid: str = field(default=ProbeConfig.__dataclass_fields__["c_grid"].default, metadata={
        "help": "probe: inverse L2 strengths tried, the best on validation MCC kept"})

    def __post_init__(self) -> None:
        super().__post_init__()
        asked = {k.strip() for k in self.kinds.split(",") if k.strip()}
        if not asked or asked - set(KINDS):
            raise InputError(f"--kinds {self.kinds!r}: use scratch,pretrained or one of them")
        if self.folds < 2:
            raise InputError(f"benchmark: --folds {self.folds} must be >= 2 (the NT paper uses 10)")
        if self.protocol == "nt-cv" and (self.seeds != 1 or self.validation != "carve"):
            raise InputError("benchmark: --protocol nt-cv: the folds are the repeats and each fold is its own "
                             "validation set; drop --seeds and --validation and set --folds")

    @property
    def arms(self) -> list[str]:
        """The kinds asked for, in KINDS order."""
        return [k for k in KINDS if k in {k.strip() for k in self.kinds.split(",")}]

    @property
    def protocols(self) -> list[str]:
        return list(PROTOCOLS) if self.protocol == "both" else [self.protocol]

    @property
    def repeats(self) -> str:
        """What the ± and the paired intervals are over, in words."""
        cv = f"{self.folds} folds" if "nt-cv" in self.protocols else ""
        seeds = f"{self.seeds} seed(s)" if set(self.protocols) - {"nt-cv"} else ""
        return " / ".join(x for x in (seeds, cv) if x)


def run_dir(out: Path, task: Task, kind: str, protocol: str = "finetune") -> Path:
    return out / "runs" / task.name.replace("/", "__") / (kind if protocol == "finetune" else f"{protocol}-{kind}")


def task_data_path(b: BenchmarkConfig, task: Task) -> str | None:
    """Where a task's files are read from: a GUE task under --data GUE_ROOT (GUE's own layout), else the
    registry's own place (None)."""
    if b.data and task.benchmark == "gue" and task.local_path:
        return str(Path(b.data) / task.local_path.removeprefix(f"{GUE_DIR}/"))
    return None


def arm_config(b: BenchmarkConfig, task: Task, kind: str, protocol: str) -> ArmConfig:
    """The config of one arm (kind) of one task under one protocol: every shared setting of the benchmark by
    name (shared_settings), then the arm's model, the task, its data and its run directory."""
    run = dict(model="scratch" if kind == "scratch" else b.model, scratch_from=b.model if kind == "scratch" else None,
               task=task.name, out=str(run_dir(Path(b.out), task, kind, protocol)), data=task_data_path(b, task),
               overwrite=True)
    if protocol == "probe":  # the probe has its own batch size (embedding): not the fine-tuning one
        return ProbeConfig(**shared_settings(b, EvalSettings), c_grid=b.probe_c_grid, **run)
    return FinetuneConfig(**shared_settings(b, FinetuneSettings), cv=b.folds if protocol == "nt-cv" else 0, **run)


def run_or_reuse(b: BenchmarkConfig, task: Task, kind: str, protocol: str = "finetune") -> dict[str, Any]:
    """The results of one arm under one protocol: a finished run with the same settings, or a new one."""
    cfg = arm_config(b, task, kind, protocol)
    label = f"{task.name} {kind}" if protocol == "finetune" else f"{task.name} {protocol} {kind}"
    done = finished(cfg.out, cfg)
    if done is not None:
        print(f"[skip] {label}: already done ({cfg.out})", flush=True)
        return done
    print(f"[run ] {label} -> {cfg.out}", flush=True)
    return run_probe(cfg) if isinstance(cfg, ProbeConfig) else run_finetune(cfg)


class DataCheck:
    """Loads a task's data before its runs, so a task whose data cannot be had here is skipped, not the
    benchmark; one unreachable hub is enough: the other hub tasks are skipped without waiting on retries."""

    def __init__(self, b: BenchmarkConfig):
        self.b, self.hub_error = b, ""

    def why_not(self, task: Task) -> str | None:
        b = self.b
        done = all(read_results(run_dir(Path(b.out), task, k, p)) is not None for k in b.arms for p in b.protocols)
        if done:
            return None
        try:
            if self.hub_error and task.hub_id and not task.local_path:
                raise InputError(f"skipped without retrying: {self.hub_error}")
            load_task_data(task, task_data_path(b, task), cache_dir=b.cache_dir, revision=b.hub_revision)
        except InputError as e:
            if "Hugging Face hub" in str(e) and not self.hub_error:
                self.hub_error = str(e)
            return str(e)
        return None


def task_rows(b: BenchmarkConfig, task: Task, row: dict[str, Any]) -> list[dict[str, Any]]:
    """The table rows of one task, one per protocol: both arms run (or reused) and compared by seed."""
    rows = []
    for protocol in b.protocols:
        res = {kind: run_or_reuse(b, task, kind, protocol) for kind in b.arms}
        prow = {**row, "protocol": protocol}
        if len(res) < len(KINDS):  # --kinds scratch: runs made now, the table when both exist
            rows.append({**prow, "status": "partial", "reason": f"only {','.join(res)} run (--kinds)"})
            continue
        s, o = res["scratch"], res["pretrained"]
        where = run_dir(Path(b.out), task, "scratch", protocol).parent
        if s.get("data_provenance", {}).get("files") != o.get("data_provenance", {}).get("files"):
            # e.g. the hub's main moved between the two runs: the gain would compare two datasets
            raise InputError(f"{where}: the scratch and pretrained runs read "
                             f"different data ({s.get('data_provenance')} vs {o.get('data_provenance')}); delete "
                             "one run directory and rerun, with --hub-revision COMMIT to pin the data")
        if protocol == "nt-cv" and s["cv"]["per_fold"] != o["cv"]["per_fold"]:
            raise InputError(f"{where}: the scratch and pretrained runs cut different folds, so fold k is not the same "
                             "experiment in both; delete both nt-cv run directories and rerun")
        rows.append({**report.compare(prow, s, o, task), "device": o["device"],
                     "reference": {k: v for k, v in task.published.items() if k.startswith("reference_")},
                     "data_provenance": o.get("data_provenance", {}),  # repo, revision, commit, sha256 per file
                     "runs": {k: str(run_dir(Path(b.out), task, k, protocol)) for k in KINDS}})
    return rows


def pretraining_overlap(b: BenchmarkConfig, tasks: list[Task]) -> dict[str, dict[str, Any]]:
    """{task: its test split's overlap with the pretraining train shards} (eval/overlap.py, k = 32, both strands),
    the whole record in OUT/overlap.json: what the pretraining already read of what the table scores."""
    from tinydnabert.eval.overlap import measure_overlap

    if not tasks:
        return {}
    # the data the arms scored: the same path, hub revision and cache
    data = [load_task_data(t, task_data_path(b, t), cache_dir=b.cache_dir, revision=b.hub_revision) for t in tasks]
    result = measure_overlap(b.pretraining_shards, data, progress=True)
    atomic_write_json(Path(b.out) / "overlap.json", result)
    seen = {}
    for name, t in result["tasks"].items():
        test = t["splits"].get("test") or {}
        seen[name] = {"seen_kmer_pct": test.get("sharing_kmer_pct"), "seen_whole_pct": test.get("contained_pct")}
    return seen


def run(b: BenchmarkConfig) -> dict[str, Any]:
    if not Path(b.model).exists():
        raise InputError(f"{b.model}: model not found; pass the pretrained export directory (RUN/export)")
    tasks = resolve_tasks(b.tasks)
    rows: list[dict[str, Any]] = []
    check = DataCheck(b)
    t0 = time.perf_counter()
    for task in tasks:
        row = report.task_row(task)
        reason = check.why_not(task)
        if reason is not None:
            print(f"[skip] {task.name}: {reason}", flush=True)
            # one row per protocol, like a task that ran: a reader filtering by protocol still sees it skipped
            rows += [{**row, "protocol": protocol, "status": "skipped", "reason": reason} for protocol in b.protocols]
            continue
        rows += task_rows(b, task, row)
    if b.pretraining_shards:
        seen = pretraining_overlap(b, [t for t in tasks if any(r["task"] == t.name and r["status"] == "done"
                                                                  for r in rows)])
        rows = [{**r, **seen.get(r["task"], {})} for r in rows]
    device = next((r["device"] for r in reversed(rows) if r["status"] == "done"), "?")
    meta = {"model": str(b.model), "tasks": b.tasks, "steps": b.steps, "batch_size": b.batch_size,
            "warmup_steps": b.warmup_steps, "lr": b.lr, "seeds": b.seeds, "seed": b.seed,
            "eval_every": b.eval_every, "max_train_samples": b.max_train_samples, "device": device,
            "hub_revision": b.hub_revision, "strands": b.strands, "protocols": b.protocols,
            "folds": b.folds if "nt-cv" in b.protocols else None, "repeats": b.repeats,
            "probe_c_grid": b.probe_c_grid, "pretraining_shards": b.pretraining_shards,
            "wall_seconds_this_invocation": round(time.perf_counter() - t0, 1), "sota_columns": report.SOTA_COLUMNS}
    result = {"meta": meta, "summary": report.summarize(rows), "tasks": rows}
    md = report.write_report(Path(b.out), result,
                             f"{'/'.join(Path(b.model).resolve().parts[-2:])}: test MCC, {b.steps} steps x "
                             f"{b.batch_size}, lr {b.lr:g}, {b.repeats}")
    print(md, flush=True)
    print(f"wrote {b.out}/nt_benchmark.{{json,csv,md,png}}", flush=True)
    return result


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_dataclass_args(p, BenchmarkConfig)


def main(args: argparse.Namespace) -> int:
    b = dataclass_from_args(BenchmarkConfig, args)
    with OutputLock(Path(b.out), "--out"):  # a second benchmark into --out would redo and rewrite its runs
        run(b)
    return 0

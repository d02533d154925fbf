"""`tinydnabert overlap`: what the pretraining already saw of a benchmark task.

    tinydnabert overlap --shards data/chr20 --task gue/prom_core_all --task gue/prom_300_tata --out overlap.json

For each split of each task: the share of rows that share an exact k-mer (default 32, either strand) with the
pretraining TRAIN shards, and the share contained whole (the row, or its reverse complement, inside one
pretraining segment). How:

  1. index every row of every task: their distinct canonical k-mers, sorted (prep/kmers.py; memory grows with the
     tasks, ~13 bytes a k-mer: GUE prom_core_all's 59,196 rows of 70 bp make 2.3 M);
  2. stream the train shards past the index once, shard by shard, each checked against the manifest as training
     checks it (prep/shardcheck.py: tokenizer, listing, size, sha256, token ids). The token ids are decoded back to
     bases with the shards' own tokenizer (one table lookup a shard, prep/kmers.py TokenDecoder), not through the
     samples' coordinates back to the genome: this measures the bases the model was trained on, needs only the
     shards directory (the genome FASTA may be elsewhere, or gone) and checks nothing twice. A shard is ~2-3 Mbp,
     so memory stays flat whatever the genome (GRCh38's ~1,400 shards included);
  3. rows whose k-mers all turned up in a shard are confirmed by a substring search in the segments holding them.

Rows shorter than k (or all N) have no k-mer and can neither share nor be contained; rows longer than the shards'
--max-len cannot lie inside one segment. Both are counted. Row indices are 0-based, in the split's order as the
task loader reads it (its file's order; for the NT revised TSV, among that task's rows).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import multiprocessing
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from tinydnabert import formats
from tinydnabert.config import add_dataclass_args, config_to_dict, dataclass_from_args
from tinydnabert.console import print0
from tinydnabert.errors import InputError
from tinydnabert.eval.tasks import TaskData, adhoc_task, get_task, load_task_data
from tinydnabert.io import atomic_write_json, sha256_file
from tinydnabert.prep.exclude import TaskSequences
from tinydnabert.prep.kmers import KmerIndex, OverlapMatcher, TokenDecoder, check_k
from tinydnabert.prep.shardcheck import (
    ShardEntry,
    check_shard,
    check_tokenizer,
    first_error,
    listed_shards,
    listing_problems,
    manifest_tokenizer,
)


@dataclass
class OverlapConfig:
    shards: str = field(metadata={"help": "a preprocess output directory (manifest.json, tokenizer/, train/)"})
    task: list[str] = field(metadata={"repeat": True, "help": (
        "a task (repeat the flag): a registered name (`tinydnabert finetune --list-tasks`), NAME=PATH for your own "
        "data (a file or directory the task loader reads), or just PATH")})
    k: int = field(default=32, metadata={"help": "k-mer length, <= 32 (canonical: both strands)"})
    out: str = field(default="", metadata={"help": "write the figures and the row indices to this JSON file"})
    tokenizer: str = field(default="", metadata={
        "help": "decode with this tokenizer directory (default SHARDS/tokenizer); its sha256 must be the manifest's"})
    split: str = field(default="train", metadata={"help": "which shards split to stream", "choices": ["train", "val"]})
    workers: int = field(default=1, metadata={
        "help": "processes that read, check and decode shards ahead of the matching (1: this one alone)"})
    progress: bool = field(default=True, metadata={"help": "show a progress bar (stderr)"})

    def __post_init__(self) -> None:
        self.task = list(self.task or [])
        if not self.task:
            raise InputError("no task: pass --task NAME (repeat it for more)")
        check_k(self.k)
        if self.workers < 1:
            raise InputError(f"--workers {self.workers}: must be >= 1")


def load_tasks(specs: Sequence[str | TaskData]) -> list[TaskData]:
    """Task data for each spec: a TaskData as it is, NAME=PATH, a registered name, or a path (named by its stem)."""
    out = []
    for spec in specs:
        if isinstance(spec, TaskData):
            out.append(spec)
            continue
        if "=" in spec and not Path(spec).exists():
            name, path = spec.split("=", 1)
            if "://" not in path and not Path(path).exists():
                raise InputError(f"--task {spec}: {path}: no such file or directory")
            out.append(load_task_data(adhoc_task(name), path))
            continue
        try:
            task = get_task(spec)
        except InputError as e:
            if not Path(spec).exists():
                unknown = str(e).split(" Known tasks")[0]  # "unknown task 'x'." and its "Did you mean" list
                raise InputError(f"--task {spec}: no such file or directory, and {unknown} Known tasks: "
                                 "`tinydnabert finetune --list-tasks`; your own data: --task NAME=PATH") from None
            task = adhoc_task(Path(spec).name.split(".")[0])
            out.append(load_task_data(task, spec))
            continue
        out.append(load_task_data(task))
    names = [t.task.name for t in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise InputError(f"--task {dup[0]} given twice; name your own data NAME=PATH to tell them apart")
    return out


def task_sequences(specs: Sequence[str]) -> dict[str, TaskSequences]:
    """The `preprocess --exclude-from` entries that are task names, not paths, resolved into every row of every
    split (prep cannot read the task registry: it is above it). Another entry that is no path is an error naming
    it both ways: no such file, and no such task."""
    out = {}
    for spec in specs:
        bare = next((spec[len(p):] for p in ("kmers:", "regions:") if spec.startswith(p)), spec)
        if Path(spec).exists() or Path(bare).exists():
            continue
        try:
            task = get_task(spec)
        except InputError as e:
            raise InputError(f"--exclude-from {spec}: no such file or directory, and not a task: {e}") from None
        td = load_task_data(task)
        out[spec] = TaskSequences(task.name, [x for sp in td.splits.values() for x in sp.sequences], td.source)
    return out


_DECODER: TokenDecoder | None = None


def _read_shard(entry: ShardEntry, vocab: int, mpath: str, tokenizer_file: str):
    """One shard, checked against the manifest as training checks it, decoded: (codes, starts, ends, keys)."""
    global _DECODER
    if _DECODER is None or _DECODER.path != tokenizer_file:
        _DECODER = TokenDecoder(tokenizer_file)
    samples, problems = check_shard(entry, vocab, mpath)
    if problems:
        raise first_error(problems)
    return (*_DECODER.decode([s.ids for s in samples]), [s.key for s in samples])


@contextlib.contextmanager
def _reader(entries: list[ShardEntry], vocab: int, mpath: str, tokenizer_file: str, workers: int):
    """The shards decoded in order: in this process, or read ahead by `workers` processes, at most two shards
    a worker in flight (each ~10 MB decoded), so memory stays flat."""
    if workers <= 1:
        yield (_read_shard(e, vocab, mpath, tokenizer_file) for e in entries)
        return
    from concurrent.futures import ProcessPoolExecutor

    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))

    def ordered():
        pending: collections.deque = collections.deque()
        for e in entries:
            pending.append(pool.submit(_read_shard, e, vocab, mpath, tokenizer_file))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()

    try:
        yield ordered()
    finally:
        pool.shutdown(cancel_futures=True)


def _bar(progress: bool, total: int):
    from tqdm import tqdm

    return tqdm(total=total, desc="overlap", unit="bp", unit_scale=True, disable=not progress, dynamic_ncols=True,
                mininterval=0.5)


def peak_rss_mib() -> float:
    """This process's peak resident memory so far (MiB; Linux reports KiB): the figure that must stay flat as the
    shards grow. Reader processes (--workers) are not included."""
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def measure_overlap(shards_dir: str | Path, tasks: Sequence[str | TaskData], k: int = 32, *,
                    tokenizer: str | Path | None = None, split: str = "train", workers: int = 1,
                    progress: bool = False) -> dict[str, Any]:
    """The figures `tinydnabert overlap` prints and writes: {"k", "shards", "manifest_sha256", "tokenizer",
    "shard_bases", ..., "tasks": {name: {"source", "splits": {split: {"rows", "sharing_kmer", "contained",
    ..., "sharing_rows", "contained_rows", "contained_in"}}}}}. `tasks`: names, NAME=PATH, paths or loaded TaskData
    (the benchmark passes what it already loaded). `workers` > 1: that many processes read, check and decode the
    shards (the larger part of the time: webdataset's tar parsing) while this one matches them."""
    check_k(k)
    shards_dir = Path(shards_dir)
    manifest = formats.load_manifest(shards_dir)
    mpath = shards_dir / formats.MANIFEST
    vocab, tok_sha = manifest_tokenizer(manifest, mpath)
    tok_dir = Path(tokenizer) if tokenizer else shards_dir / formats.TOKENIZER_DIR
    if tokenizer and (tok_dir / formats.TOKENIZER_DIR / formats.TOKENIZER_FILE).is_file():
        tok_dir = tok_dir / formats.TOKENIZER_DIR  # a preprocess output or an export given as the tokenizer
    check_tokenizer(shards_dir, tok_dir)
    entries = listed_shards(manifest, split, mpath, lambda name: str(shards_dir / split / name))
    problems = listing_problems(shards_dir, split, entries, mpath)
    if problems:
        raise first_error(problems)
    max_len = (manifest.get("config") or {}).get("max_len")

    data = load_tasks(tasks)
    rows: list[str] = []
    where: list[tuple[str, str, int, int]] = []  # (task, split, first row, end row) in `rows`
    for td in data:
        for name, sp in td.splits.items():
            where.append((td.task.name, name, len(rows), len(rows) + len(sp.sequences)))
            rows.extend(sp.sequences)
    t0 = time.perf_counter()
    index = KmerIndex(rows, k)
    matcher = OverlapMatcher(index, rows, max_len)
    t_index = time.perf_counter() - t0

    bases = segments = 0
    t0 = time.perf_counter()
    tok_file = str(tok_dir / formats.TOKENIZER_FILE)
    with _bar(progress, sum(e.bases or 0 for e in entries) or None) as bar, \
            _reader(entries, vocab, str(mpath), tok_file, workers) as decoded:
        for codes, starts, ends, keys in decoded:
            matcher.feed(codes, starts, ends, keys)
            n = int((ends - starts).sum())
            bases += n
            segments += len(keys)
            bar.update(n)
            bar.set_postfix_str(f"{bases / max(time.perf_counter() - t0, 1e-9) / 1e6:.1f} Mbp/s", refresh=False)
    seconds = time.perf_counter() - t0

    sharing = matcher.sharing()
    counts = index.counts
    result: dict[str, Any] = {
        "k": k, "shards": str(shards_dir.resolve()), "split": split, "manifest_sha256": sha256_file(mpath),
        "tokenizer": str(tok_dir.resolve()), "tokenizer_sha256": tok_sha, "shard_max_len": max_len,
        "shard_bases": bases, "shard_segments": segments, "shards_read": len(entries),
        "seconds": round(seconds, 2), "index_seconds": round(t_index, 2), "workers": workers,
        "bases_per_second": round(bases / seconds) if seconds > 0 else None,
        "index_kmers": int(len(index.keys)), "peak_rss_mib": peak_rss_mib(), "tasks": {},
    }
    for td in data:
        result["tasks"][td.task.name] = {"source": td.source, "provenance": td.provenance, "splits": {}}
    for task, name, lo, hi in where:
        share = np.flatnonzero(sharing[lo:hi])
        whole = np.flatnonzero(matcher.contained[lo:hi])
        n = hi - lo
        too_long = int((index.lengths[lo:hi] > max_len).sum()) if max_len else 0
        result["tasks"][task]["splits"][name] = {
            "rows": n, "sharing_kmer": len(share), "contained": len(whole),
            "sharing_kmer_pct": round(100 * len(share) / n, 3) if n else None,
            "contained_pct": round(100 * len(whole) / n, 3) if n and too_long < n else None,
            "rows_without_kmer": int((counts[lo:hi] == 0).sum()), "rows_longer_than_segments": too_long,
            "sharing_rows": share.tolist(), "contained_rows": whole.tolist(),
            "contained_in": [matcher.where[lo + i] for i in whole.tolist()],
        }
    return result


def table(result: dict[str, Any]) -> list[str]:
    """The printed table: one line per task and split."""
    k = result["k"]
    head = f"{'task':<28} {'split':<6} {'rows':>8} {f'sharing a {k}-mer':>17} {'contained whole':>16}"
    lines = [head, "-" * len(head)]
    for task, t in result["tasks"].items():
        for split, s in t["splits"].items():
            whole = "n/a (longer)" if s["contained_pct"] is None else f"{s['contained_pct']:.2f}%"
            share = "n/a" if s["sharing_kmer_pct"] is None else f"{s['sharing_kmer_pct']:.2f}%"
            lines.append(f"{task:<28} {split:<6} {s['rows']:>8,} {share:>17} {whole:>16}")
    return lines


def run_overlap(cfg: OverlapConfig) -> dict[str, Any]:
    result = measure_overlap(cfg.shards, cfg.task, cfg.k, tokenizer=cfg.tokenizer or None, split=cfg.split,
                             workers=cfg.workers, progress=cfg.progress)
    result["config"] = config_to_dict(cfg)
    for line in table(result):
        print0(line)
    mbps = (result["bases_per_second"] or 0) / 1e6
    print0(f"streamed {result['shard_bases']:,} bp ({result['shard_segments']:,} segments, {result['shards_read']} "
           f"{cfg.split} shards) in {result['seconds']:.1f} s: {mbps:.1f} Mbp/s; index of "
           f"{result['index_kmers']:,} {cfg.k}-mers built in {result['index_seconds']:.1f} s")
    notes = [(t, sp, s) for t, v in result["tasks"].items() for sp, s in v["splits"].items()]
    for t, sp, s in notes:
        if s["rows_without_kmer"]:
            print0(f"note: {t} {sp}: {s['rows_without_kmer']:,} rows shorter than {cfg.k} bp (or all N) have no "
                   "k-mer: they can neither share nor be contained")
        if s["rows_longer_than_segments"]:
            print0(f"note: {t} {sp}: {s['rows_longer_than_segments']:,} rows are longer than the longest segment "
                   f"({result['shard_max_len']} bp): they cannot be contained whole in one")
    if cfg.out:
        atomic_write_json(cfg.out, result)
        print0(f"wrote {cfg.out}")
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_dataclass_args(parser, OverlapConfig)


def main(args: argparse.Namespace) -> int:
    run_overlap(dataclass_from_args(OverlapConfig, args))
    return 0

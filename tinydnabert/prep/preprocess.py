"""The preprocessing stage: FASTA -> tokenizer (BPE, k-mer or single-base) + WebDataset shards + manifest.

    tinydnabert preprocess --fasta GRCh38.fa.gz --records primary --out data/grch38

Two streaming passes over the FASTA, one record in memory at a time:
  1. scan: validate, select records, cut A/C/G/T runs into seeded random 256-1024 bp segments,
     assign strand and split, count everything, and keep a seeded 1/10 sample of training
     segments (bottom-k by a per-segment random key, capped at --tokenizer-max-bases) to train BPE
     (--tokenizer-kind kmer / char have fixed vocabularies and keep no sample).
  2. shard: cut the same segments again (segmentation is a pure function of sequence, record
     name and seed, so no segment list is stored), group them into shards and hand each shard to a
     worker process that tokenizes it and writes its tar. Results are merged in shard order, so
     the output is byte-identical whatever --workers is.
--exclude-from (prep/exclude.py) drops whole segments in pass 1 (those overlapping a region, or holding a k-mer
of a task's sequences; the indices of the dropped kept per record for pass 2): every other segment is exactly
what it would be without it.
Everything is built in a temporary directory beside --out and renamed into place on success.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import heapq
import math
import multiprocessing
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np

from tinydnabert import __version__
from tinydnabert.config import add_dataclass_args, config_to_dict, dataclass_from_args
from tinydnabert.console import print0
from tinydnabert.errors import InputError
from tinydnabert.formats import (
    FORMAT_VERSION,
    MANIFEST,
    SPECIAL_TOKENS,
    SPLITS,
    TOKENIZER_DIR,
    TOKENIZER_FILE,
    shard_name,
    tokenizer_fingerprint,
)
from tinydnabert.io import atomic_output_dir, atomic_write_json, sha256_file
from tinydnabert.prep.exclude import Exclusions, TaskSequences, fai_records
from tinydnabert.prep.fasta import RECORD_PRESETS, RecordSelector, acgt_runs, count_acgt, iter_records
from tinydnabert.prep.segment import Segments, segment_record, segment_text
from tinydnabert.prep.shards import ShardSample, split_summary, write_shard
from tinydnabert.prep.tokenizer import (
    KINDS,
    MAX_ID,
    build_kmer_tokenizer,
    fixed_vocab_size,
    load_existing,
    load_raw_tokenizer,
    save_tokenizer,
    tokenizer_kind,
    train_tokenizer,
)


@dataclass
class PreprocessConfig:
    fasta: list[str] = field(default_factory=list, metadata={
        "help": "input FASTA files: plain, gzip or BGZF (index optional), one or more"})
    out: str = field(default="", metadata={"help": "output directory (tokenizer/, train/, val/, manifest.json)"})
    overwrite: bool = field(default=False, metadata={"help": "replace an existing output directory"})
    records: str = field(default="all", metadata={
        "help": "record preset: 'all', or 'primary' = chromosomes 1-22, X, Y, M only (RefSeq NC_0000xx, UCSC "
                "chrN, Ensembl N names); drops GRCh38.p14 alt loci, patches, _random and chrUn scaffolds",
        "choices": sorted(RECORD_PRESETS)})
    include: list[str] = field(default_factory=list, metadata={
        "help": "keep only records whose whole name matches one of these regular expressions"})
    exclude: list[str] = field(default_factory=list, metadata={
        "help": "drop records whose whole name matches one of these regular expressions"})
    exclude_from: list[str] = field(default_factory=list, metadata={"repeat": True, "help": (
        "leave out every segment that overlaps a region of, or shares an exact --exclude-k k-mer (either strand) "
        "with a sequence of, this file (repeat the flag): BED regions, an NT revised TSV (its chr:start-end names "
        "as regions), a task's CSV/TSV (sequence column) or FASTA, or a directory of them; kmers:FILE / "
        "regions:FILE force how a CSV/TSV is read. Whole segments are dropped (docs/preprocess.md, \"Excluding\")")})
    exclude_k: int = field(default=32, metadata={"help": "k of the --exclude-from sequence match (<= 32)"})
    keep_case: bool = field(default=False, metadata={
        "help": "keep soft-masked (lower-case) bases lower case, so the tokenizer learns separate tokens for "
                "repeats; by default everything is upper-cased"})
    min_len: int = field(default=256, metadata={"help": "shortest segment, bp; shorter leftovers are dropped"})
    max_len: int = field(default=1024, metadata={"help": "longest segment, bp"})
    reverse_complement: bool = field(default=False, metadata={
        "help": "augmentation: put each segment on a random strand (reverse complement with probability 1/2)"})
    val_fraction: Optional[float] = field(default=None, metadata={
        "help": "fraction of segments (seeded draw) held out for validation; default 0.01, or 0 when "
                "--val-records is given"})
    val_records: list[str] = field(default_factory=list, metadata={
        "help": "hold out these whole records (exact names) for validation instead of a random fraction"})
    tokenizer_kind: str = field(default="bpe", metadata={
        "help": "bpe: train byte-pair encoding (--vocab-size, --min-frequency); kmer: non-overlapping k-mers, "
                "k = --kmer-k (a remainder shorter than k as single bases); char: single bases. kmer and char have "
                "fixed vocabularies (no training; --vocab-size / --min-frequency refused)", "choices": list(KINDS)})
    kmer_k: int = field(default=6, metadata={
        "help": "k of --tokenizer-kind kmer, 1-7 (uint16 ids: 4^8 8-mers do not fit); 4^k + 4 + 5 tokens"})
    vocab_size: int = field(default=1024, metadata={"help": "BPE vocabulary size, special tokens included"})
    min_frequency: int = field(default=4, metadata={"help": "BPE: minimum pair frequency for a merge"})
    tokenizer_sample: float = field(default=0.1, metadata={
        "help": "fraction of training segments (seeded draw) the tokenizer is trained on"})
    tokenizer_max_bases: int = field(default=32_000_000, metadata={
        "help": "cap on the tokenizer training sample, bp: BPE training takes ~40 bytes/bp (measured: 20 Mbp "
                "-> 0.76 GB), so 32 Mbp keeps it near 1.3 GB whatever the genome size (GRCh38/10 = 310 Mbp)"})
    model_max_length: int = field(default=512, metadata={
        "help": "model_max_length saved with the tokenizer (tokens, specials included)"})
    samples_per_shard: int = field(default=4096, metadata={"help": "largest number of samples in a shard"})
    min_shards: int = field(default=16, metadata={
        "help": "at least this many shards per split (if it has that many samples), so every rank x "
                "dataloader worker gets shards"})
    seed: int = field(default=0, metadata={"help": "seed for segmentation, strands, split and tokenizer sample"})
    tokenizer: str = field(default="", metadata={
        "help": "shard with this existing tokenizer instead of training one (a tokenizer dir, a preprocess output "
                "or an export): genomes meant to be mixed, or continued pretraining of a model, share its ids"})
    workers: int = field(default=0, metadata={"help": "worker processes for tokenizing and sharding; 0 = all cores"})
    progress: bool = field(default=True, metadata={"help": "show progress bars (stderr)"})

    def __post_init__(self) -> None:
        if isinstance(self.fasta, (str, os.PathLike)):
            self.fasta = [str(self.fasta)]
        self.fasta = [str(p) for p in self.fasta]
        self.include, self.exclude, self.val_records = list(self.include), list(self.exclude), list(self.val_records)
        self.exclude_from = [str(p) for p in self.exclude_from or ()]
        if not self.fasta:
            raise InputError("no input: pass one or more FASTA files with --fasta")
        if not self.out:
            raise InputError("no output directory: pass --out DIR")
        if self.records not in RECORD_PRESETS:
            raise InputError(f"--records {self.records!r}: choose one of {sorted(RECORD_PRESETS)}")
        if not 1 <= self.min_len <= self.max_len:
            raise InputError(f"--min-len {self.min_len} / --max-len {self.max_len}: need 1 <= min_len <= max_len")
        if self.max_len > 100_000:
            raise InputError(f"--max-len {self.max_len}: segments longer than 100 kbp make BPE training explode "
                             "(HF tokenizers #1313); use <= 100000 (the recipe uses 1024)")
        if self.val_fraction is None:
            self.val_fraction = 0.0 if self.val_records else 0.01
        if not 0.0 <= self.val_fraction < 1.0:
            raise InputError(f"--val-fraction {self.val_fraction}: must be in [0, 1)")
        if self.val_records and self.val_fraction > 0:
            raise InputError("--val-records and --val-fraction both given: hold out either whole records or a "
                             "random fraction, not both (pass --val-fraction 0)")
        self._check_tokenizer_kind()
        if not len(SPECIAL_TOKENS) + 4 <= self.vocab_size <= 65535:
            raise InputError(f"--vocab-size {self.vocab_size}: must be in [{len(SPECIAL_TOKENS) + 4}, 65535] "
                             "(5 specials + A C G T at least; ids are stored as uint16)")
        if self.min_frequency < 1:
            raise InputError(f"--min-frequency {self.min_frequency}: must be >= 1")
        if not 0.0 < self.tokenizer_sample <= 1.0:
            raise InputError(f"--tokenizer-sample {self.tokenizer_sample}: must be in (0, 1]")
        if self.tokenizer_max_bases < self.max_len:
            raise InputError(f"--tokenizer-max-bases {self.tokenizer_max_bases}: must be >= --max-len")
        if self.samples_per_shard < 1 or self.min_shards < 1:
            raise InputError("--samples-per-shard and --min-shards must be >= 1")
        if self.workers < 0:
            raise InputError(f"--workers {self.workers}: must be >= 0 (0 = all cores)")
        if not 1 <= self.exclude_k <= 32:
            raise InputError(f"--exclude-k {self.exclude_k}: must be in [1, 32] (a k-mer is one 64-bit integer)")
        if self.model_max_length < 8:
            raise InputError(f"--model-max-length {self.model_max_length}: must be >= 8")


    def _check_tokenizer_kind(self) -> None:
        if self.tokenizer_kind not in KINDS:
            raise InputError(f"--tokenizer-kind {self.tokenizer_kind!r}: choose one of {', '.join(KINDS)}")
        if not 1 <= self.kmer_k <= 7:
            raise InputError(f"--kmer-k {self.kmer_k}: must be in [1, 7] (token ids are uint16: the 4^8 = 65,536 "
                             "8-mers do not fit beside the special tokens); the k-mer recipes use 3-6")
        if self.tokenizer_kind == "bpe":
            return
        if self.tokenizer:
            raise InputError(f"--tokenizer-kind {self.tokenizer_kind} with --tokenizer {self.tokenizer}: a reused "
                             "tokenizer brings its own kind; drop --tokenizer-kind")
        for flag, value, default in (("--vocab-size", self.vocab_size, 1024), ("--min-frequency",
                                                                                self.min_frequency, 4)):
            if value != default:
                raise InputError(f"{flag} {value}: applies to --tokenizer-kind bpe only; a {self.tokenizer_kind} "
                                 "tokenizer's vocabulary is fixed (every k-mer + the single bases + 5 specials); "
                                 f"drop {flag}")
        k = self.kmer_k if self.tokenizer_kind == "kmer" else 1
        if self.keep_case and fixed_vocab_size(k, "ACGTacgt") > MAX_ID:
            raise InputError(f"--keep-case with --kmer-k {k}: 8^{k} mixed-case k-mers do not fit uint16 ids; "
                             "use --kmer-k <= 5 or drop --keep-case")

    @property
    def kind_k(self) -> Optional[int]:
        """The k of the tokenizer this config trains or builds: kmer_k, 1 for char, None for BPE."""
        return {"bpe": None, "char": 1}.get(self.tokenizer_kind, self.kmer_k)

# ---------------------------------------------------------------------------------------------
# Pass 1: scan


@dataclass
class Scan:
    input_acgt_bases: int = 0
    input_length: int = 0
    short_leftover_bases: int = 0
    short_leftover_pieces: int = 0
    excluded_record_bases: int = 0
    excluded_records: list[str] = field(default_factory=list)
    records: list[dict] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: {s: 0 for s in SPLITS})
    bases: dict[str, int] = field(default_factory=lambda: {s: 0 for s in SPLITS})
    sample: list[tuple[float, int, int, str]] = field(default_factory=list)  # max-heap on key
    sample_bases: int = 0
    excluded_segments: int = 0       # --exclude-from: segments left out, and their bases
    excluded_segment_bases: int = 0
    drops: dict[str, np.ndarray] = field(default_factory=dict)  # record -> indices of its segments left out


def _segments(cfg: PreprocessConfig, name: str, seq: bytes, val_names: set[str]) -> Segments:
    return segment_record(name, acgt_runs(seq, cfg.keep_case), seed=cfg.seed, min_len=cfg.min_len,
                          max_len=cfg.max_len, reverse_complement=cfg.reverse_complement,
                          val_fraction=cfg.val_fraction, val_record=name in val_names)


def _without(segs: Segments, drop: np.ndarray | None) -> Segments:
    """The segments minus those at `drop` (indices): every draw (strand, split, sample key) stays the kept
    segment's own, so what is kept is exactly what a run without --exclude-from makes of it."""
    if drop is None or not len(drop):
        return segs
    keep = np.ones(len(segs), dtype=bool)
    keep[drop] = False
    return Segments(segs.record, segs.starts[keep], segs.ends[keep], segs.reverse[keep], segs.val[keep],
                    segs.tok_key[keep], segs.dropped_bases, segs.dropped_pieces)


def _bar(cfg: PreprocessConfig, desc: str, total: int | None):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="bp", unit_scale=True, disable=not cfg.progress,
                dynamic_ncols=True, mininterval=0.5)


def scan(cfg: PreprocessConfig, selector: RecordSelector, exclusions: Exclusions | None = None) -> Scan:
    """Pass 1: counts per split, the tokenizer sample, dropped-base accounting, the segments --exclude-from
    leaves out (found once here, their indices kept for pass 2: the k-mer match is the costly part)."""
    sc = Scan()
    val_names = set(cfg.val_records)
    heap = sc.sample  # entries (-key, record_index, start, text): bottom-k by key, bounded by bases
    lengths: dict[str, int] = {}
    with _bar(cfg, "scan", None) as bar:
        for rec_index, rec in enumerate(iter_records(cfg.fasta, cfg.keep_case)):
            sc.input_length += len(rec.seq)
            lengths[rec.name] = len(rec.seq)
            if exclusions:
                exclusions.check_record(rec.name, len(rec.seq), rec.path)
            if not selector.keep(rec.name):
                n = count_acgt(rec.seq)
                sc.input_acgt_bases += n
                sc.excluded_record_bases += n
                sc.excluded_records.append(rec.name)
                bar.update(len(rec.seq))
                continue
            segs = _segments(cfg, rec.name, rec.seq, val_names)
            seg_bases = int((segs.ends - segs.starts).sum())
            sc.input_acgt_bases += seg_bases + segs.dropped_bases
            sc.short_leftover_bases += segs.dropped_bases
            sc.short_leftover_pieces += segs.dropped_pieces
            entry = {"name": rec.name, "file": rec.path, "length": len(rec.seq),
                     "acgt_bases": seg_bases + segs.dropped_bases}
            if exclusions:
                drop = np.flatnonzero(exclusions.drop(rec.name, rec.seq, segs.starts, segs.ends))
                gone = int((segs.ends[drop] - segs.starts[drop]).sum())
                sc.drops[rec.name] = drop
                sc.excluded_segments += len(drop)
                sc.excluded_segment_bases += gone
                segs = _without(segs, drop)
            seg_len = segs.ends - segs.starts
            for split, mask in (("train", ~segs.val), ("val", segs.val)):
                sc.counts[split] += int(mask.sum())
                sc.bases[split] += int(seg_len[mask].sum())
            entry.update({"segments": len(segs), "dropped_bases": segs.dropped_bases,
                          "split": "val" if rec.name in val_names else ("train+val" if cfg.val_fraction else "train")})
            if exclusions:
                entry.update({"excluded_segments": len(drop), "excluded_bases": gone})
            sc.records.append(entry)
            chosen = np.flatnonzero(~segs.val & (segs.tok_key < cfg.tokenizer_sample))
            if cfg.tokenizer_kind != "bpe":  # a fixed vocabulary: nothing to train on
                chosen = chosen[:0]
            for i in chosen.tolist():
                key = float(segs.tok_key[i])
                if sc.sample_bases >= cfg.tokenizer_max_bases and key >= -heap[0][0]:
                    continue  # not among the smallest keys: skip without slicing the sequence
                text = segment_text(rec.seq, int(segs.starts[i]), int(segs.ends[i]), bool(segs.reverse[i]))
                heapq.heappush(heap, (-key, rec_index, int(segs.starts[i]), text))
                sc.sample_bases += len(text)
                while sc.sample_bases - len(heap[0][3]) >= cfg.tokenizer_max_bases:
                    sc.sample_bases -= len(heapq.heappop(heap)[3])
            bar.update(len(rec.seq))
            del rec, segs
    if exclusions:
        exclusions.check_contigs(lengths)
    missing = sorted(set(cfg.val_records) - {r["name"] for r in sc.records})
    if missing:
        raise InputError(f"--val-records {' '.join(missing)}: no such record among the selected records of "
                         f"{', '.join(cfg.fasta)} (selected: {', '.join(r['name'] for r in sc.records[:20])}"
                         f"{' ...' if len(sc.records) > 20 else ''})")
    if not sc.records:
        raise InputError(f"{', '.join(cfg.fasta)}: no record selected (records={cfg.records}, include={cfg.include}, "
                         f"exclude={cfg.exclude}); check the record names with `grep '>' FILE`")
    if sc.counts["train"] == 0:
        raise InputError(f"{', '.join(cfg.fasta)}: no training segments (need A/C/G/T runs of >= {cfg.min_len} bp "
                         "outside the validation records); check the input or lower --min-len")
    if (cfg.val_fraction > 0 or cfg.val_records) and sc.counts["val"] == 0:
        raise InputError(f"{', '.join(cfg.fasta)}: the validation split is empty; raise --val-fraction or pass "
                         "--val-records")
    return sc


# ---------------------------------------------------------------------------------------------
# Pass 2: tokenize and shard (in worker processes)


class _Done:
    """A finished "future" for the in-process (workers=1) path."""

    def __init__(self, value: dict):
        self.value = value

    def done(self) -> bool:
        return True

    def result(self) -> dict:
        return self.value


_WORKER_TOKENIZER = None


def _init_worker(tokenizer_path: str, threads: bool) -> None:
    global _WORKER_TOKENIZER
    if not threads:
        # One process per core already; rayon threads inside each would oversubscribe the cores.
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
    _WORKER_TOKENIZER = load_raw_tokenizer(tokenizer_path)


def _shard_task(path: str, samples: list[ShardSample]) -> dict:
    encodings = _WORKER_TOKENIZER.encode_batch([s.seq for s in samples], add_special_tokens=False)
    ids = [np.asarray(e.ids, dtype=np.uint16) for e in encodings]
    return write_shard(path, samples, ids)


def _plan_shards(n: int, cfg: PreprocessConfig) -> int:
    """Number of shards for a split of n samples: <= samples_per_shard each, >= min_shards if possible."""
    if n == 0:
        return 0
    return max(math.ceil(n / cfg.samples_per_shard), min(cfg.min_shards, n))


def write_shards(cfg: PreprocessConfig, selector: RecordSelector, sc: Scan, out: Path, tokenizer_path: Path,
                 workers: int) -> dict[str, list[dict]]:
    """Pass 2. Sample i of a split (in genome order) goes to shard floor(i * n_shards / n): contiguous,
    balanced to within one sample, and independent of the number of workers."""
    n_shards = {s: _plan_shards(sc.counts[s], cfg) for s in SPLITS}
    for s in SPLITS:
        (out / s).mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[int, dict]] = {s: {} for s in SPLITS}
    buffers: dict[str, list[ShardSample]] = {s: [] for s in SPLITS}
    seen = {s: 0 for s in SPLITS}
    current = {s: 0 for s in SPLITS}
    val_names = set(cfg.val_records)
    pending: collections.deque = collections.deque()

    if workers > 1:
        from concurrent.futures import ProcessPoolExecutor

        ctx = multiprocessing.get_context("spawn")  # no fork of a process holding rayon/htslib threads
        pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                                   initargs=(str(tokenizer_path), False))
    else:
        pool = None
        _init_worker(str(tokenizer_path), True)

    bar = _bar(cfg, "tokenize+shard", sc.bases["train"] + sc.bases["val"])

    def collect(block: bool) -> None:
        # Bounded in-flight work keeps memory flat: at most 2 shards per worker are queued.
        while pending and (block or len(pending) >= 2 * workers or pending[0][2].done()):
            split, index, fut = pending.popleft()
            res = fut.result()
            results[split][index] = res
            bar.update(res["bases"])

    def flush(split: str) -> None:
        index = current[split]
        path = str(out / split / shard_name(index))
        samples = buffers[split]
        buffers[split] = []
        if pool is None:
            pending.append((split, index, _Done(_shard_task(path, samples))))
        else:
            pending.append((split, index, pool.submit(_shard_task, path, samples)))
        collect(block=False)

    try:
        for rec in iter_records(cfg.fasta, cfg.keep_case):
            if not selector.keep(rec.name):
                continue
            segs = _without(_segments(cfg, rec.name, rec.seq, val_names), sc.drops.get(rec.name))
            starts, ends, rev, val = segs.starts.tolist(), segs.ends.tolist(), segs.reverse.tolist(), segs.val.tolist()
            for start, end, r, v in zip(starts, ends, rev, val):
                split = "val" if v else "train"
                target = seen[split] * n_shards[split] // sc.counts[split]
                if target != current[split]:
                    flush(split)
                    current[split] = target
                buffers[split].append(ShardSample(rec.name, start, end, "-" if r else "+",
                                                  segment_text(rec.seq, start, end, r)))
                seen[split] += 1
            del rec, segs
        for split in SPLITS:
            if buffers[split]:
                flush(split)
        collect(block=True)
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    for split in SPLITS:  # pass 2 must reproduce pass 1 exactly
        if seen[split] != sc.counts[split] or len(results[split]) != n_shards[split]:
            raise InputError(f"{', '.join(cfg.fasta)}: the input changed while it was being read ({split}: "
                             f"{sc.counts[split]} segments in pass 1, {seen[split]} in pass 2); "
                             "do not modify the FASTA files during preprocessing, then re-run")
    return {s: [results[s][i] for i in range(n_shards[s])] for s in SPLITS}


# ---------------------------------------------------------------------------------------------
# The stage


def resolve(cfg: PreprocessConfig) -> PreprocessConfig:
    """The config as run: worker count resolved, input paths absolute."""
    workers = cfg.workers or os.cpu_count() or 1
    return dataclasses.replace(cfg, workers=workers, fasta=[str(Path(p).resolve()) for p in cfg.fasta],
                               tokenizer=str(Path(cfg.tokenizer).resolve()) if cfg.tokenizer else "",
                               exclude_from=[_absolute(p) for p in cfg.exclude_from])


def _absolute(spec: str) -> str:
    """An --exclude-from path made absolute (a kmers:/regions: prefix kept; a task name, not a path, as it is)."""
    prefix = next((p for p in ("kmers:", "regions:") if spec.startswith(p) and not Path(spec).exists()), "")
    path = Path(spec[len(prefix):])
    return prefix + str(path.resolve()) if path.exists() else spec


def load_exclusions(cfg: PreprocessConfig, tasks: Mapping[str, TaskSequences] | None = None) -> Exclusions | None:
    """The --exclude-from sources, read and checked before anything is written: against the FASTAs' .fai
    indexes when they all have one (a BED contig the genome lacks fails in seconds, not after the scan)."""
    if not cfg.exclude_from:
        return None
    ex = Exclusions(cfg.exclude_from, cfg.exclude_k, tasks)
    fai = fai_records(cfg.fasta)
    if fai is not None:
        for name, (length, path) in fai.items():
            ex.check_record(name, length, path)
        ex.check_contigs({n: length for n, (length, _) in fai.items()})
    return ex


def run_preprocess(cfg: PreprocessConfig, tasks: Mapping[str, TaskSequences] | None = None) -> dict[str, Any]:
    """Run the stage; returns the manifest (also written to OUT/manifest.json). `tasks`: --exclude-from entries
    that name a task, resolved above prep (the app layer) into their sequences."""
    cfg = resolve(cfg)
    selector = RecordSelector(cfg.records, cfg.include, cfg.exclude)
    exclusions = load_exclusions(cfg, tasks)
    t0 = time.perf_counter()
    with atomic_output_dir(cfg.out, cfg.overwrite) as tmp:
        sc = scan(cfg, selector, exclusions)
        t_scan = time.perf_counter()

        # Sample in genome order (record, start) so training sees the same input order every run.
        sample = sorted(sc.sample, key=lambda e: (e[1], e[2]))
        texts = [e[3] for e in sample]
        sc.sample = []
        alphabet = "ACGTacgt" if cfg.keep_case else "ACGT"
        if cfg.tokenizer:  # the shards of another genome, or of a model to continue: the same ids
            tok = load_existing(cfg.tokenizer)
            missing = [c for c in alphabet if tok.token_to_id(c) is None]
            if missing:
                raise InputError(f"--tokenizer {cfg.tokenizer}: has no token for {missing} "
                                 f"({'drop --keep-case' if cfg.keep_case else 'not a DNA tokenizer'})")
        elif cfg.tokenizer_kind == "bpe":
            tok = train_tokenizer(texts, cfg.vocab_size, cfg.min_frequency, alphabet=alphabet, length=len(texts),
                                  show_progress=cfg.progress)
        else:
            tok = build_kmer_tokenizer(cfg.kind_k, alphabet)
        kind, k = tokenizer_kind(tok)
        tok_dir = save_tokenizer(tok, tmp / TOKENIZER_DIR, cfg.model_max_length)
        sample_segments, sample_bases = len(texts), sum(map(len, texts))
        del texts, sample
        t_tok = time.perf_counter()

        shards = write_shards(cfg, selector, sc, tmp, tok_dir / TOKENIZER_FILE, cfg.workers)
        t_shard = time.perf_counter()

        splits = {s: split_summary(shards[s]) for s in SPLITS}
        manifest = {
            "format": FORMAT_VERSION,
            "created_by": f"tinydnabert {__version__}",
            "inputs": [{"path": p, "sha256": sha256_file(p), "bytes": Path(p).stat().st_size} for p in cfg.fasta],
            "config": config_to_dict(cfg),
            "tokenizer": {
                "sha256": tokenizer_fingerprint(tok_dir),
                "kind": kind,
                "k": k,
                "vocab_size": tok.get_vocab_size(),
                "special_tokens": {t: i for i, t in enumerate(SPECIAL_TOKENS)},
                "trained_on": ({"reused": str(Path(cfg.tokenizer).resolve())} if cfg.tokenizer
                               else {"segments": sample_segments, "bases": sample_bases} if kind == "bpe"
                               else {"fixed_vocabulary": f"every {k}-mer of {alphabet} + the single bases"}),
            },
            "input_length": sc.input_length,
            "input_acgt_bases": sc.input_acgt_bases,
            "dropped": {
                "short_leftover_bases": sc.short_leftover_bases,
                "short_leftover_pieces": sc.short_leftover_pieces,
                "excluded_record_bases": sc.excluded_record_bases,
                "excluded_segment_bases": sc.excluded_segment_bases,
                "excluded_segments": sc.excluded_segments,
            },
            "records": sc.records,
            "excluded_records": sc.excluded_records,
            "splits": splits,
        }
        if exclusions:
            manifest["exclusions"] = exclusions.summary(sc.excluded_segments, sc.excluded_segment_bases)
        kept = splits["train"]["bases"] + splits["val"]["bases"]
        assert (kept + sc.short_leftover_bases + sc.excluded_record_bases + sc.excluded_segment_bases
                == sc.input_acgt_bases)
        atomic_write_json(tmp / "config.json", config_to_dict(cfg))
        atomic_write_json(tmp / MANIFEST, manifest)
    print0(f"preprocess: scan {t_scan - t0:.1f} s, tokenizer {t_tok - t_scan:.1f} s, "
           f"tokenize+shard {t_shard - t_tok:.1f} s")
    return manifest


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_dataclass_args(parser, PreprocessConfig)


def main(args: argparse.Namespace, tasks: Mapping[str, TaskSequences] | None = None) -> int:
    cfg = dataclass_from_args(PreprocessConfig, args)
    m = run_preprocess(cfg, tasks)
    for split in SPLITS:
        s = m["splits"][split]
        print0(f"{split:5s}: {s['samples']:,} samples, {s['bases']:,} bp, {s['tokens']:,} tokens "
               f"({s['bp_per_token']} bp/token) in {len(s['shards'])} shards")
    d = m["dropped"]
    print0(f"input: {m['input_acgt_bases']:,} A/C/G/T bp; dropped {d['short_leftover_bases']:,} bp in short "
           f"leftovers, {d['excluded_record_bases']:,} bp in {len(m['excluded_records'])} excluded records")
    for src in m.get("exclusions", {}).get("sources", []):
        n_absent = src.get("rows_on_absent_contigs")
        absent = f", {n_absent:,} rows on contigs not in the FASTA" if n_absent is not None else ""
        print0(f"excluded ({src['kind']}) {src['path']}: {src['excluded_segments']:,} segments, "
               f"{src['excluded_bases']:,} bp{absent}")
    kind = m["tokenizer"]["kind"] + (f" k={m['tokenizer']['k']}" if m["tokenizer"]["kind"] == "kmer" else "")
    print0(f"wrote {cfg.out} ({kind} tokenizer sha256 {m['tokenizer']['sha256'][:12]}, "
           f"vocab {m['tokenizer']['vocab_size']})")
    return 0

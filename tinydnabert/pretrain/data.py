"""Pretraining input: stream WebDataset shards, pack segments into full rows, mask for MLM.

How a batch is made (all of it in DataLoader worker processes, numpy on whole groups of shards):

    DIR/train/shard-*.tar --(rank r of R, worker w of W: its own shards)--> samples (ids.u16)
      -> shuffle the samples of a group of shards -> "<s> ids </s>" for each -> concatenate
      -> cut into rows of seq_len tokens (no padding: every position is a real token)
      -> mask 15% of the non-special tokens (80% <mask>, 10% random token, 10% unchanged)
      -> micro-batches {input_ids, labels, attention_mask}, each [micro_batch, seq_len] int64

Packing: a 256-1024 bp segment is ~60-235 tokens at ~4.38 bp/token, so a 512-token row holds
2-8 segments, while the reference recipe's "one segment per row, padded to 512" spends 71% of its
compute on padding (chr20, benchmarks/data_pipeline.py). Attention crosses segment boundaries inside
a row (RoBERTa's FULL-SENTENCES packing); the <s> ... </s> around every segment mark where one ends.

The stream is one global sequence of rows, independent of the world size ("elastic determinism"):
  * epoch e: shard order = permutation(seed, e), cut into groups of `mix_shards`; the epochs' groups follow
    each other (global group g). Preprocessing writes shards in genome order, so one shard is one region
    (4096 samples x ~640 bp = ~2.6 Mbp), and mixing 4 puts 4 regions into every group;
  * sample order in a group = permutation(seed, e, group), the mask drawn from the same generator, the
    partial last row dropped: a group's rows and masks are the same whenever it is read, and their number,
    floor((tokens + 2 * samples) / seq_len), is known from the manifest without reading it;
  * `lanes` (4) row streams: lane l is global groups l, l + lanes, l + 2 lanes, ... end to end, and global
    row q is row q // lanes of lane q mod lanes. Optimizer step k is rows [k B, (k + 1) B), B = the global
    batch; its B rows form B / micro slots (slot s: rows k B + s + i B / micro), and rank r's micro-step m is
    slot m * R + r (Layout). Which rows make up step k, and how they group into micro-batches, never
    depend on the world size; only which rank computes which slot does;
  * a rank reads only the lanes its slots draw from (zero1.json on 1 GPU: slot m = lane m), and its DataLoader
    worker w makes the rank's micro-batches j with j mod W == w (torch takes batches from workers round-robin).
Hence the data position is the optimizer step: a rank at step k is at micro-batch k x gas, on any world size
with the same global batch, and resuming skips whole groups (manifest counts, unread) in each lane.
The train stream is infinite (lane after lane of groups), so every rank always has a next batch and all
ranks run the same number of steps (uneven ranks would hang DDP); the trainer decides how many.

Validation is a fixed set: the val shards in name order, unshuffled, masked with a fixed seed;
rank r takes its own contiguous block of rows, every rank the same number of batches.
"""

from __future__ import annotations

import dataclasses
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from tinydnabert import formats
from tinydnabert.console import print0
from tinydnabert.errors import InputError
from tinydnabert.formats import BOS_ID, EOS_ID, IGNORE_INDEX, MASK_ID, NUM_SPECIAL
from tinydnabert.prep.shards import read_shard
from tinydnabert.pretrain import sources
from tinydnabert.pretrain.sources import Source

# Tags that keep the random streams apart: the shard order of an epoch, a train shard's sample
# order + mask, a val shard's mask, a mixture block's order of sources.
_TAG_ORDER, _TAG_TRAIN, _TAG_VAL, _TAG_MIX = 0, 1, 2, 3
STATE_VERSION = 2  # 2: the global row stream (elastic); 1 was per rank


@dataclass
class DataConfig:
    seq_len: int = field(default=512, metadata={
        "help": "tokens per packed row; at most the model's max_position_embeddings - 2 (514 - 2)"})
    mlm_probability: float = field(default=0.15, metadata={
        "help": "fraction of non-special tokens chosen for the MLM loss"})
    mask_replace_prob: float = field(default=0.8, metadata={
        "help": "of the chosen tokens, the fraction replaced by <mask>"})
    random_replace_prob: float = field(default=0.1, metadata={
        "help": "of the chosen tokens, the fraction replaced by a random non-special token "
                "(the rest, 1 - mask - random, keep their token)"})
    num_workers: int = field(default=4, metadata={
        "help": "DataLoader worker processes per rank (0 = in the training process); worker w makes the "
                "rank's micro-batches j with j mod workers = w, reading the lanes of their rows. Not part of "
                "the stream: resume may change it. A worker makes ~3.5M tokens per CPU-second, so 4 feed an H100 "
                "(~3.3M tokens/s at 45 percent MFU) with room to spare"})
    lanes: int = field(default=4, metadata={
        "help": "row streams the global batch is dealt from: global row q is row q // lanes of lane q mod lanes, and "
                "lane l reads shard groups l, l + lanes, ... So a step's rows come from `lanes` groups, and a "
                "rank reads only the lanes of its own rows (4 = one lane per micro-batch of a 128-row step at "
                "micro 32). Part of the stream: resume needs the same value"})
    mix_shards: int = field(default=4, metadata={
        "help": "shards a worker reads together, shuffling their samples across them (shards are "
                "contiguous genome regions; more = more diverse batches, more worker memory)"})
    seed: int = field(default=0, metadata={
        "help": "seed of the shard order, the sample order in a shard and the masks"})
    shuffle: bool = field(default=True, metadata={
        "help": "shuffle the shard order every epoch and the samples within each group of shards"})
    masked_per_row: int = field(default=0, metadata={
        "help": "at most this many tokens of a row are chosen for the loss, and the LM head runs on exactly "
                "this many positions per row (a fixed-size selection: no host-device sync, GPU). 0 = off. "
                "128 for 512-token rows: 6.5 sd above the mean of ~76 chosen (0.15 x ~505 non-special "
                "tokens), so the cap changes ~1e-10 of rows"})
    val_batches: int = field(default=0, metadata={
        "help": "validation micro-batches per rank (0 = all full batches of DIR/val); "
                "the same rows and masks at every evaluation"})
    verify_shards: bool = field(default=True, metadata={
        "help": "check every shard's sha256 against the manifest as a worker reads it (a few percent of a "
                "worker's CPU, BENCHMARKS.md); sizes, sample/token counts and token ids are checked either way"})

    def __post_init__(self) -> None:
        if self.seq_len < 8:
            raise InputError(f"--seq-len {self.seq_len}: must be at least 8 (the reference uses 512)")
        if not 0.0 < self.mlm_probability < 1.0:
            raise InputError(f"--mlm-probability {self.mlm_probability}: must be in (0, 1), e.g. 0.15")
        for name in ("mask_replace_prob", "random_replace_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise InputError(f"--{name.replace('_', '-')} {getattr(self, name)}: must be in [0, 1]")
        if self.mask_replace_prob + self.random_replace_prob > 1.0 + 1e-9:
            raise InputError(f"--mask-replace-prob {self.mask_replace_prob} + --random-replace-prob "
                             f"{self.random_replace_prob} exceed 1; the reference uses 0.8 + 0.1")
        if self.num_workers < 0:
            raise InputError(f"--num-workers {self.num_workers}: must be >= 0")
        if self.lanes < 1:
            raise InputError(f"--lanes {self.lanes}: must be >= 1")
        if self.mix_shards < 1:
            raise InputError(f"--mix-shards {self.mix_shards}: must be >= 1")
        if not 0 <= self.masked_per_row <= self.seq_len:
            raise InputError(f"--masked-per-row {self.masked_per_row}: must be in [0, --seq-len {self.seq_len}] "
                             "(0 = off; 128 for 512-token rows)")
        if self.val_batches < 0:
            raise InputError(f"--val-batches {self.val_batches}: must be >= 0 (0 = all)")


# --------------------------------------------------------------------------- shards and manifest

def check_tokenizer(data_dir: str | Path, tokenizer_dir: str | Path | None = None) -> str:
    """Refuse shards made with another tokenizer: the manifest's fingerprint must be that of
    `tokenizer_dir` (default DIR/tokenizer). Returns the fingerprint."""
    manifest = formats.load_manifest(data_dir)
    tokenizer_dir = Path(data_dir) / formats.TOKENIZER_DIR if tokenizer_dir is None else Path(tokenizer_dir)
    expected = (manifest.get("tokenizer") or {}).get("sha256")
    if not expected:
        raise InputError(f"{Path(data_dir) / formats.MANIFEST}: no tokenizer.sha256; "
                         f"re-run `tinydnabert preprocess`")
    actual = formats.tokenizer_fingerprint(tokenizer_dir)
    if actual != expected:
        raise InputError(
            f"{tokenizer_dir / formats.TOKENIZER_FILE}: tokenizer sha256 {actual[:12]}... differs from "
            f"{expected[:12]}... that the shards in {data_dir} were made with; token ids would mean "
            f"different things. Use {Path(data_dir) / formats.TOKENIZER_DIR} or re-run preprocess "
            f"with this tokenizer")
    return actual


@dataclass(frozen=True)
class ShardInfo:
    path: str   # a file, or a URL (sources.py) when the shards directory is remote
    index: int  # position in the manifest's shard list: the shard's id in every seed
    samples: int
    tokens: int  # ids without specials
    bytes: int | None = None   # None: a manifest from before shards carried their size and sha256
    sha256: str | None = None
    name: str = ""  # its file name in the split's directory


@dataclass(frozen=True)
class _Split:
    """What a reader of one split needs, resolved in the main process (picklable for workers)."""
    shards: tuple[ShardInfo, ...]
    vocab_size: int
    tokenizer_sha256: str
    samples_per_shard: int | None
    verify: bool = True  # check each shard's sha256 as it is read (DataConfig.verify_shards)
    remote: bool = False  # shards are fetched (sources.fetch_shard), not opened
    cache: str | None = None  # remote with --cache-dir: SPLIT/NAME of every verified shard is kept under it
    split: str = "train"


def _load_split(source: Source | str | Path, split: str, verify: bool = True) -> _Split:
    """One split of a shards directory (local or remote), checked against its manifest: every listed shard
    present (local: on disk, the right size; remote: checked as it is fetched), nothing unlisted."""
    source = source if isinstance(source, Source) else sources.resolve(source)[0]
    data_dir = source.local
    manifest = formats.load_manifest(data_dir)
    mpath = source.location(formats.MANIFEST)
    try:
        entries = manifest["splits"][split]["shards"]
        vocab_size = int(manifest["tokenizer"]["vocab_size"])
        sha = manifest["tokenizer"]["sha256"]
    except (KeyError, TypeError) as e:
        raise InputError(f"{mpath}: missing {e} (splits.{split}.shards / tokenizer); re-run preprocess") from e
    if not entries:  # e.g. preprocessed with --val-fraction 0 and no --val-records
        raise InputError(f"{mpath}: the {split} split has no shards; re-run `tinydnabert preprocess`"
                         + (" with --val-fraction > 0 or --val-records" if split == "val" else ""))
    listed = [e.get("name") for e in entries]
    if source.remote:  # no listing over HTTP: the manifest is the list; size and sha256 are checked on read
        where = {n: source.location(f"{split}/{n}") for n in listed}
    else:
        on_disk = {p.name: p for p in formats.shard_paths(data_dir, split)}  # InputError if none
        missing = [n for n in listed if n not in on_disk]
        if missing:
            raise InputError(f"{Path(data_dir) / split / missing[0]}: listed in {mpath} but missing "
                             f"({len(missing)} missing); re-run `tinydnabert preprocess`")
        extra = sorted(set(on_disk) - set(listed))
        if extra:
            raise InputError(f"{on_disk[extra[0]]}: not listed in {mpath} ({len(extra)} such); the shards "
                             f"directory was changed after preprocessing; re-run `tinydnabert preprocess`")
        where = {n: str(path) for n, path in on_disk.items()}
    shards = []
    for i, e in enumerate(entries):
        try:
            shards.append(ShardInfo(where[e["name"]], i, int(e["samples"]), int(e["tokens"]),
                                    int(e["bytes"]) if "bytes" in e else None, e.get("sha256"), e["name"]))
        except (KeyError, TypeError, ValueError) as err:
            raise InputError(f"{mpath}: splits.{split}.shards[{i}] lacks name/samples/tokens ({err}); "
                             f"re-run preprocess") from err
        if source.remote:
            continue
        size = os.path.getsize(shards[-1].path)
        if size == 0 or size % 512:  # a tar file is whole 512-byte blocks: this one was cut short
            raise InputError(f"{shards[-1].path}: truncated shard ({size} bytes, not whole 512-byte tar "
                             f"blocks); re-run `tinydnabert preprocess`")
        if shards[-1].bytes is not None and size != shards[-1].bytes:
            raise InputError(f"{shards[-1].path}: truncated or replaced shard ({size:,} bytes, the manifest says "
                             f"{shards[-1].bytes:,}); re-run `tinydnabert preprocess`")
    if (verify or source.cache) and any(s.sha256 is None for s in shards):
        print0(f"note: {mpath} records no sha256 for {sum(s.sha256 is None for s in shards)} {split} shards (made "
               f"by an older tinydnabert), so those are read unverified (and never kept in --cache-dir); re-run "
               f"`tinydnabert preprocess` to add them")
    sps = (manifest.get("config") or {}).get("samples_per_shard")
    return _Split(tuple(shards), vocab_size, sha, sps, verify, source.remote,
                  None if source.cache is None else str(source.cache), split)


def _read_checked(split: _Split, shard: ShardInfo) -> list[np.ndarray]:
    """The shard's samples, checked against the manifest: its sha256 and size (read_shard), then its
    counts (the row counts that resume relies on come from the manifest, so a shard that disagrees with
    it must not be used), then every token id. A flipped high bit gives an id past the vocabulary, which
    the embedding would reject as a bare `IndexError: index out of range in self` naming no shard."""
    vocab_size, sha256, raw = split.vocab_size, shard.sha256 if split.verify else None, None
    if split.remote:
        cache = None if split.cache is None else Path(split.cache) / split.split / shard.name
        raw, checked = sources.fetch_shard(shard.path, cache, shard.bytes, shard.sha256)
        sha256 = None if checked else sha256
    samples = read_shard(shard.path, meta=False, sha256=sha256, size=shard.bytes, raw=raw)
    ids = [s.ids for s in samples]
    tokens = sum(len(a) for a in ids)
    if len(ids) != shard.samples or tokens != shard.tokens:
        raise InputError(f"{shard.path}: holds {len(ids)} samples / {tokens} tokens but the manifest says "
                         f"{shard.samples} / {shard.tokens}; the shard is truncated or stale, re-run "
                         f"`tinydnabert preprocess`")
    # One pass over the concatenated ids (~1 ms for a 600k-token shard); per-sample only to name the bad one.
    flat = np.concatenate(ids) if ids else np.empty(0, np.uint16)
    if flat.size and (int(flat.min()) < NUM_SPECIAL or int(flat.max()) >= vocab_size):
        for s in samples:
            bad = s.ids[(s.ids < NUM_SPECIAL) | (s.ids >= vocab_size)]
            if bad.size:
                raise InputError(f"{shard.path}: sample {s.key!r} holds token id {int(bad[0])}, outside the "
                                 f"vocabulary's content ids {NUM_SPECIAL}..{vocab_size - 1}: the shard is corrupt "
                                 f"or was made with another tokenizer; re-run `tinydnabert preprocess`")
    return ids


# --------------------------------------------------------------------------- packing and masking

def rows_in_shard(samples: int, tokens: int, seq_len: int) -> int:
    """Full rows a shard (or group of shards) packs into: each sample adds <s> and </s>; the partial
    last row is dropped.

    Dropping it loses < seq_len tokens per group (~0.01% of 4 shards x 4096 samples x ~150 tokens)
    and buys exact resume without reading: a row never spans two groups, so every group's row count
    is known from the manifest.
    """
    return (tokens + 2 * samples) // seq_len


def pack_rows(samples: list[np.ndarray], seq_len: int) -> np.ndarray:
    """Concatenate "<s> ids </s>" for every sample and cut into full rows: [rows, seq_len] int32.

    int32 (not int64) inside the pipeline halves the bytes workers move; the loader hands int64 out.
    """
    if not samples:
        return np.empty((0, seq_len), dtype=np.int32)
    lens = np.fromiter((len(a) for a in samples), dtype=np.int64, count=len(samples))
    starts = np.cumsum(lens + 2) - (lens + 2)  # position of each sample's <s>
    total = int(lens.sum() + 2 * len(samples))
    n_rows = total // seq_len
    flat = np.empty(total, dtype=np.int32)
    content = np.ones(total, dtype=bool)
    content[starts] = False
    content[starts + lens + 1] = False
    flat[content] = np.concatenate(samples)
    flat[starts] = BOS_ID
    flat[starts + lens + 1] = EOS_ID
    return flat[: n_rows * seq_len].reshape(n_rows, seq_len)


def mask_tokens(rows: np.ndarray, rng: np.random.Generator, vocab_size: int, cfg: DataConfig
                ) -> tuple[np.ndarray, np.ndarray]:
    """BERT masking, vectorized over a whole [rows, seq_len] array: (input_ids, labels), rows' dtype.

    One uniform draw u per token decides everything: u < p chooses the token for the loss, and
    within that, u < 0.8p -> <mask>, 0.8p <= u < 0.9p -> random non-special token, else unchanged.
    Special tokens (<s>, </s>, <unk>, ...) are never chosen. With cfg.masked_per_row = N > 0 a row keeps
    only its first N chosen tokens, so the objective's fixed N-position selection sees every one of them.
    """
    p = cfg.mlm_probability
    u = rng.random(rows.shape, dtype=np.float32)
    chosen = (u < p) & (rows >= NUM_SPECIAL)
    if cfg.masked_per_row:
        chosen &= np.cumsum(chosen, axis=1) <= cfg.masked_per_row
    labels = np.where(chosen, rows, IGNORE_INDEX)
    input_ids = rows.copy()
    to_mask = chosen & (u < p * cfg.mask_replace_prob)
    to_random = chosen & ~to_mask & (u < p * (cfg.mask_replace_prob + cfg.random_replace_prob))
    input_ids[to_mask] = MASK_ID
    input_ids[to_random] = rng.integers(NUM_SPECIAL, vocab_size, size=int(to_random.sum()), dtype=rows.dtype)
    return input_ids, labels


def shard_order(n_shards: int, seed: int, epoch: int, shuffle: bool) -> np.ndarray:
    """Order in which the train shards are dealt to readers in an epoch."""
    if not shuffle:
        return np.arange(n_shards)
    return np.random.default_rng([seed, _TAG_ORDER, epoch]).permutation(n_shards)


def _group_rows(split: _Split, group: list[int], seq_len: int) -> int:
    return rows_in_shard(sum(split.shards[i].samples for i in group),
                         sum(split.shards[i].tokens for i in group), seq_len)


def _train_group_rows(split: _Split, group: list[int], epoch: int, cfg: DataConfig
                      ) -> tuple[np.ndarray, np.ndarray]:
    """A group of train shards' masked rows in epoch `epoch`: the same arrays whenever it is read."""
    ids = [a for i in group for a in _read_checked(split, split.shards[i])]
    rng = np.random.default_rng([cfg.seed, _TAG_TRAIN, epoch, *group])
    if cfg.shuffle:
        ids = [ids[i] for i in rng.permutation(len(ids))]
    return mask_tokens(pack_rows(ids, cfg.seq_len), rng, split.vocab_size, cfg)


def _val_shard_rows(split: _Split, shard: ShardInfo, cfg: DataConfig) -> tuple[np.ndarray, np.ndarray]:
    ids = _read_checked(split, shard)
    rng = np.random.default_rng([cfg.seed, _TAG_VAL, shard.index])
    return mask_tokens(pack_rows(ids, cfg.seq_len), rng, split.vocab_size, cfg)


def _batch(input_ids: np.ndarray, labels: np.ndarray, source: np.ndarray | None = None) -> dict[str, torch.Tensor]:
    """What a worker sends: int32, 2 x 256 KiB for 128 x 512 (int64 + attention_mask would be 3x); for a
    mixture also each row's source (its index in --data), for --log-rows."""
    out = {"input_ids": torch.from_numpy(np.ascontiguousarray(input_ids)),
           "labels": torch.from_numpy(np.ascontiguousarray(labels))}
    if source is not None:
        out["source"] = torch.from_numpy(source.astype(np.int64))
    return out


def _finish(batch: Any, pin_memory: bool) -> dict[str, torch.Tensor]:
    """In the training process: int64 as the model's embedding and loss expect, and the attention
    mask, all ones because rows are packed (every position is a real token)."""
    if isinstance(batch, _Failure):
        raise InputError(batch.message)
    out = {"input_ids": batch["input_ids"].long(), "labels": batch["labels"].long()}
    out["attention_mask"] = torch.ones_like(out["input_ids"])
    if pin_memory:  # page-locked, so .to("cuda", non_blocking=True) overlaps the copy
        out = {k: v.pin_memory() for k, v in out.items()}
    if "source" in batch:  # stays on the host
        out["source"] = batch["source"]
    return out


class _Failure:
    """An InputError raised in a DataLoader worker, sent to the main process as a batch so that it
    is re-raised there with its own message (torch would wrap it in a worker traceback)."""

    def __init__(self, message: str) -> None:
        self.message = message


def _forward_errors(batches: Iterator[Any]) -> Iterator[Any]:
    """Pass batches on; in a DataLoader worker, turn an InputError into a _Failure batch."""
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except InputError as e:
            if get_worker_info() is None:
                raise
            yield _Failure(str(e))
            return
        yield batch  # outside the try: closing the generator here must not run the except clause


def _worker() -> tuple[int, int]:
    info = get_worker_info()
    return (0, 1) if info is None else (info.id, info.num_workers)


class _Batcher:
    """Cuts a stream of row blocks into micro-batches of exactly `size` rows."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.ids: list[np.ndarray] = []
        self.labels: list[np.ndarray] = []
        self.n = 0

    def add(self, ids: np.ndarray, labels: np.ndarray) -> Iterator[dict[str, torch.Tensor]]:
        self.ids.append(ids)
        self.labels.append(labels)
        self.n += len(ids)
        if self.n < self.size:
            return
        all_ids, all_labels = np.concatenate(self.ids), np.concatenate(self.labels)
        full = self.n // self.size * self.size
        for i in range(0, full, self.size):
            yield _batch(all_ids[i:i + self.size], all_labels[i:i + self.size])
        self.ids, self.labels, self.n = [all_ids[full:]], [all_labels[full:]], self.n - full


# --------------------------------------------------------------------------- train

def group_of(n_shards: int, g: int, cfg: DataConfig) -> tuple[int, list[int]]:
    """(epoch, shard indices) of global group g: the groups of an epoch are its shard order cut into
    runs of `mix_shards`, and the epochs follow each other (group g is epoch g // groups_per_epoch)."""
    per_epoch = -(-n_shards // cfg.mix_shards)
    epoch, i = divmod(g, per_epoch)
    order = shard_order(n_shards, cfg.seed, epoch, cfg.shuffle)
    return epoch, [int(x) for x in order[i * cfg.mix_shards:(i + 1) * cfg.mix_shards]]


def lane_groups(n_shards: int, lane: int, cfg: DataConfig) -> Iterator[tuple[int, list[int]]]:
    """The groups of one lane, in order: global groups lane, lane + lanes, lane + 2 lanes, ..."""
    g = lane
    while True:
        yield group_of(n_shards, g, cfg)
        g += cfg.lanes


class _Lane:
    """One lane of the global row stream, read forward: its groups' rows end to end, lane position t = the
    t-th row. Groups wholly before the first position asked for are skipped unread (manifest row counts);
    the group after the one being served is read in the background (`pool`), as a group of 4 shards takes
    ~0.5 s of CPU: read in line, the worker would stall the trainer for that long."""

    def __init__(self, split: _Split, cfg: DataConfig, lane: int, first: int, pool: ThreadPoolExecutor) -> None:
        self.split, self.cfg, self.pool = split, cfg, pool
        self.groups = lane_groups(len(split.shards), lane, cfg)
        self.end = 0            # lane position after the last group taken from `groups`
        self.loaded: list[tuple[int, int, Any]] = []  # (start, end, future of (ids, labels)), in order
        empty = 0
        while True:  # skip to the group holding `first`
            epoch, group = next(self.groups)
            n = _group_rows(split, group, cfg.seq_len)
            if self.end + n > first:
                self._submit(epoch, group, n)
                break
            self.end += n
            empty = empty + 1 if n == 0 else 0
            if empty > len(split.shards):
                raise _too_small(split, cfg)

    def _submit(self, epoch: int, group: list[int], n: int) -> None:
        self.loaded.append((self.end, self.end + n, self.pool.submit(_train_group_rows, self.split, group,
                                                                     epoch, self.cfg)))
        self.end += n

    def _take_next(self) -> None:
        empty = 0
        while True:
            epoch, group = next(self.groups)
            n = _group_rows(self.split, group, self.cfg.seq_len)
            if n:
                return self._submit(epoch, group, n)
            empty += 1
            if empty > len(self.split.shards):
                raise _too_small(self.split, self.cfg)

    def rows(self, pos: np.ndarray, keep_from: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows at lane positions `pos` (increasing): (ids, labels). `keep_from`: no later call asks for a
        position before it (the slots of a step interleave, so positions only rise from step to step),
        so groups that end there are dropped."""
        while self.loaded[0][1] <= keep_from:
            self.loaded.pop(0)
            if not self.loaded:
                self._take_next()
        while self.loaded[-1][1] <= pos[-1]:
            self._take_next()
        if self.loaded[-1][0] <= pos[-1]:
            self._take_next()  # the group after the last one in use, read while this one is served
        ids, labels = [], []
        for start, end, fut in self.loaded:
            here = pos[(pos >= start) & (pos < end)]
            if len(here):
                a, b = fut.result()  # re-raises the reader's InputError here
                ids.append(a[here - start])
                labels.append(b[here - start])
        return np.concatenate(ids), np.concatenate(labels)


MIX_BLOCK = 128  # lane rows per mixture block: each holds the sources' weights x 128 rows, rounded


class Mixture:
    """Which source each row of a lane comes from, for `--data a=DIR:w_a --data b=DIR:w_b ...`.

    Lane positions are cut into blocks of MIX_BLOCK rows; every block holds the same number of rows of each
    source (weight x MIX_BLOCK, largest remainder), in an order drawn per (seed, lane, block). So how many rows
    of source s come before lane position t, and which row of s's own lane position t is, are a function of t
    alone: the mixture is as deterministic and as elastic as one source, and its shares are exact at the end
    of every block (within 1/MIX_BLOCK of the weights). Each source has its own lanes (its own shard groups)."""

    def __init__(self, weights: list[float], seed: int, names: list[str] | None = None) -> None:
        quota = np.asarray(weights, np.float64) / sum(weights) * MIX_BLOCK
        counts = np.floor(quota).astype(np.int64)
        for i in np.argsort(-(quota - counts), kind="stable")[:MIX_BLOCK - int(counts.sum())]:
            counts[i] += 1
        if (counts == 0).any():
            name = (names or [str(i) for i in range(len(counts))])[int(np.flatnonzero(counts == 0)[0])]
            raise InputError(f"--data {name}: weight {weights[int(np.flatnonzero(counts == 0)[0])]:g} rounds to no "
                             f"row in {MIX_BLOCK}; give it at least {1 / MIX_BLOCK:.4f} of the total")
        self.counts, self.seed = counts, seed
        self._base = np.repeat(np.arange(len(counts)), counts)
        self._blocks: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}

    @property
    def shares(self) -> np.ndarray:
        """The weights as realised: rows of each source per block / MIX_BLOCK."""
        return self.counts / MIX_BLOCK

    def _block(self, lane: int, b: int) -> tuple[np.ndarray, np.ndarray]:
        """(source of each position of block b, its rank among that source's positions in the block)."""
        if (lane, b) not in self._blocks:
            if len(self._blocks) > 64:  # positions only move forward: old blocks are not asked for again
                self._blocks.clear()
            src = np.random.default_rng([self.seed, _TAG_MIX, lane, b]).permutation(self._base)
            rank = np.empty(MIX_BLOCK, np.int64)
            for s in range(len(self.counts)):
                at = np.flatnonzero(src == s)
                rank[at] = np.arange(len(at))
            self._blocks[lane, b] = src, rank
        return self._blocks[lane, b]

    def assign(self, lane: int, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(source, position in that source's lane) of lane positions `pos`."""
        blocks, within = np.divmod(pos, MIX_BLOCK)
        src, spos = np.empty(len(pos), np.int64), np.empty(len(pos), np.int64)
        for b in np.unique(blocks):
            sel = blocks == b
            bs, br = self._block(lane, int(b))
            src[sel] = bs[within[sel]]
            spos[sel] = b * self.counts[src[sel]] + br[within[sel]]
        return src, spos

    def before(self, lane: int, t: int) -> np.ndarray:
        """Rows of each source at lane positions < t."""
        b, i = divmod(int(t), MIX_BLOCK)
        return b * self.counts + np.bincount(self._block(lane, b)[0][:i], minlength=len(self.counts))


class _MixedLane:
    """One lane of a mixture: each source's own lane (same lane number, its own groups), interleaved by the
    Mixture. Reads a source's lane only once one of its rows is asked for."""

    def __init__(self, splits: list[_Split], cfgs: list[DataConfig], mix: Mixture, lane: int,
                 pool: ThreadPoolExecutor) -> None:
        self.splits, self.cfgs, self.mix, self.lane, self.pool = splits, cfgs, mix, lane, pool
        self.subs: dict[int, _Lane] = {}

    def rows(self, pos: np.ndarray, keep_from: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        src, spos = self.mix.assign(self.lane, pos)
        keep = self.mix.before(self.lane, keep_from)  # = each source's first position at or after keep_from
        ids = np.empty((len(pos), self.cfgs[0].seq_len), np.int32)
        labels = np.empty_like(ids)
        for s in np.unique(src):
            s, sel = int(s), src == s
            if s not in self.subs:
                self.subs[s] = _Lane(self.splits[s], self.cfgs[s], self.lane, int(keep[s]), self.pool)
            ids[sel], labels[sel] = self.subs[s].rows(spos[sel], int(keep[s]))
        return ids, labels, src


def source_seed(seed: int, i: int) -> int:
    """The seed of source i's own stream (shard order, sample order, masks): the run's seed for the first
    source (a one-source run is the plain stream), a derived one for the others so no two share masks."""
    return seed if i == 0 else int(np.random.SeedSequence([seed, i]).generate_state(1)[0])


def _too_small(split: _Split, cfg: DataConfig) -> InputError:
    return InputError(f"{split.shards[0].path.rsplit('/', 1)[0]}: the shards of a lane hold less than one "
                      f"{cfg.seq_len}-token row; re-run preprocess with a larger --samples-per-shard, use a smaller "
                      f"--seq-len or fewer --lanes")


@dataclass(frozen=True)
class Layout:
    """Who takes which rows of the global row stream: row q (counted over the whole run) is row q // lanes of
    lane q % lanes; optimizer step k is rows [k B, (k + 1) B) (B = global batch), whatever the world size.
    The step's B rows form N = B / micro slots: slot s holds rows k B + s + i N, i < micro (the same rows for
    any world size with this micro batch); rank r's micro-step m is slot m * world + r. So the rows of a step,
    and how they are grouped into micro-batches, are a function of the step alone; only which rank computes
    which slot depends on the world size."""

    global_batch: int
    micro: int
    world_size: int
    rank: int
    lanes: int

    @property
    def gas(self) -> int:
        return self.global_batch // (self.micro * self.world_size)

    @property
    def slots(self) -> int:
        return self.global_batch // self.micro

    def slot(self, m: int) -> int:
        """The slot of this rank's micro-step m: m x world + rank, so with lanes a multiple of the world size
        (4 lanes on 1, 2 or 4 ranks) each rank draws from its own lanes and no two ranks read the same group."""
        return m * self.world_size + self.rank

    def micro_batch(self, j: int) -> tuple[int, int]:
        """(step, slot) of this rank's j-th micro-batch."""
        k, m = divmod(j, self.gas)
        return k, self.slot(m)

    def rows(self, j: int) -> np.ndarray:
        """Global row numbers of this rank's j-th micro-batch: [micro]."""
        k, s = self.micro_batch(j)
        return k * self.global_batch + s + self.slots * np.arange(self.micro, dtype=np.int64)

    def rank_lanes(self) -> list[int]:
        """The lanes this rank's slots draw from (the pattern repeats every `lanes` steps)."""
        return sorted({int(q) % self.lanes for k in range(self.lanes) for m in range(self.gas)
                       for q in self.rows(k * self.gas + m)})


class _TrainStream(IterableDataset):
    """One rank's infinite stream of micro-batches, starting at micro-batch `start_batch`; `splits` / `cfgs`:
    one per source, `mix` the Mixture of several (None: one source)."""

    def __init__(self, splits: list[_Split], cfgs: list[DataConfig], mix: Mixture | None, layout: Layout,
                 start_batch: int) -> None:
        self.splits, self.cfgs, self.mix, self.layout, self.start_batch = splits, cfgs, mix, layout, start_batch

    def __iter__(self) -> Iterator[Any]:
        wid, n_workers = _worker()
        # The DataLoader asks worker 0 first, but the rank's batch `start_batch` belongs to worker
        # start_batch % W of the uninterrupted run: so DataLoader worker `wid` plays that role.
        logical = (wid + self.start_batch) % n_workers
        first = self.start_batch + (logical - self.start_batch) % n_workers  # first j >= start, j % W == logical
        yield from _forward_errors(self._batches(first, n_workers))

    def _batches(self, first: int, stride: int) -> Iterator[dict[str, torch.Tensor]]:
        """Micro-batches first, first + stride, ... of the rank; each lane is opened where the first of
        them needs it, so a worker reads only the lanes of its own slots."""
        lay, seq_len, mix = self.layout, self.cfgs[0].seq_len, self.mix
        pool = ThreadPoolExecutor(1, thread_name_prefix="tinydnabert-read")
        lanes: dict[int, Any] = {}
        try:
            j = first
            while True:
                q = lay.rows(j)
                lane, pos = q % lay.lanes, q // lay.lanes
                keep_from = lay.micro_batch(j)[0] * lay.global_batch // lay.lanes  # this step's first row
                ids = np.empty((lay.micro, seq_len), np.int32)
                labels = np.empty((lay.micro, seq_len), np.int32)
                src = None if mix is None else np.empty(lay.micro, np.int64)
                for ln in np.unique(lane):
                    sel, ln = lane == ln, int(ln)
                    if ln not in lanes:
                        lanes[ln] = (_Lane(self.splits[0], self.cfgs[0], ln, keep_from, pool) if mix is None
                                     else _MixedLane(self.splits, self.cfgs, mix, ln, pool))
                    if mix is None:
                        ids[sel], labels[sel] = lanes[ln].rows(pos[sel], keep_from)
                    else:
                        ids[sel], labels[sel], src[sel] = lanes[ln].rows(pos[sel], keep_from)
                yield _batch(ids, labels, src)
                j += stride
        finally:
            pool.shutdown(wait=False, cancel_futures=True)


class TrainLoader:
    """Infinite iterable of micro-batches for one rank; remembers how many it has handed out.

        loader = build_train_loader(DIR, cfg, micro_batch_size=32, rank=r, world_size=R, global_batch=128)
        it = iter(loader)
        batch = next(it)              # {"input_ids", "labels", "attention_mask"}: [32, 512] int64
        state = loader.state_dict()   # save with the checkpoint
        ... later, with any world size of the same global batch:
        loader.load_state_dict(state); it = iter(loader)  # continues with the same rows per step

    Each iter() starts DataLoader workers at the current position; keep one iterator at a time.
    """

    def __init__(self, data: Any, cfg: DataConfig, micro_batch_size: int,
                 rank: int = 0, world_size: int = 1, start_batch: int = 0,
                 pin_memory: bool | None = None, global_batch: int | None = None) -> None:
        if micro_batch_size < 1:
            raise InputError(f"micro batch size {micro_batch_size}: must be >= 1")
        if not 0 <= rank < world_size:
            raise InputError(f"rank {rank} is outside world size {world_size}")
        global_batch = global_batch or micro_batch_size * world_size
        if global_batch % (micro_batch_size * world_size):
            raise InputError(f"global batch {global_batch} is not a multiple of micro {micro_batch_size} x "
                             f"{world_size} ranks")
        self.sources, self.cfg = sources.resolve(data), cfg
        self.micro_batch_size, self.rank, self.world_size = micro_batch_size, rank, world_size
        self.layout = Layout(global_batch, micro_batch_size, world_size, rank, cfg.lanes)
        fingerprints = [check_tokenizer(s.local) for s in self.sources]
        for s, fp in zip(self.sources[1:], fingerprints[1:]):
            if fp != fingerprints[0]:
                first = self.sources[0]
                raise InputError(f"--data {s.name}={s.root}: its tokenizer (sha256 {fp[:12]}...) is not the one of "
                                 f"{first.name}={first.root} ({fingerprints[0][:12]}...); a mixture "
                                 f"needs one tokenizer: re-run `tinydnabert preprocess --tokenizer "
                                 f"{self.sources[0].root}/tokenizer` for {s.root}")
        self.splits = [_load_split(s, "train", cfg.verify_shards) for s in self.sources]
        self.cfgs = [dataclasses.replace(cfg, seed=source_seed(cfg.seed, i)) for i in range(len(self.sources))]
        self.mix = (Mixture([s.weight for s in self.sources], cfg.seed, [s.name for s in self.sources])
                    if len(self.sources) > 1 else None)
        for split in self.splits:
            if rows_in_shard(sum(x.samples for x in split.shards), sum(x.tokens for x in split.shards),
                             cfg.seq_len) < 1:
                raise _too_small(split, cfg)
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self._position = start_batch

    @property
    def batches_consumed(self) -> int:
        """Micro-batches this rank has taken so far (its data position)."""
        return self._position

    @property
    def tokens_per_batch(self) -> int:
        return self.micro_batch_size * self.cfg.seq_len

    def rows_per_epoch(self) -> int:
        """Packed rows in one pass over every source's train split, all ranks together (to within a row per group)."""
        return sum(rows_in_shard(sum(x.samples for x in sp.shards), sum(x.tokens for x in sp.shards),
                                 self.cfg.seq_len) for sp in self.splits)

    def rows_by_source(self, steps: int) -> dict[str, int]:
        """Training rows of each source in the first `steps` optimizer steps of the run (all ranks): a function of
        the stream alone, so TensorBoard shows it without a sync."""
        n = steps * self.layout.global_batch
        if self.mix is None:
            return {self.sources[0].name: n}
        lanes = self.layout.lanes
        total = sum(self.mix.before(ln, (n - ln + lanes - 1) // lanes) for ln in range(min(lanes, n)))
        return {s.name: int(c) for s, c in zip(self.sources, np.broadcast_to(total, len(self.sources)))}

    def epoch0_shards(self) -> list[str]:
        """Names of the shards this rank's lanes read in their first pass over the groups of epoch 0
        (SOURCE/NAME for a mixture)."""
        lanes, out = set(self.layout.rank_lanes()), set()
        for src, split, cfg in zip(self.sources, self.splits, self.cfgs):
            n = len(split.shards)
            prefix = f"{src.name}/" if self.mix is not None else ""
            out |= {prefix + split.shards[i].name for g in range(-(-n // cfg.mix_shards)) if g % cfg.lanes in lanes
                    for i in group_of(n, g, cfg)[1]}
        return sorted(out)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        stream = _TrainStream(self.splits, self.cfgs, self.mix, self.layout, start_batch=self._position)
        nw = self.cfg.num_workers
        # prefetch 4 batches per worker: 4 x 512 KiB of shared memory each
        loader = DataLoader(stream, batch_size=None, num_workers=nw, prefetch_factor=4 if nw else None,
                            persistent_workers=False)
        for batch in loader:
            batch = _finish(batch, self.pin_memory)
            self._position += 1
            yield batch

    def _stream_identity(self) -> dict[str, Any]:
        # Everything that decides which rows make up step k (not the world size or the workers: they only
        # decide who computes which slot).
        c = self.cfg
        return {"version": STATE_VERSION, "global_batch": self.layout.global_batch,
                "micro_batch_size": self.micro_batch_size, "lanes": c.lanes,
                "seed": c.seed, "shuffle": c.shuffle, "mix_shards": c.mix_shards, "seq_len": c.seq_len,
                "mlm_probability": c.mlm_probability, "mask_replace_prob": c.mask_replace_prob,
                "random_replace_prob": c.random_replace_prob, "masked_per_row": c.masked_per_row,
                "train_shards": len(self.splits[0].shards),
                "tokenizer_sha256": self.splits[0].tokenizer_sha256,
                # a mixture: its sources (names, realised shares, shards); where they are may change
                **({} if self.mix is None else {"mixture": [
                    [src.name, float(share), len(sp.shards)]
                    for src, share, sp in zip(self.sources, self.mix.shares, self.splits)]})}

    def state_dict(self) -> dict[str, Any]:
        return {"batches_consumed": self._position, "world_size": self.world_size,
                "steps_consumed": self._position / self.layout.gas, **self._stream_identity()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a saved position, on this world size; refuses a state from a differently-defined
        stream, and one saved in the middle of a step by another world size."""
        if state.get("version", 1) < STATE_VERSION:
            raise InputError("this checkpoint's data position is in the per-rank stream of tinydnabert before "
                             "elastic resume (data state version 1), which the current stream cannot continue; "
                             "resume it with that version of tinydnabert (git log: before 'elastic resume'), or "
                             "start a new run (--init-from an export of it keeps the weights)")
        mine = self._stream_identity()
        state = {"masked_per_row": 0, **state}  # states saved before the field existed had no cap
        diff = {k: (state.get(k), v) for k, v in mine.items() if state.get(k) != v}
        if diff:
            detail = ", ".join(f"{k}: saved {a!r} vs now {b!r}" for k, (a, b) in diff.items())
            raise InputError(f"cannot resume the data stream exactly: {detail}. Resume with the saved data "
                             f"settings (seed, lanes, mix, micro and global batch) and the same shards")
        if state["world_size"] == self.world_size:
            self._position = int(state["batches_consumed"])
            return
        steps = float(state["steps_consumed"])
        if steps != int(steps):
            raise InputError(f"the saved data position ({state['batches_consumed']} micro-batches per rank) is "
                             f"inside an optimizer step; only a step boundary can move to another world size")
        self._position = int(steps) * self.layout.gas


def build_train_loader(data: Any, cfg: DataConfig, micro_batch_size: int,
                       rank: int = 0, world_size: int = 1, start_batch: int = 0,
                       global_batch: int | None = None) -> TrainLoader:
    """The rank's infinite, resumable stream of packed, masked micro-batches over DIR/train (global batch:
    rows per optimizer step of all ranks together; default micro x world, i.e. no accumulation). `data`: a
    shards directory or URL, or sources.resolve()'s list (a mixture)."""
    return TrainLoader(data, cfg, micro_batch_size, rank, world_size, start_batch, global_batch=global_batch)


# --------------------------------------------------------------------------- validation

class _ValStream(IterableDataset):
    """The rank's val rows [row0, row0 + n_batches * B); worker w makes batches b with b % W == w."""

    def __init__(self, split: _Split, cfg: DataConfig, batch_size: int, row0: int, n_batches: int) -> None:
        self.split, self.cfg, self.batch_size = split, cfg, batch_size
        self.row0, self.n_batches = row0, n_batches
        rows = [rows_in_shard(s.samples, s.tokens, cfg.seq_len) for s in split.shards]
        self.shard_start = np.concatenate([[0], np.cumsum(rows)])  # global row where each shard starts

    def __iter__(self) -> Iterator[Any]:
        wid, n_workers = _worker()
        cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        yield from _forward_errors(
            _batch(*self._rows(self.row0 + b * self.batch_size, self.batch_size, cache))
            for b in range(wid, self.n_batches, n_workers))

    def _rows(self, start: int, count: int, cache: dict) -> tuple[np.ndarray, np.ndarray]:
        ids, labels = [], []
        end = start + count
        first = int(np.searchsorted(self.shard_start, start, side="right")) - 1
        for i in range(first, len(self.split.shards)):
            lo, hi = int(self.shard_start[i]), int(self.shard_start[i + 1])
            if lo >= end:
                break
            if hi <= start:
                continue
            if i not in cache:
                for old in [k for k in cache if k < i]:  # batches only move forward
                    del cache[old]
                cache[i] = _val_shard_rows(self.split, self.split.shards[i], self.cfg)
            a, l_ = cache[i]
            ids.append(a[max(start, lo) - lo: min(end, hi) - lo])
            labels.append(l_[max(start, lo) - lo: min(end, hi) - lo])
        return np.concatenate(ids), np.concatenate(labels)


class ValLoader:
    """The fixed validation set of one rank: the same micro-batches, in the same order, every time.

    Every rank gets floor(val rows / (micro x world)) micro-batches (at most cfg.val_batches). A val
    split smaller than one micro-batch per rank (chr20 at 1%: ~270 rows, vs 128 x 8 ranks) is served
    in smaller batches, one per rank (`micro_batch_size` attribute), rather than refused.
    """

    def __init__(self, data: Source | str | Path, cfg: DataConfig, micro_batch_size: int,
                 rank: int = 0, world_size: int = 1, pin_memory: bool | None = None) -> None:
        if not 0 <= rank < world_size:
            raise InputError(f"rank {rank} is outside world size {world_size}")
        source = data if isinstance(data, Source) else sources.resolve(data)[0]
        check_tokenizer(source.local)
        self.split = _load_split(source, "val", cfg.verify_shards)
        total = sum(rows_in_shard(s.samples, s.tokens, cfg.seq_len) for s in self.split.shards)
        if total < world_size:
            raise InputError(f"{source.location('val')}: {total} packed {cfg.seq_len}-token rows, fewer than "
                             f"one per rank ({world_size} ranks); re-run preprocess with a larger --val-fraction")
        micro_batch_size = min(micro_batch_size, total // world_size)
        self.cfg, self.micro_batch_size = cfg, micro_batch_size
        per_rank = total // (micro_batch_size * world_size)  # equal for every rank; the rest unused
        if cfg.val_batches:
            per_rank = min(per_rank, cfg.val_batches)
        self.num_batches = per_rank
        self.stream = _ValStream(self.split, cfg, micro_batch_size, rank * per_rank * micro_batch_size, per_rank)
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        nw = min(self.cfg.num_workers, self.num_batches)
        for batch in DataLoader(self.stream, batch_size=None, num_workers=nw):
            yield _finish(batch, self.pin_memory)


def build_val_loader(data: Source | str | Path, cfg: DataConfig, micro_batch_size: int,
                     rank: int = 0, world_size: int = 1) -> ValLoader:
    """The rank's fixed validation micro-batches over DIR/val (len() of them, same on every rank)."""
    return ValLoader(data, cfg, micro_batch_size, rank, world_size)


def build_val_loaders(srcs: list[Source], cfg: DataConfig, micro_batch_size: int,
                      rank: int = 0, world_size: int = 1) -> dict[str, ValLoader]:
    """One fixed validation set per source (a mixture reports the val loss of each)."""
    return {s.name: ValLoader(s, cfg, micro_batch_size, rank, world_size) for s in srcs}


def data_config_from_dict(d: dict[str, Any]) -> DataConfig:
    """A DataConfig from a saved config.json dict (unknown keys ignored)."""
    names = {f.name for f in dataclasses.fields(DataConfig)}
    return DataConfig(**{k: v for k, v in d.items() if k in names})

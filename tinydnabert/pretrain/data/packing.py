"""Packing and masking: samples -> full rows of "<s> ids </s>" -> BERT-masked (input_ids, labels), in numpy.

Packing: a 256-1024 bp segment is ~60-235 tokens at ~4.38 bp/token, so a 512-token row holds 2-8 segments,
while the reference recipe's "one segment per row, padded to 512" spends 71% of its compute on padding
(chr20, benchmarks/data_pipeline.py). Attention crosses segment boundaries inside a row (RoBERTa's
FULL-SENTENCES packing); the <s> ... </s> around every segment mark where one ends.

The pure functions (rows_in_shard, pack_rows, mask_tokens) need no files, so benchmarks and tests call them
alone; group_rows / train_group_rows / val_shard_rows are the seeded rows of one read unit (a train group,
a val shard), the same arrays whenever it is read.
"""

from __future__ import annotations

import numpy as np

from tinydnabert.formats import BOS_ID, EOS_ID, IGNORE_INDEX, MASK_ID, NUM_SPECIAL
from tinydnabert.prep.shardcheck import ShardEntry
from tinydnabert.pretrain.data.config import TAG_TRAIN, TAG_VAL, DataConfig
from tinydnabert.pretrain.data.split import Split, read_ids


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


def group_rows(split: Split, group: list[int], seq_len: int) -> int:
    """Full rows a group of shards packs into, from the manifest's counts (no shard read)."""
    return rows_in_shard(sum(split.shards[i].samples for i in group),
                         sum(split.shards[i].tokens for i in group), seq_len)


def train_group_rows(split: Split, group: list[int], epoch: int, cfg: DataConfig
                     ) -> tuple[np.ndarray, np.ndarray]:
    """A group of train shards' masked rows in epoch `epoch`: the same arrays whenever it is read."""
    ids = [a for i in group for a in read_ids(split, split.shards[i])]
    rng = np.random.default_rng([cfg.seed, TAG_TRAIN, epoch, *group])
    if cfg.shuffle:
        ids = [ids[i] for i in rng.permutation(len(ids))]
    return mask_tokens(pack_rows(ids, cfg.seq_len), rng, split.vocab_size, cfg)


def val_shard_rows(split: Split, shard: ShardEntry, cfg: DataConfig) -> tuple[np.ndarray, np.ndarray]:
    """A val shard's masked rows, unshuffled, with a mask fixed by (seed, shard)."""
    ids = read_ids(split, shard)
    rng = np.random.default_rng([cfg.seed, TAG_VAL, shard.index])
    return mask_tokens(pack_rows(ids, cfg.seq_len), rng, split.vocab_size, cfg)

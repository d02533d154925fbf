"""DataConfig: the knobs of the pretraining stream, and the constants that define the stream itself.

Its own module because everything else in the package reads it (the row stream, the masks, the loaders)
and train.py builds it from flags and config.json without touching the loaders.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from tinydnabert.errors import InputError

# Tags that keep the random streams apart: the shard order of an epoch, a train group's sample order + mask,
# a val shard's mask, a mixture block's order of sources. Part of the stream: a changed tag is another stream.
TAG_ORDER, TAG_TRAIN, TAG_VAL, TAG_MIX = 0, 1, 2, 3
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



def data_config_from_dict(d: dict[str, Any]) -> DataConfig:
    """A DataConfig from a saved config.json dict (unknown keys ignored)."""
    names = {f.name for f in dataclasses.fields(DataConfig)}
    return DataConfig(**{k: v for k, v in d.items() if k in names})

"""The global row stream's schedule, independent of the world size ("elastic determinism"); no file is read.

  * epoch e: shard order = permutation(seed, e), cut into groups of `mix_shards`; the epochs' groups follow
    each other (global group g). Preprocessing writes shards in genome order, so one shard is one region
    (4096 samples x ~640 bp = ~2.6 Mbp), and mixing 4 puts 4 regions into every group;
  * `lanes` (4) row streams: lane l is global groups l, l + lanes, l + 2 lanes, ... end to end, and global
    row q is row q // lanes of lane q mod lanes;
  * optimizer step k is rows [k B, (k + 1) B), B = the global batch, dealt into slots and ranks by Layout.

Its own module because it is pure index arithmetic that exact resume rests on: what it computes is saved
implicitly in every checkpoint's data position, so it changes only with STATE_VERSION.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

from tinydnabert.pretrain.data.config import TAG_ORDER, DataConfig


def shard_order(n_shards: int, seed: int, epoch: int, shuffle: bool) -> np.ndarray:
    """Order in which the train shards are dealt to readers in an epoch."""
    if not shuffle:
        return np.arange(n_shards)
    return np.random.default_rng([seed, TAG_ORDER, epoch]).permutation(n_shards)


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

"""A mixture of sources (`--data a=DIR:w_a --data b=DIR:w_b ...`): which source each row of a lane comes from.

Its own module because it is the only part of the stream that knows there are several sources: the lanes,
packing and masking of each source are those of a one-source run (with the source's own seed).
"""

from __future__ import annotations

import numpy as np

from tinydnabert.errors import InputError
from tinydnabert.pretrain.data.config import TAG_MIX

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
            src = np.random.default_rng([self.seed, TAG_MIX, lane, b]).permutation(self._base)
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


def source_seed(seed: int, i: int) -> int:
    """The seed of source i's own stream (shard order, sample order, masks): the run's seed for the first
    source (a one-source run is the plain stream), a derived one for the others so no two share masks."""
    return seed if i == 0 else int(np.random.SeedSequence([seed, i]).generate_state(1)[0])


"""Reading one lane of the row stream forward, with the next group read in the background; and a mixture's lane.

Its own module because it holds the stream's only state (which groups are loaded, the reader thread's
futures); the schedule it follows is layout.py's, the rows of a group packing.py's.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from tinydnabert.errors import InputError
from tinydnabert.pretrain.data.config import DataConfig
from tinydnabert.pretrain.data.layout import lane_groups
from tinydnabert.pretrain.data.mixture import Mixture
from tinydnabert.pretrain.data.packing import group_rows, train_group_rows
from tinydnabert.pretrain.data.split import Split


class Lane:
    """One lane of the global row stream, read forward: its groups' rows end to end, lane position t = the
    t-th row. Groups wholly before the first position asked for are skipped unread (manifest row counts);
    the group after the one being served is read in the background (`pool`), as a group of 4 shards takes
    ~0.5 s of CPU: read in line, the worker would stall the trainer for that long."""

    def __init__(self, split: Split, cfg: DataConfig, lane: int, first: int, pool: ThreadPoolExecutor) -> None:
        self.split, self.cfg, self.pool = split, cfg, pool
        self.groups = lane_groups(len(split.shards), lane, cfg)
        self.end = 0            # lane position after the last group taken from `groups`
        self.loaded: list[tuple[int, int, Any]] = []  # (start, end, future of (ids, labels)), in order
        empty = 0
        while True:  # skip to the group holding `first`
            epoch, group = next(self.groups)
            n = group_rows(split, group, cfg.seq_len)
            if self.end + n > first:
                self._submit(epoch, group, n)
                break
            self.end += n
            empty = empty + 1 if n == 0 else 0
            if empty > len(split.shards):
                raise too_small(split, cfg)

    def _submit(self, epoch: int, group: list[int], n: int) -> None:
        self.loaded.append((self.end, self.end + n, self.pool.submit(train_group_rows, self.split, group,
                                                                    epoch, self.cfg)))
        self.end += n

    def _take_next(self) -> None:
        empty = 0
        while True:
            epoch, group = next(self.groups)
            n = group_rows(self.split, group, self.cfg.seq_len)
            if n:
                return self._submit(epoch, group, n)
            empty += 1
            if empty > len(self.split.shards):
                raise too_small(self.split, self.cfg)

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


class MixedLane:
    """One lane of a mixture: each source's own lane (same lane number, its own groups), interleaved by the
    Mixture. Reads a source's lane only once one of its rows is asked for."""

    def __init__(self, splits: list[Split], cfgs: list[DataConfig], mix: Mixture, lane: int,
                 pool: ThreadPoolExecutor) -> None:
        self.splits, self.cfgs, self.mix, self.lane, self.pool = splits, cfgs, mix, lane, pool
        self.subs: dict[int, Lane] = {}

    def rows(self, pos: np.ndarray, keep_from: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        src, spos = self.mix.assign(self.lane, pos)
        keep = self.mix.before(self.lane, keep_from)  # = each source's first position at or after keep_from
        ids = np.empty((len(pos), self.cfgs[0].seq_len), np.int32)
        labels = np.empty_like(ids)
        for s in np.unique(src):
            s, sel = int(s), src == s
            if s not in self.subs:
                self.subs[s] = Lane(self.splits[s], self.cfgs[s], self.lane, int(keep[s]), self.pool)
            ids[sel], labels[sel] = self.subs[s].rows(spos[sel], int(keep[s]))
        return ids, labels, src


def too_small(split: Split, cfg: DataConfig) -> InputError:
    """The error for a split whose shards, in a lane, hold not one row: its lanes would never yield."""
    return InputError(f"{split.shards[0].path.rsplit('/', 1)[0]}: the shards of a lane hold less than one "
                      f"{cfg.seq_len}-token row; re-run preprocess with a larger --samples-per-shard, use a smaller "
                      f"--seq-len or fewer --lanes")

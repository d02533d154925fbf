"""The loaders a training run holds: TrainLoader (infinite, resumable, elastic) and ValLoader (a fixed set).

Each is an IterableDataset stream run in DataLoader workers, plus the object in the training process that
owns its position (TrainLoader.state_dict is the checkpoint's data state) and finishes each batch. Its own
module because it is where the parts meet: the split (split.py), the schedule (layout.py), the lanes
(lanes.py), the mixture (mixture.py) and the worker boundary (workers.py).
"""

from __future__ import annotations

import dataclasses
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset

from tinydnabert.errors import InputError
from tinydnabert.prep.shardcheck import check_tokenizer
from tinydnabert.pretrain import sources
from tinydnabert.pretrain.data.config import STATE_VERSION, DataConfig
from tinydnabert.pretrain.data.lanes import Lane, MixedLane, too_small
from tinydnabert.pretrain.data.layout import Layout, group_of
from tinydnabert.pretrain.data.mixture import Mixture, source_seed
from tinydnabert.pretrain.data.packing import rows_in_shard, val_shard_rows
from tinydnabert.pretrain.data.split import Split, load_split
from tinydnabert.pretrain.data.workers import finish_batch, forward_errors, this_worker, worker_batch
from tinydnabert.pretrain.sources import Source


class TrainStream(IterableDataset):
    """One rank's infinite stream of micro-batches, starting at micro-batch `start_batch`; `splits` / `cfgs`:
    one per source, `mix` the Mixture of several (None: one source)."""

    def __init__(self, splits: list[Split], cfgs: list[DataConfig], mix: Mixture | None, layout: Layout,
                 start_batch: int) -> None:
        self.splits, self.cfgs, self.mix, self.layout, self.start_batch = splits, cfgs, mix, layout, start_batch

    def __iter__(self) -> Iterator[Any]:
        wid, n_workers = this_worker()
        # The DataLoader asks worker 0 first, but the rank's batch `start_batch` belongs to worker
        # start_batch % W of the uninterrupted run: so DataLoader worker `wid` plays that role.
        logical = (wid + self.start_batch) % n_workers
        first = self.start_batch + (logical - self.start_batch) % n_workers  # first j >= start, j % W == logical
        yield from forward_errors(self._batches(first, n_workers))

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
                        lanes[ln] = (Lane(self.splits[0], self.cfgs[0], ln, keep_from, pool) if mix is None
                                     else MixedLane(self.splits, self.cfgs, mix, ln, pool))
                    if mix is None:
                        ids[sel], labels[sel] = lanes[ln].rows(pos[sel], keep_from)
                    else:
                        ids[sel], labels[sel], src[sel] = lanes[ln].rows(pos[sel], keep_from)
                yield worker_batch(ids, labels, src)
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
        self.splits = [load_split(s, "train", cfg.verify_shards) for s in self.sources]
        self.cfgs = [dataclasses.replace(cfg, seed=source_seed(cfg.seed, i)) for i in range(len(self.sources))]
        self.mix = (Mixture([s.weight for s in self.sources], cfg.seed, [s.name for s in self.sources])
                    if len(self.sources) > 1 else None)
        for split in self.splits:
            if rows_in_shard(sum(x.samples for x in split.shards), sum(x.tokens for x in split.shards),
                             cfg.seq_len) < 1:
                raise too_small(split, cfg)
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
        stream = TrainStream(self.splits, self.cfgs, self.mix, self.layout, start_batch=self._position)
        nw = self.cfg.num_workers
        # prefetch 4 batches per worker: 4 x 512 KiB of shared memory each
        loader = DataLoader(stream, batch_size=None, num_workers=nw, prefetch_factor=4 if nw else None,
                            persistent_workers=False)
        for batch in loader:
            batch = finish_batch(batch, self.pin_memory)
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



class ValStream(IterableDataset):
    """The rank's val rows [row0, row0 + n_batches * B); worker w makes batches b with b % W == w."""

    def __init__(self, split: Split, cfg: DataConfig, batch_size: int, row0: int, n_batches: int) -> None:
        self.split, self.cfg, self.batch_size = split, cfg, batch_size
        self.row0, self.n_batches = row0, n_batches
        rows = [rows_in_shard(s.samples, s.tokens, cfg.seq_len) for s in split.shards]
        self.shard_start = np.concatenate([[0], np.cumsum(rows)])  # global row where each shard starts

    def __iter__(self) -> Iterator[Any]:
        wid, n_workers = this_worker()
        cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        yield from forward_errors(
            worker_batch(*self._rows(self.row0 + b * self.batch_size, self.batch_size, cache))
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
                cache[i] = val_shard_rows(self.split, self.split.shards[i], self.cfg)
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
        self.split = load_split(source, "val", cfg.verify_shards)
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
        self.stream = ValStream(self.split, cfg, micro_batch_size, rank * per_rank * micro_batch_size, per_rank)
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        nw = min(self.cfg.num_workers, self.num_batches)
        for batch in DataLoader(self.stream, batch_size=None, num_workers=nw):
            yield finish_batch(batch, self.pin_memory)


def build_val_loader(data: Source | str | Path, cfg: DataConfig, micro_batch_size: int,
                     rank: int = 0, world_size: int = 1) -> ValLoader:
    """The rank's fixed validation micro-batches over DIR/val (len() of them, same on every rank)."""
    return ValLoader(data, cfg, micro_batch_size, rank, world_size)


def build_val_loaders(srcs: list[Source], cfg: DataConfig, micro_batch_size: int,
                      rank: int = 0, world_size: int = 1) -> dict[str, ValLoader]:
    """One fixed validation set per source (a mixture reports the val loss of each)."""
    return {s.name: ValLoader(s, cfg, micro_batch_size, rank, world_size) for s in srcs}

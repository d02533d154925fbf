"""Pretraining input: stream WebDataset shards, pack segments into full rows, mask for MLM.

How a batch is made (all of it in DataLoader worker processes, numpy on whole groups of shards):

    DIR/train/shard-*.tar --(rank r of R, worker w of W: its own shards)--> samples (ids.u16)
      -> shuffle the samples of a group of shards -> "<s> ids </s>" for each -> concatenate
      -> cut into rows of seq_len tokens (no padding: every position is a real token)
      -> mask 15% of the non-special tokens (80% <mask>, 10% random token, 10% unchanged)
      -> micro-batches {input_ids, labels, attention_mask}, each [micro_batch, seq_len] int64

Rows are packed full, never padded (the reference recipe spends 71% of its compute on padding): packing.py.

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

The package, one job a module (each says why it is its own):

    config.py    DataConfig, STATE_VERSION and the seeds' tags: what defines the stream
    split.py     the shard list of a split, checked against its manifest (checks: prep/shardcheck.py)
    packing.py   rows_in_shard, pack_rows, mask_tokens; the seeded rows of a train group / val shard
    layout.py    the schedule: shard order, groups, lanes, Layout (who takes which rows of a step)
    mixture.py   Mixture: which source each row of a lane comes from
    lanes.py     Lane / MixedLane: a lane read forward, the next group read in the background
    workers.py   the DataLoader worker boundary: the batches sent and finished, errors forwarded
    loaders.py   TrainLoader (state_dict: the checkpoint's data position), ValLoader, build_*

Callers import from the package (`from tinydnabert.pretrain.data import DataConfig, build_train_loader`).
"""

from tinydnabert.prep.shardcheck import check_tokenizer
from tinydnabert.pretrain.data.config import STATE_VERSION, DataConfig, data_config_from_dict
from tinydnabert.pretrain.data.layout import Layout, group_of, lane_groups, shard_order
from tinydnabert.pretrain.data.loaders import (
    TrainLoader,
    ValLoader,
    build_train_loader,
    build_val_loader,
    build_val_loaders,
)
from tinydnabert.pretrain.data.mixture import MIX_BLOCK, Mixture, source_seed
from tinydnabert.pretrain.data.packing import mask_tokens, pack_rows, rows_in_shard

__all__ = [
    "MIX_BLOCK", "STATE_VERSION", "DataConfig", "Layout", "Mixture", "TrainLoader", "ValLoader",
    "build_train_loader", "build_val_loader", "build_val_loaders", "check_tokenizer", "data_config_from_dict",
    "group_of", "lane_groups", "mask_tokens", "pack_rows", "rows_in_shard", "shard_order", "source_seed",
]

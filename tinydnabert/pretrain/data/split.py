"""The shard list of one split (local or remote), checked against its manifest, and the checked read of a shard.

The checks and their wording are prep/shardcheck.py's, shared with `tinydnabert verify`: this module only
decides when they run (the listing when a loader is built, in the main process; a shard's contents when a
worker reads it) and turns the first problem into an InputError. Its own module because it is the one place
the stream touches files: everything downstream of it sees arrays and manifest counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tinydnabert import formats
from tinydnabert.console import print0
from tinydnabert.errors import InputError
from tinydnabert.prep import shardcheck
from tinydnabert.prep.shardcheck import ShardEntry
from tinydnabert.pretrain import sources
from tinydnabert.pretrain.sources import Source


@dataclass(frozen=True)
class Split:
    """What a reader of one split needs, resolved in the main process (picklable for workers)."""
    shards: tuple[ShardEntry, ...]
    vocab_size: int
    tokenizer_sha256: str
    verify: bool = True  # check each shard's sha256 as it is read (DataConfig.verify_shards)
    remote: bool = False  # shards are fetched (sources.fetch_shard), not opened
    cache: str | None = None  # remote with --cache-dir: SPLIT/NAME of every verified shard is kept under it
    split: str = "train"
    manifest: str = "the manifest"  # where the manifest is, for messages


def load_split(source: Source | str | Path, split: str, verify: bool = True) -> Split:
    """One split of a shards directory (local or remote), checked against its manifest: every listed shard
    present (local: on disk, the right size; remote: checked as it is fetched), nothing unlisted."""
    source = source if isinstance(source, Source) else sources.resolve(source)[0]
    data_dir = source.local
    manifest = formats.load_manifest(data_dir)
    mpath = source.location(formats.MANIFEST)
    vocab_size, sha = shardcheck.manifest_tokenizer(manifest, mpath)
    if source.remote:  # no listing over HTTP: the manifest is the list; size and sha256 are checked on read
        shards = shardcheck.listed_shards(manifest, split, mpath, lambda n: source.location(f"{split}/{n}"))
    else:
        shards = shardcheck.listed_shards(manifest, split, mpath, lambda n: str(Path(data_dir) / split / n))
    if not shards:  # e.g. preprocessed with --val-fraction 0 and no --val-records
        raise InputError(f"{mpath}: the {split} split has no shards; re-run `tinydnabert preprocess`"
                         + (" with --val-fraction > 0 or --val-records" if split == "val" else ""))
    if not source.remote:
        problems = shardcheck.listing_problems(data_dir, split, shards, mpath)
        if problems:
            raise shardcheck.first_error(problems)
    note = shardcheck.unverifiable(shards, split, mpath)
    if note and (verify or source.cache):
        print0(f"note: {note}, so those are read unverified (and never kept in --cache-dir); re-run "
               f"`tinydnabert preprocess` to add them")
    return Split(tuple(shards), vocab_size, sha, verify, source.remote,
                 None if source.cache is None else str(source.cache), split, mpath)


def read_ids(split: Split, shard: ShardEntry) -> list[np.ndarray]:
    """The token ids of the shard's samples, every check of shardcheck.check_shard passed (its sha256 only
    with split.verify): a shard that disagrees with the manifest, whose counts resume relies on, is refused."""
    raw, verify = None, split.verify
    if split.remote:
        cache = None if split.cache is None else Path(split.cache) / split.split / shard.name
        raw, checked = sources.fetch_shard(shard.path, cache, shard.bytes, shard.sha256)
        verify = verify and not checked
    samples, problems = shardcheck.check_shard(shard, split.vocab_size, split.manifest, verify=verify, raw=raw)
    if problems:
        raise shardcheck.first_error(problems)
    return [s.ids for s in samples]

"""Writing WebDataset tar shards (layout and members: formats.py), deterministically.

A shard is a plain tar readable by `webdataset.WebDataset`; each sample is two members,
`KEY.ids.u16` and `KEY.json`. Every tar header field that could vary between runs (mtime, uid,
gid, user/group names, mode) is fixed, so the same samples give a byte-identical file.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np

from .formats import IDS_MEMBER, META_MEMBER, encode_ids, sample_key


class ShardSample(NamedTuple):
    """One sample to write (a NamedTuple: cheap to pickle to worker processes)."""
    record: str
    start: int
    end: int
    strand: str  # "+" | "-"
    seq: str     # what is tokenized (reverse complement for "-")


def _tarinfo(name: str, size: int) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.size = size
    ti.mtime = 0
    ti.mode = 0o644
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = ""
    return ti


def write_shard(path: str | Path, samples: Sequence[ShardSample], ids: Sequence[np.ndarray]) -> dict:
    """Write one shard; returns {"name", "samples", "bases", "tokens"}."""
    path = Path(path)
    tokens = bases = 0
    with open(path, "wb") as raw, tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for s, tok_ids in zip(samples, ids, strict=True):
            key = sample_key(s.record, s.start, s.end, s.strand)
            payload = encode_ids(tok_ids)
            meta = json.dumps({"record": s.record, "start": s.start, "end": s.end, "strand": s.strand},
                              separators=(",", ":")).encode("utf-8")
            tf.addfile(_tarinfo(f"{key}.{IDS_MEMBER}", len(payload)), io.BytesIO(payload))
            tf.addfile(_tarinfo(f"{key}.{META_MEMBER}", len(meta)), io.BytesIO(meta))
            tokens += len(tok_ids)
            bases += s.end - s.start
    return {"name": path.name, "samples": len(samples), "bases": bases, "tokens": tokens}


def read_shard(path: str | Path) -> list[tuple[str, np.ndarray, dict]]:
    """(key, ids, meta) of every sample, in order, with the standard library (tests, checks)."""
    from .formats import decode_ids

    out: dict[str, dict] = {}
    order: list[str] = []
    with tarfile.open(path, "r") as tf:
        for m in tf:
            key, _, ext = m.name.partition(".")
            data = tf.extractfile(m).read()
            if key not in out:
                out[key] = {}
                order.append(key)
            out[key][ext] = data
    return [(k, decode_ids(out[k][IDS_MEMBER]), json.loads(out[k][META_MEMBER])) for k in order]


def split_summary(shards: list[dict]) -> dict:
    """Per-split totals for the manifest from per-shard counts."""
    samples = sum(s["samples"] for s in shards)
    bases = sum(s["bases"] for s in shards)
    tokens = sum(s["tokens"] for s in shards)
    return {"samples": samples, "bases": bases, "tokens": tokens,
            "bp_per_token": round(bases / tokens, 4) if tokens else None, "shards": shards}

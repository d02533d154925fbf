"""Writing WebDataset tar shards (layout and members: formats.py), deterministically, and reading one back.

A shard is a plain tar readable by `webdataset.WebDataset`; each sample is two members,
`KEY.ids.u16` and `KEY.json`. Every tar header field that could vary between runs (mtime, uid,
gid, user/group names, mode) is fixed, so the same samples give a byte-identical file.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np

from tinydnabert.errors import InputError
from tinydnabert.formats import IDS_MEMBER, META_MEMBER, decode_ids, encode_ids, sample_key


class ShardSample(NamedTuple):
    """One sample to write (a NamedTuple: cheap to pickle to worker processes)."""
    record: str
    start: int
    end: int
    strand: str  # "+" | "-"
    seq: str     # what is tokenized (reverse complement for "-")


_BLOCK = 512
_RECORD = 20 * _BLOCK  # tarfile's RECORDSIZE: archives are padded to a multiple of it


def _tar_header(name: bytes, size: int) -> bytes:
    """A POSIX ustar header with every varying field fixed (mode 0644, uid/gid 0, no user/group
    names, mtime 0). Built by hand: tarfile.addfile costs ~45 us a member, which on GRCh38's
    ~9 M members is minutes; this is ~3 us. Names longer than 100 bytes go through tarfile."""
    h = bytearray(_BLOCK)
    h[0:len(name)] = name
    h[100:108] = b"0000644\x00"
    h[108:116] = b"0000000\x00"
    h[116:124] = b"0000000\x00"
    h[124:136] = b"%011o\x00" % size
    h[136:148] = b"00000000000\x00"
    h[148:156] = b"        "  # checksum is computed with this field as spaces
    h[156:157] = b"0"            # regular file
    h[257:265] = b"ustar\x0000"
    h[148:156] = b"%06o\x00 " % sum(h)
    return bytes(h)


def _member(name: str, data: bytes) -> bytes:
    raw = name.encode("utf-8")
    if len(raw) > 100:
        ti = tarfile.TarInfo(name)
        ti.size, ti.mtime, ti.mode, ti.uid, ti.gid, ti.uname, ti.gname = len(data), 0, 0o644, 0, 0, "", ""
        head = ti.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
    else:
        head = _tar_header(raw, len(data))
    return head + data + b"\x00" * (-len(data) % _BLOCK)


def write_shard(path: str | Path, samples: Sequence[ShardSample], ids: Sequence[np.ndarray]) -> dict:
    """Write one shard; returns {"name", "samples", "bases", "tokens", "bp_per_token", "bytes", "sha256"}:
    the manifest's entry for it. The checksum is of the bytes in memory, so it costs no re-read."""
    path = Path(path)
    tokens = bases = 0
    parts: list[bytes] = []
    for s, tok_ids in zip(samples, ids, strict=True):
        key = sample_key(s.record, s.start, s.end, s.strand)
        meta = json.dumps({"record": s.record, "start": s.start, "end": s.end, "strand": s.strand},
                          separators=(",", ":")).encode("utf-8")
        parts.append(_member(f"{key}.{IDS_MEMBER}", encode_ids(tok_ids)))
        parts.append(_member(f"{key}.{META_MEMBER}", meta))
        tokens += len(tok_ids)
        bases += s.end - s.start
    body = b"".join(parts)
    body += b"\x00" * (2 * _BLOCK)  # end-of-archive marker
    body += b"\x00" * (-len(body) % _RECORD)
    with open(path, "wb") as f:
        f.write(body)
    return {"name": path.name, "samples": len(samples), "bases": bases, "tokens": tokens,
            "bp_per_token": round(bases / tokens, 4) if tokens else None,
            "bytes": len(body), "sha256": hashlib.sha256(body).hexdigest()}


class StoredSample(NamedTuple):
    key: str
    ids: np.ndarray   # uint16 token ids, no special tokens
    meta: dict | None  # the origin JSON; None when read with meta=False


REDO = "re-run `tinydnabert preprocess` (`tinydnabert verify DIR` lists every bad file)"


class ShardError(InputError):
    """A shard that is not what its manifest says. `problem` is what is wrong, naming the file; the message
    adds what to do (REDO). `tinydnabert verify` lists problems and says what to do once, at the end."""

    def __init__(self, problem: str) -> None:
        super().__init__(f"{problem}; {REDO}")
        self.problem = problem

    def __reduce__(self) -> tuple:
        return ShardError, (self.problem,)


def size_problem(path: str | Path, size: int, expected: int | None) -> str | None:
    """What is wrong with a shard file of `size` bytes whose manifest entry says `expected` (None: a
    manifest from before shards carried their size), or None. A tar file is whole 512-byte blocks, so
    anything else was cut short whatever the manifest says."""
    if size == 0 or size % _BLOCK:
        return f"{path}: truncated shard ({size:,} bytes, not whole {_BLOCK}-byte tar blocks)"
    if expected is not None and size != expected:
        return (f"{path}: {size:,} bytes but the manifest says {expected:,}: the shard was cut short, extended or "
                f"replaced after preprocessing")
    return None


def read_shard(path: str | Path, meta: bool = True, sha256: str | None = None,
               size: int | None = None, raw: bytes | None = None) -> list[StoredSample]:
    """Every sample of one shard, in stored order, parsed with webdataset (what training streams through).

    The file is read whole (a 4096-sample shard is ~8 MB) and, given the manifest's `size` and
    `sha256`, checked before it is parsed: the tar format checksums only its headers, so a flipped bit
    in a token id or a zeroed block would otherwise be read as data. hashlib's sha256 costs ~1-2 ms/MB
    on the bytes already in memory (BENCHMARKS.md measures the loader with and without it).
    meta=False skips the JSON members unread (the training reader needs only the ids). Any failure
    (a size that is not whole tar blocks or differs, a checksum that differs, a truncated or corrupt tar, a
    sample without ids.u16, origin JSON that does not parse) is a ShardError (an InputError) naming the shard.
    `raw`: the shard's bytes, already fetched from `path` (a URL: tinydnabert.pretrain.sources), checked and
    parsed the same way. What else a shard must be (its counts, its token ids): prep/shardcheck.py."""
    import webdataset as wds

    try:
        raw = Path(path).read_bytes() if raw is None else raw
    except OSError as e:
        raise ShardError(f"{path}: cannot read shard ({e.strerror})") from e
    why = size_problem(path, len(raw), size)
    if why:
        raise ShardError(why)
    if sha256 is not None:
        got = hashlib.sha256(raw).hexdigest()
        if got != sha256:
            raise ShardError(f"{path}: sha256 {got[:12]}... differs from the manifest's {sha256[:12]}...: the "
                             f"shard changed after preprocessing (a disk or copy error, or an edit)")
    out: list[StoredSample] = []
    wanted = tuple("." + m for m in ((IDS_MEMBER, META_MEMBER) if meta else (IDS_MEMBER,)))
    try:
        files = wds.tariterators.tar_file_expander([{"url": str(path), "stream": io.BytesIO(raw)}],
                                                   select_files=lambda name: name.endswith(wanted))
        for sample in wds.tariterators.group_by_keys(files):
            key = sample["__key__"]
            if IDS_MEMBER not in sample:
                raise ValueError(f"sample {key!r} has no {IDS_MEMBER} member")
            origin = json.loads(sample[META_MEMBER]) if meta and META_MEMBER in sample else None
            out.append(StoredSample(key, decode_ids(sample[IDS_MEMBER]), origin))
    except Exception as e:  # tarfile.ReadError, EOFError, ValueError (JSONDecodeError), ...
        detail = e.args[0] if e.args else e  # webdataset appends the stream and url to args
        raise ShardError(f"{path}: corrupt or truncated shard ({type(e).__name__}: {detail})") from e
    return out


def split_summary(shards: list[dict]) -> dict:
    """Per-split totals for the manifest from per-shard counts."""
    samples = sum(s["samples"] for s in shards)
    bases = sum(s["bases"] for s in shards)
    tokens = sum(s["tokens"] for s in shards)
    return {"samples": samples, "bases": bases, "tokens": tokens,
            "bp_per_token": round(bases / tokens, 4) if tokens else None, "shards": shards}

"""A shards directory held to its manifest: the one owner of the checks and of their wording.

manifest.json is the contract between preprocessing and training (formats.py). Two readers hold shards to
it: the training loader (pretrain/data/), which must stop at the first problem, and `tinydnabert verify`,
which lists every problem. So the checks return problems, one line each naming the file, instead of raising;
the loader raises the first (`first_error`), verify prints them all. Checked:

  * the tokenizer: its sha256 is the one the shards were made with (`check_tokenizer`);
  * a split's listing, no shard read (`listing_problems`; the loader when it is built): every listed shard on
    disk, none unlisted, each whole 512-byte tar blocks and the size the manifest records;
  * a shard's contents, read once (`check_shard`; the loader as a worker reads the shard): its size and sha256
    (read_shard, before the tar is parsed), a tar that parses, every token id a content id of the vocabulary
    (a flipped high bit gives an id past it, which the embedding would reject as a bare IndexError naming no
    shard), with meta every sample's origin JSON, then the sample / token / base counts: the row counts that
    exact resume relies on come from the manifest, so a shard that disagrees with it must not be used;
  * entries without size / sha256 (an older manifest: `unverifiable`), and a split's totals (`totals_problems`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from tinydnabert import formats
from tinydnabert.errors import InputError
from tinydnabert.formats import NUM_SPECIAL
from tinydnabert.prep.shards import REDO, ShardError, StoredSample, read_shard, size_problem


@dataclass(frozen=True)
class ShardEntry:
    """One shard of a split as manifest.json lists it (splits.SPLIT.shards[index]), and where it is."""
    path: str   # a file, or a URL (pretrain/sources.py) when the shards directory is remote
    index: int  # position in the manifest's shard list: the shard's id in every seed
    name: str   # its file name in the split's directory
    samples: int
    tokens: int  # ids without specials
    bases: int | None = None
    bytes: int | None = None   # None: a manifest from before shards carried their size and sha256
    sha256: str | None = None


def first_error(problems: list[str]) -> InputError:
    """What the loader raises for a list of problems: the first, and what to do."""
    more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
    return InputError(f"{problems[0]}{more}; {REDO}")


def manifest_tokenizer(manifest: dict, mpath: str | Path) -> tuple[int, str]:
    """(vocab_size, sha256) of the tokenizer the manifest's shards were made with."""
    try:
        tok = manifest["tokenizer"]
        return int(tok["vocab_size"]), str(tok["sha256"])
    except (KeyError, TypeError, ValueError) as e:
        raise InputError(f"{mpath}: no tokenizer vocab_size / sha256 ({e}); re-run `tinydnabert preprocess`") from e


def check_tokenizer(data_dir: str | Path, tokenizer_dir: str | Path | None = None) -> str:
    """Refuse shards made with another tokenizer: the manifest's fingerprint must be that of
    `tokenizer_dir` (default DIR/tokenizer). Returns the fingerprint."""
    manifest = formats.load_manifest(data_dir)
    _, expected = manifest_tokenizer(manifest, Path(data_dir) / formats.MANIFEST)
    own = Path(data_dir) / formats.TOKENIZER_DIR
    tokenizer_dir = own if tokenizer_dir is None else Path(tokenizer_dir)
    actual = formats.tokenizer_fingerprint(tokenizer_dir)
    if actual != expected:
        todo = ("it was changed after preprocessing: restore it or re-run `tinydnabert preprocess`"
                if tokenizer_dir == own else f"use {own} or re-run preprocess with this tokenizer")
        raise InputError(f"{tokenizer_dir / formats.TOKENIZER_FILE}: tokenizer sha256 {actual[:12]}... differs "
                         f"from {expected[:12]}... that the shards in {data_dir} were made with; token ids would "
                         f"mean different things: {todo}")
    return actual


def listed_shards(manifest: dict, split: str, mpath: str | Path,
                  location: Callable[[str], str]) -> list[ShardEntry]:
    """The split's shards as the manifest lists them; `location(name)`: where each one is."""
    try:
        entries = manifest["splits"][split]["shards"]
    except (KeyError, TypeError) as e:
        raise InputError(f"{mpath}: no splits.{split}.shards ({e}); re-run `tinydnabert preprocess`") from e
    out = []
    for i, e in enumerate(entries):
        try:
            out.append(ShardEntry(location(e["name"]), i, e["name"], int(e["samples"]), int(e["tokens"]),
                                  _opt_int(e.get("bases")), _opt_int(e.get("bytes")), e.get("sha256")))
        except (KeyError, TypeError, ValueError) as err:
            raise InputError(f"{mpath}: splits.{split}.shards[{i}] lacks name/samples/tokens ({err}); "
                             f"re-run `tinydnabert preprocess`") from err
    return out


def _opt_int(x: Any) -> int | None:
    return None if x is None else int(x)


def listing_problems(data_dir: str | Path, split: str, shards: list[ShardEntry], mpath: str | Path,
                     sizes: bool = True) -> list[str]:
    """A local split against its listing, without reading a shard: every listed shard on disk (with `sizes`:
    whole tar blocks and the recorded size), and nothing unlisted."""
    d = Path(data_dir) / split
    on_disk = {p.name: p for p in sorted(d.glob(formats.SHARD_GLOB))} if d.is_dir() else {}
    if shards and not on_disk:
        return [f"{d}: no {formats.SHARD_GLOB} shards found, while {mpath} lists {len(shards)}"]
    problems = []
    for s in shards:
        if s.name not in on_disk:
            problems.append(f"{s.path}: listed in {mpath} but missing")
        elif sizes and (why := size_problem(s.path, os.path.getsize(s.path), s.bytes)):
            problems.append(why)
    listed = {s.name for s in shards}
    problems += [f"{p}: not listed in {mpath}: the shards directory was changed after preprocessing"
                 for name, p in on_disk.items() if name not in listed]
    return problems


def check_shard(shard: ShardEntry, vocab_size: int, mpath: str | Path, *, meta: bool = False,
                verify: bool = True, raw: bytes | None = None) -> tuple[list[StoredSample], list[str]]:
    """Read one shard and check it against its manifest entry: (its samples, its problems).

    Its size and, with `verify`, its sha256 (read_shard); a shard whose bytes are wrong is parsed anyway,
    unchecked, to say what else is wrong ([] samples if it does not parse). Then every token id, with `meta`
    every origin JSON (well formed, the sample key made from it), then the counts, unless a bad sample
    already explains them. `raw`: the shard's bytes, already fetched (a remote shard)."""
    problems: list[str] = []
    try:
        samples = read_shard(shard.path, meta=meta, sha256=shard.sha256 if verify else None, size=shard.bytes,
                             raw=raw)
    except ShardError as e:
        problems.append(e.problem)
        try:
            samples = read_shard(shard.path, meta=meta, raw=raw)
        except ShardError:
            return [], problems
    bad = _id_problems(shard.path, samples, vocab_size)
    bases = 0
    for s in samples if meta else ():
        m = s.meta
        why = origin_problem(m)
        if why:
            bad.append(f"{shard.path}: sample {s.key!r}: origin JSON {why}")
            continue
        if formats.sample_key(m["record"], m["start"], m["end"], m["strand"]) != s.key:
            bad.append(f"{shard.path}: sample {s.key!r}: origin JSON says {m['record']}:{m['start']}-{m['end']} "
                       f"({m['strand']}), which is another key")
        bases += m["end"] - m["start"]
    problems += bad
    if not bad:
        counts = [("samples", len(samples), shard.samples), ("tokens", sum(len(s.ids) for s in samples), shard.tokens)]
        if meta and shard.bases is not None:
            counts.append(("bases", bases, shard.bases))
        problems += [f"{shard.path}: holds {v:,} {k} but {mpath} says {want:,}" for k, v, want in counts if v != want]
    return samples, problems


def _id_problems(path: str, samples: list[StoredSample], vocab_size: int) -> list[str]:
    # One pass over the concatenated ids (~1 ms for a 600k-token shard); per sample only to name the bad ones.
    flat = np.concatenate([s.ids for s in samples]) if samples else np.empty(0, np.uint16)
    if not flat.size or (int(flat.min()) >= NUM_SPECIAL and int(flat.max()) < vocab_size):
        return []
    out = []
    for s in samples:
        bad = s.ids[(s.ids < NUM_SPECIAL) | (s.ids >= vocab_size)]
        if bad.size:
            out.append(f"{path}: sample {s.key!r} holds token id {int(bad[0])}, outside the vocabulary's content "
                       f"ids {NUM_SPECIAL}..{vocab_size - 1}: the shard is corrupt or was made with another tokenizer")
    return out


def origin_problem(m: Any) -> str | None:
    """What is wrong with a sample's origin JSON ({"record", "start", "end", "strand"}), or None."""
    if not isinstance(m, dict):
        return "is missing" if m is None else "is not an object"
    if not isinstance(m.get("record"), str) or not m["record"]:
        return f"has no record name: {m}"
    if not all(isinstance(m.get(k), int) and not isinstance(m.get(k), bool) for k in ("start", "end")):
        return f"has no integer start/end: {m}"
    if not 0 <= m["start"] < m["end"]:
        return f"has start {m['start']} / end {m['end']}, not 0 <= start < end"
    if m.get("strand") not in ("+", "-"):
        return f"has strand {m.get('strand')!r}, not '+' or '-'"
    return None


def unverifiable(shards: list[ShardEntry], split: str, mpath: str | Path) -> str | None:
    """The entries an older manifest records no size / sha256 for (their bytes cannot be checked), or None."""
    n = sum(s.sha256 is None or s.bytes is None for s in shards)
    return (f"{mpath}: records no size / sha256 for {n} {split} shards (made by an older tinydnabert)"
            if n else None)


def totals_problems(manifest: dict, split: str, shards: list[ShardEntry], mpath: str | Path) -> list[str]:
    """The split's samples / bases / tokens against the sum of its shards' (the manifest agrees with itself)."""
    info = (manifest.get("splits") or {}).get(split) or {}
    problems = []
    for k in ("samples", "bases", "tokens"):
        v = sum(getattr(s, k) or 0 for s in shards)
        if k in info and info[k] != v:
            problems.append(f"{mpath}: splits.{split}.{k} is {info[k]:,} but its shards add up to {v:,}")
    return problems

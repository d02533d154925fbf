"""Seeded segmentation of A/C/G/T runs into 256-1024 bp pieces, strand and split assignment.

Every random draw comes from numpy Generators seeded by (config seed, record name): a record's
segments depend only on its sequence, its name and the seed, never on the order records are
processed in, the number of worker processes, or numpy's global state. Separate child streams for
lengths / strand / split / tokenizer sample mean that changing, say, --val-fraction does not move
a single segment boundary.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

_COMPLEMENT = bytes.maketrans(b"ACGTacgt", b"TGCAtgca")


def record_rngs(seed: int, name: str) -> dict[str, np.random.Generator]:
    """Independent generators for one record: "length", "strand", "split", "sample"."""
    name_hash = int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "little")
    children = np.random.SeedSequence([seed, name_hash]).spawn(4)
    return {k: np.random.default_rng(s) for k, s in zip(("length", "strand", "split", "sample"), children)}


@dataclass
class Segments:
    """One record's segments as parallel arrays (cheap for 400k segments of a 248 Mbp chromosome)."""
    record: str
    starts: np.ndarray      # int64, 0-based
    ends: np.ndarray        # int64, exclusive
    reverse: np.ndarray     # bool: tokens spell the reverse complement of [start, end)
    val: np.ndarray         # bool: belongs to the validation split
    tok_key: np.ndarray     # float64 in [0, 1): tokenizer-sample key (kept when < fraction)
    dropped_bases: int      # A/C/G/T bases in leftovers shorter than min_len
    dropped_pieces: int

    def __len__(self) -> int:
        return len(self.starts)


def cut_runs(runs: np.ndarray, min_len: int, max_len: int,
             rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Cut each [start, end) run into consecutive pieces with lengths drawn uniformly from
    [min_len, max_len]. When the next drawn length overshoots the rest of the run, the rest becomes
    the last piece if it is at least min_len (it is then <= max_len), else it is dropped.

    Returns (starts, ends, dropped_bases, dropped_pieces).
    """
    starts_out: list[np.ndarray] = []
    ends_out: list[np.ndarray] = []
    dropped = dropped_pieces = 0
    for start, end in runs.tolist():
        length = end - start
        if length < min_len:
            dropped += length
            dropped_pieces += 1
            continue
        # Enough draws to cover the run even if every length is min_len (+1 for the overshoot).
        n = length // min_len + 1
        lens = rng.integers(min_len, max_len + 1, size=n)
        cum = np.cumsum(lens)
        k = int(np.searchsorted(cum, length, side="right"))  # pieces that fit entirely
        bounds = np.empty(k + 1, dtype=np.int64)
        bounds[0] = 0
        bounds[1:] = cum[:k]
        rest = length - int(bounds[-1])
        if rest >= min_len:
            bounds = np.append(bounds, length)
        elif rest > 0:
            dropped += rest
            dropped_pieces += 1
        starts_out.append(start + bounds[:-1])
        ends_out.append(start + bounds[1:])
    if not starts_out:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty.copy(), dropped, dropped_pieces
    return np.concatenate(starts_out), np.concatenate(ends_out), dropped, dropped_pieces


def segment_record(name: str, runs: np.ndarray, *, seed: int, min_len: int, max_len: int,
                   reverse_complement: bool, val_fraction: float, val_record: bool) -> Segments:
    """All segments of one record with strand, split and tokenizer-sample key assigned."""
    rngs = record_rngs(seed, name)
    starts, ends, dropped, pieces = cut_runs(runs, min_len, max_len, rngs["length"])
    n = len(starts)
    # Reverse-complement augmentation: each segment on a random strand (the corpus size is
    # unchanged; the model sees both strands of the genome, half each).
    reverse = rngs["strand"].random(n) < 0.5 if reverse_complement else np.zeros(n, dtype=bool)
    if val_record:
        val = np.ones(n, dtype=bool)
    elif val_fraction > 0:
        val = rngs["split"].random(n) < val_fraction
    else:
        val = np.zeros(n, dtype=bool)
    tok_key = rngs["sample"].random(n)
    return Segments(name, starts, ends, reverse, val, tok_key, dropped, pieces)


def segment_text(seq: bytes, start: int, end: int, reverse: bool) -> str:
    """The segment's sequence as the tokenizer sees it (reverse complement for the '-' strand)."""
    piece = seq[start:end]
    if reverse:
        piece = piece.translate(_COMPLEMENT)[::-1]
    return piece.decode("ascii")


def reverse_complement(seq: str) -> str:
    return seq.encode("ascii").translate(_COMPLEMENT)[::-1].decode("ascii")

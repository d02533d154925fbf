"""Exact canonical k-mer matching with numpy: the index of a set of sequences, and the streams matched against it.

Two users: `tinydnabert overlap` (eval/overlap.py: which benchmark rows share a k-mer with, or lie whole inside, the
pretraining segments) and `preprocess --exclude-from` (prep/exclude.py: drop the segments that share a k-mer with
a task's sequences). Both ask the same question, so the answer has one owner.

A k-mer (k <= 32) is its 2-bit code as one uint64 (A=0 C=1 G=2 T=3, first base in the high bits); its canonical
form is min(k-mer, reverse complement), so one lookup matches both strands. Windows holding anything but
A/C/G/T (N, IUPAC codes, the separator between two segments) have no k-mer. Every window of a buffer is computed
at once by doubling (the values of 2^j-mers from those of 2^(j-1)-mers, then k's binary digits combined):
~2 log2 k vector operations per strand instead of k, so 32-mers cost 10 shifts and ors per base, not 32 (a
pure-Python loop over chr20's 59.5 Mbp would take minutes; this takes seconds: BENCHMARKS.md, "Overlap").

The index is a sorted array of the distinct canonical k-mers of the indexed sequences (8 bytes each) and, per
sequence, the positions of its k-mers in that array (CSR, 4 bytes each): memory grows with the task (GUE
prom_core_all, 59,196 rows of 70 bp: 2.3 M k-mers, ~30 MB), not with the genome streamed past it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from tinydnabert.errors import InputError

MAX_K = 32  # a k-mer is one uint64
SEP = 4     # the code of everything that is not A/C/G/T: no window holding one has a k-mer

_CODES = np.full(256, SEP, dtype=np.uint8)
for _i, _c in enumerate(b"ACGT"):
    _CODES[_c] = _CODES[_c + 32] = _i  # upper and lower case (soft-masked repeats)
_LETTERS = np.frombuffer(b"ACGTN", dtype=np.uint8)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def check_k(k: int, flag: str = "--k") -> int:
    if not 1 <= k <= MAX_K:
        raise InputError(f"{flag} {k}: must be in [1, {MAX_K}] (a k-mer is packed into one 64-bit integer); "
                         "32 is the default, and below ~20 chance matches dominate in a genome")
    return k


def encode(seq: bytes | str | np.ndarray) -> np.ndarray:
    """uint8 codes 0-3 for A/C/G/T (either case), SEP for anything else."""
    if isinstance(seq, str):
        seq = seq.encode("ascii", "replace")
    arr = np.frombuffer(seq, dtype=np.uint8) if isinstance(seq, (bytes, bytearray)) else np.asarray(seq, np.uint8)
    return _CODES[arr]


def letters(codes: np.ndarray) -> bytes:
    """The upper-case text of a code buffer (SEP as 'N')."""
    return _LETTERS[np.minimum(codes, SEP)].tobytes()


def _windows(codes: np.ndarray, k: int) -> np.ndarray:
    """The 2-bit packed value of every window of length k (len(codes) - k + 1 of them), by doubling."""
    n = len(codes)
    cur, span = codes.astype(np.uint64), 1        # values of windows of length `span`: n - span + 1 of them
    out, out_span = None, 0
    rest = k
    while True:
        if rest & 1:
            if out is None:
                out, out_span = cur, span
            else:                                   # append a `span` window after the `out_span` one
                m = n - out_span - span + 1
                out = (out[:m] << np.uint64(2 * span)) | cur[out_span:out_span + m]
                out_span += span
        rest >>= 1
        if not rest:
            return out[:n - k + 1]
        m = n - 2 * span + 1
        cur = (cur[:m] << np.uint64(2 * span)) | cur[span:span + m]
        span *= 2


def canonical_kmers(codes: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(values, starts): the canonical k-mer of every window of `codes` that holds only A/C/G/T, and where each
    window starts. Both strands: min(forward, reverse complement)."""
    n = len(codes)
    if n < k:
        return np.zeros(0, np.uint64), np.zeros(0, np.int64)
    bad = codes >= SEP
    clean = np.where(bad, 0, codes).astype(np.uint8)
    fw = _windows(clean, k)
    # The reverse complement's windows, read from the far end: window i of the forward strand is window
    # n - k - i of the reversed, complemented buffer.
    rc = _windows((3 - clean)[::-1], k)[::-1]
    canon = np.minimum(fw, rc)
    if bad.any():
        nbad = np.concatenate(([0], np.cumsum(bad, dtype=np.int64)))
        ok = nbad[k:] == nbad[:-k]
        starts = np.flatnonzero(ok)
        return canon[starts], starts
    return canon, np.arange(len(canon), dtype=np.int64)


class KmerIndex:
    """The distinct canonical k-mers of a list of sequences, and which sequence holds which.

    keys: sorted unique uint64; offsets/members: sequence r's k-mers are keys[members[offsets[r]:offsets[r+1]]]
    (in the sequence's order, repeats kept); lengths: each sequence's length in bases."""

    def __init__(self, sequences: Sequence[str | bytes], k: int):
        self.k = check_k(k)
        self.lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
        values, counts = [], np.zeros(len(sequences), dtype=np.int64)
        # Rows are hashed in batches joined by a separator: one numpy call per ~1 Mbp, not per 70 bp row.
        batch: list[bytes] = []
        size = 0
        for r, s in enumerate(sequences):
            batch.append(s.encode("ascii", "replace") if isinstance(s, str) else bytes(s))
            size += len(batch[-1]) + 1
            if size >= 1 << 20 or r == len(sequences) - 1:
                first = r - len(batch) + 1
                v, row_counts = self._batch(batch)
                values.append(v)
                counts[first:r + 1] = row_counts
                batch, size = [], 0
        allv = np.concatenate(values) if values else np.zeros(0, np.uint64)
        self.keys, inverse = np.unique(allv, return_inverse=True)
        self.members = inverse.astype(np.int32 if len(self.keys) < 2**31 else np.int64).ravel()
        self.offsets = np.concatenate(([0], np.cumsum(counts)))
        # A one-hash bit filter in front of the sorted keys: a binary search of 1.3 M genome k-mers costs ~370 ms
        # (a cache miss a step), the filter ~30 ms and lets ~1% through to the search (measured: 2.3 M keys,
        # 16 bits a key). Almost every genome k-mer is in no task, so this is most of the streaming cost.
        bits = max(20, int(np.ceil(np.log2(max(len(self.keys), 1) * 16))))
        self._shift = np.uint64(64 - bits)
        table = np.zeros(1 << bits, dtype=bool)
        table[self._hash(self.keys)] = True
        self._filter = np.packbits(table, bitorder="little")

    def _batch(self, seqs: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
        codes = encode(b"\x00".join(seqs))  # \x00 codes as SEP: no k-mer crosses two rows
        values, starts = canonical_kmers(codes, self.k)
        row_starts = np.cumsum([0] + [len(s) + 1 for s in seqs[:-1]])
        rows = np.searchsorted(row_starts, starts, side="right") - 1
        return values, np.bincount(rows, minlength=len(seqs))

    def __len__(self) -> int:
        return len(self.lengths)

    @property
    def counts(self) -> np.ndarray:
        """k-mers (windows of A/C/G/T only) per sequence; 0 for one shorter than k or all N."""
        return np.diff(self.offsets)

    def _hash(self, values: np.ndarray) -> np.ndarray:
        return (values * _GOLDEN) >> self._shift  # Fibonacci hashing: the top bits of value x 2^64/phi

    def lookup(self, values: np.ndarray) -> np.ndarray:
        """Each value's position in `keys`, or -1 where it is not there."""
        out = np.full(len(values), -1, dtype=np.int64)
        if not len(self.keys) or not len(values):
            return out
        h = self._hash(values)
        maybe = np.flatnonzero((self._filter[h >> np.uint64(3)] >> (h & np.uint64(7)).astype(np.uint8)) & 1)
        pos = np.searchsorted(self.keys, values[maybe])
        pos[pos == len(self.keys)] = 0
        found = self.keys[pos] == values[maybe]
        out[maybe[found]] = pos[found]
        return out

    def hits(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(window starts, key positions) of the windows of `codes` whose canonical k-mer is indexed."""
        values, starts = canonical_kmers(codes, self.k)
        pos = self.lookup(values)
        found = pos >= 0
        return starts[found], pos[found]

    def rows_with_all(self, present: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """Of `rows` (default all), those with at least one k-mer and every k-mer marked in `present` (bool per
        key)."""
        rows = np.arange(len(self), dtype=np.int64) if rows is None else rows
        rows = rows[self.offsets[rows + 1] > self.offsets[rows]]
        if not len(rows):
            return rows
        starts, counts = self.offsets[rows], self.offsets[rows + 1] - self.offsets[rows]
        flat = np.repeat(starts - np.concatenate(([0], np.cumsum(counts)[:-1])), counts) + np.arange(counts.sum())
        ok = np.minimum.reduceat(present[self.members[flat]], np.concatenate(([0], np.cumsum(counts)[:-1])))
        return rows[ok.astype(bool)]

    def rows_with_any(self, present: np.ndarray) -> np.ndarray:
        """Bool per sequence: at least one of its k-mers is marked in `present`."""
        marked = present[self.members].astype(np.int64)
        total = np.concatenate(([0], np.cumsum(marked)))
        return total[self.offsets[1:]] > total[self.offsets[:-1]]


def record_hits(seq: bytes, index: KmerIndex, chunk: int = 1 << 23) -> tuple[np.ndarray, np.ndarray]:
    """(starts, key positions) of the windows of a whole record (a chromosome) whose canonical k-mer is indexed,
    by start, computed in 8 Mbp chunks (overlapping by k - 1) so that the uint64 temporaries stay ~0.5 GB even
    for chr1's 248 Mbp."""
    k, starts, keys = index.k, [], []
    for off in range(0, max(len(seq) - k + 1, 0), chunk):
        s, p = index.hits(encode(seq[off:off + chunk + k - 1]))
        starts.append(s + off)
        keys.append(p)
    if not starts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(starts), np.concatenate(keys)


def segment_of_hits(hit_starts: np.ndarray, starts: np.ndarray, ends: np.ndarray, k: int) -> np.ndarray:
    """For each hit window, the segment [start, end) (sorted, disjoint) that holds it whole, or -1."""
    seg = np.searchsorted(starts, hit_starts, side="right") - 1
    inside = (seg >= 0) & (hit_starts + k <= ends[np.maximum(seg, 0)])
    return np.where(inside, seg, -1)


class TokenDecoder:
    """Token ids -> base codes, with one table lookup per shard: what a shard's samples spell, without the
    tokenizer's per-token Python (BPE tokens of a DNA tokenizer are literally their bases; the Fuse decoder
    joins them with nothing)."""

    def __init__(self, tokenizer_file: str | Path):
        from tinydnabert.prep.tokenizer import load_raw_tokenizer

        self.path = str(tokenizer_file)
        vocab = load_raw_tokenizer(tokenizer_file).get_vocab(with_added_tokens=True)
        size = max(vocab.values()) + 1
        width = max(len(t) for t in vocab)
        self.table = np.full((size, width), SEP, dtype=np.uint8)
        self.lengths = np.zeros(size, dtype=np.int64)
        for token, i in vocab.items():
            if token.startswith("<") and token.endswith(">"):
                token = "N"  # a special token spells a separator (shards hold none: shardcheck checks it)
            self.table[i, :len(token)] = encode(token)
            self.lengths[i] = len(token)
        self._cols = np.arange(width)

    def decode(self, samples: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(codes, starts, ends): the samples' bases one after another, a SEP code between two, and where each
        sample lies in the buffer."""
        if not samples:
            return np.zeros(0, np.uint8), np.zeros(0, np.int64), np.zeros(0, np.int64)
        ids = np.concatenate(samples).astype(np.int64)
        spans = self.lengths[ids]
        codes = self.table[ids][self._cols < spans[:, None]]
        tokens = np.fromiter((len(s) for s in samples), dtype=np.int64, count=len(samples))
        bounds = np.concatenate(([0], np.cumsum(spans)))[np.concatenate(([0], np.cumsum(tokens)))]
        lengths = np.diff(bounds)
        starts = bounds[:-1] + np.arange(len(samples))   # one SEP before every sample but the first
        out = np.full(int(lengths.sum()) + len(samples) - 1, SEP, dtype=np.uint8)
        dest = np.repeat(starts - bounds[:-1], lengths) + np.arange(int(lengths.sum()))
        out[dest] = codes
        return out, starts, starts + lengths


class OverlapMatcher:
    """Indexed sequences (a task's rows) against a stream of segments (the pretraining shards), one batch of
    segments at a time: which indexed k-mers the stream holds (`seen`), and which rows lie whole inside one
    segment, on either strand (`contained`, `where`).

    A row can lie inside a segment only if every k-mer of it is in that segment, so a batch checks only the rows
    whose first k-mer it holds and then all of whose k-mers it holds, and confirms each by a substring search (both
    strands) in the segments where its first k-mer is: few rows, and no false positive from a hash. A row longer
    than `max_segment` (the shards' --max-len) is never checked: it cannot lie inside one segment."""

    def __init__(self, index: KmerIndex, sequences: Sequence[str], max_segment: int | None = None):
        from tinydnabert.prep.segment import reverse_complement

        self.index = index
        self.seen = np.zeros(len(index.keys), dtype=bool)
        self.contained = np.zeros(len(index), dtype=bool)
        self.where: dict[int, str] = {}
        self._present = np.zeros(len(index.keys), dtype=bool)
        counts = index.counts
        self._anchor = np.where(counts > 0, index.members[np.minimum(index.offsets[:-1], len(index.members) - 1)]
                                if len(index.members) else 0, -1)
        fits = counts > 0
        if max_segment is not None:
            fits &= index.lengths <= max_segment
        self._checkable = np.flatnonzero(fits)
        self._seqs = sequences
        self._rc = reverse_complement

    def feed(self, codes: np.ndarray, starts: np.ndarray, ends: np.ndarray, names: Sequence[str]) -> None:
        """One batch of segments: `codes` (TokenDecoder.decode's buffer), segment i = codes[starts[i]:ends[i]],
        called names[i]."""
        hit_starts, hit_keys = self.index.hits(codes)
        if not len(hit_keys):
            return
        self.seen[hit_keys] = True
        self._present[hit_keys] = True
        try:
            rows = self._checkable[~self.contained[self._checkable]]
            rows = rows[self._present[self._anchor[rows]]]
            rows = self.index.rows_with_all(self._present, rows)
        finally:
            self._present[hit_keys] = False
        if not len(rows):
            return
        seg = segment_of_hits(hit_starts, starts, ends, self.index.k)
        order = np.argsort(hit_keys, kind="stable")
        by_key = hit_keys[order]
        text = letters(codes)
        for r in rows.tolist():
            a = self._anchor[r]
            segs = np.unique(seg[order[np.searchsorted(by_key, a):np.searchsorted(by_key, a, side="right")]])
            fw = self._seqs[r].upper().encode("ascii", "replace")
            rc = self._rc(fw.decode("ascii")).encode("ascii")
            for s in segs[segs >= 0].tolist():
                piece = text[starts[s]:ends[s]]
                if fw in piece or rc in piece:
                    self.contained[r] = True
                    self.where[r] = names[s]
                    break

    def sharing(self) -> np.ndarray:
        """Bool per row: at least one of its k-mers was seen."""
        return self.index.rows_with_any(self.seen)

"""Embeddings of DNA sequences from a trained encoder: one vector per input sequence, whatever its length.

    tinydnabert embed --model RUN/export --input seqs.fa --out emb.npy
    tinydnabert embed --model RUN/export --input region.fa --out emb.npy --strands both --stride 192
    tinydnabert embed --model RUN/export --input task/test.csv --out emb.npy --pooling cls --layer 4

Input: FASTA (plain or gzip; one vector per record), CSV with a `sequence` column, or TSV with one
(a header line) — e.g. a GUE `test.csv` or the NT revised TSV. Output, written atomically:
    OUT.npy          float32 [n_sequences, hidden], row i = input sequence i, in input order
    OUT.index.csv    index,name,bases,tokens,truncated,windows — the row's source (FASTA name or file line), its
                     tokens incl. one <s> </s> (the ones used under --long truncate), and the windows it pooled

Long sequences (--long windows, the default): a sequence is tokenized once, whole; its token ids are cut into
overlapping windows of --window tokens (<s> + window-2 sequence tokens + </s>; default the model's limit) whose
starts are --stride sequence tokens apart (default half a window), the last window flush with the sequence's end.
Every token is pooled exactly once, from the window whose centre is nearest to it (where it is furthest from an
edge: the most context on both sides; a tie goes to the earlier window), so with the default stride every pooled
token has at least a quarter window of context on each side (except at the sequence's own ends), at twice the
forward passes of back-to-back windows. A sequence that fits one window is embedded exactly as before.
--long truncate keeps the first window-2 tokens (+ </s>) instead.

Pooling: `mean` (default) averages the hidden states of the sequence's own tokens (not <s>, </s> or padding)
under the rule above; `cls` takes the <s> position — over several windows, the mean of the windows' <s>
vectors. `--layer N` reads hidden state N (0 = the embeddings, the default -1 = the last layer).
--strands both: the mean of the vector of the sequence and of its reverse complement (A<->T, C<->G, N->N, the
IUPAC codes to theirs), each pooled as above; the index's windows then counts both strands' windows.
Windows are length-sorted into batches (less padding) and their vectors put back in input order.
--model: an export, a pretraining checkpoint (exported to a temporary directory first) — the loader and the
precision policy are eval/encoder.py's: on a GPU bf16 autocast (--no-bf16: fp32); vectors are stored as float32.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from tinydnabert.config import add_dataclass_args, dataclass_from_args
from tinydnabert.console import print0
from tinydnabert.errors import InputError
from tinydnabert.eval.common import STRANDS, reverse_complement
from tinydnabert.eval.encoder import (
    DeviceSettings,
    autocast_for,
    build_encoder,
    encoder_spec,
    resolve_model_dir,
    token_limit,
)
from tinydnabert.io import atomic_write_text, open_text

POOLINGS = ("mean", "cls")
LONG = ("windows", "truncate")  # --long: what a sequence longer than one window gets
INDEX_COLUMNS = ("index", "name", "bases", "tokens", "truncated", "windows")  # OUT.index.csv; new ones go last


@dataclass
class EmbedConfig(DeviceSettings):
    model: str = field(metadata={"help": "HF export directory (RUN/export): config.json + weights + tokenizer; "
                                         "or a pretraining checkpoint directory"})
    input: str = field(metadata={"help": "FASTA, CSV or TSV file of sequences (CSV/TSV: a 'sequence' column)"})
    out: str = field(metadata={"help": "output .npy path; OUT.index.csv is written beside it"})
    pooling: str = field(default="mean", metadata={
        "help": "mean: average over the sequence's own tokens; cls: the <s> position (several windows: the mean of "
                "their <s>)", "choices": list(POOLINGS)})
    layer: int = field(default=-1, metadata={"help": "hidden state to read: 0 = embeddings, -1 = last layer"})
    batch_size: int = field(default=64, metadata={"help": "windows (sequences) per forward pass"})
    window: int = field(default=0, metadata={
        "help": "tokens per window incl. <s> </s> (0 = the model's limit); a longer sequence is cut into overlapping "
                "windows (--long windows) or truncated to one (--long truncate); --max-length is the old name"})
    stride: int = field(default=0, metadata={
        "help": "sequence tokens between the starts of consecutive windows (0 = half a window: each pooled token "
                "has at least a quarter window of context on both sides)"})
    long: str = field(default="windows", metadata={
        "help": "windows: every token of a long sequence, by overlapping windows; truncate: its first window only",
        "choices": list(LONG)})
    strands: str = field(default="forward", metadata={
        "help": "forward: the sequence as given; both: the mean of its vector and its reverse complement's",
        "choices": list(STRANDS)})
    progress: bool = field(default=True, metadata={"help": "show a progress bar"})
    overwrite: bool = field(default=False, metadata={"help": "replace an existing OUT"})

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.window < 0 or self.stride < 0:
            raise InputError("embed: --batch-size must be >= 1, --window and --stride >= 0 (0 = automatic)")
        if not self.out.endswith(".npy"):
            raise InputError(f"embed: --out {self.out!r} must end in .npy")


def index_path(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(out.name.removesuffix(".npy") + ".index.csv")


def read_sequences(path: str | Path) -> list[tuple[str, str]]:
    """(name, sequence) of every input sequence, in file order: FASTA records, or CSV/TSV rows."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: input file not found; pass a FASTA, CSV or TSV file with --input")
    name = p.name.lower().removesuffix(".gz")
    if name.endswith((".csv", ".tsv")):
        delimiter = "\t" if name.endswith(".tsv") else ","
        with open_text(p) as f:
            rows = csv.reader(f, delimiter=delimiter)
            header = [h.strip().lower() for h in next(rows, [])]
            if "sequence" not in header:
                raise InputError(f"{p}: no 'sequence' column in the header {header[:8]}; name the column "
                                 "'sequence' (or give a FASTA file)")
            si = header.index("sequence")
            ni = header.index("name") if "name" in header else None
            out = []
            for lineno, row in enumerate(rows, start=2):
                if not row or all(not c.strip() for c in row):
                    continue
                if si >= len(row) or not row[si].strip():
                    raise InputError(f"{p}, line {lineno}: no sequence in this row; fix or remove it")
                label = row[ni] if ni is not None and ni < len(row) else f"line{lineno}"
                out.append((label, row[si].strip().upper()))
    else:
        from tinydnabert.prep.fasta import iter_records

        out = [(r.name, r.seq.decode("ascii")) for r in iter_records([str(p)])]
    if not out:
        raise InputError(f"{p}: no sequences")
    return out


def window_starts(n: int, width: int, stride: int) -> list[int]:
    """Where each window of `width` sequence tokens starts over a sequence of `n` tokens: 0, stride, 2*stride, ...
    and the last one flush with the end (so every window is full); [0] when the sequence fits one window."""
    if n <= width:
        return [0]
    return list(range(0, n - width, stride)) + [n - width]


def owned_ranges(starts: list[int], n: int, width: int) -> list[tuple[int, int]]:
    """[lo, hi) of the sequence tokens each window pools: every token exactly once, in the window whose centre is
    nearest (furthest from an edge); a tie goes to the earlier window. Windows are equally wide, so the cut
    between two neighbours is the midpoint of their centres. Every window owns at least one token."""
    w = min(width, n)
    cuts = [0] + [(a + b + w - 1) // 2 + 1 for a, b in zip(starts, starts[1:])] + [n]
    return list(zip(cuts, cuts[1:]))


class Embedded(NamedTuple):
    vectors: np.ndarray  # float32 [n, hidden], row i = sequence i
    tokens: np.ndarray   # tokens of each (forward) sequence incl. one <s> </s>, before any truncation [n]
    windows: np.ndarray  # windows each row pooled (both strands' under strands="both") [n]


def embed(model, tok, seqs: list[str], pooling: str = "mean", layer: int = -1, batch_size: int = 64,
          window: int = 0, stride: int = 0, long: str = "windows", strands: str = "forward",
          progress: bool = False, bf16: bool = True, names: list[str] | None = None) -> Embedded:
    """One vector per sequence, in input order (module docstring: windows, pooling, strands). window: tokens per
    window incl. <s> </s> (0 = the model's limit); stride: sequence tokens between window starts (0 = half the
    window's); names: what an error about sequence i calls it."""
    c = model.config
    n_layers = c.num_hidden_layers
    if not -(n_layers + 1) <= layer <= n_layers:
        raise InputError(f"embed: --layer {layer} out of range for a {n_layers}-layer model (0..{n_layers}, or -1)")
    if pooling not in POOLINGS or long not in LONG or strands not in STRANDS:
        raise InputError(f"embed: pooling {pooling!r}, long {long!r}, strands {strands!r}: use one of "
                         f"{POOLINGS}, {LONG}, {STRANDS}")
    limit = token_limit(c, window)
    if window > limit:
        raise InputError(f"embed: --window {window} exceeds what the model's position table allows ({limit} tokens); "
                         f"use <= {limit} (0 = that limit)")
    if limit < 3:
        raise InputError(f"embed: --window {window} leaves no room for a sequence token beside <s> </s>; use >= 3")
    width = limit - 2
    stride = stride or max(1, width // 2)
    if stride > width:
        raise InputError(f"embed: --stride {stride} is wider than a window's {width} sequence tokens (--window "
                         f"{limit} minus <s> </s>): tokens between windows would never be seen; use <= {width}")
    if strands == "both":
        names = names or [f"sequence {i + 1}" for i in range(len(seqs))]
        seqs = seqs + [reverse_complement(s, where) for s, where in zip(seqs, names)]
    vectors, tokens, windows = _pool(model, tok, seqs, pooling, layer, batch_size, limit, stride, long,
                                     progress, bf16)
    if strands == "both":  # the mean of the two strands' vectors (float64, then stored as float32)
        n = len(seqs) // 2
        both = (vectors[:n].astype(np.float64) + vectors[n:]) / 2
        return Embedded(both.astype(np.float32), tokens[:n], windows[:n] + windows[n:])
    return Embedded(vectors, tokens, windows)


def _pool(model, tok, seqs: list[str], pooling: str, layer: int, batch_size: int, limit: int, stride: int,
          long: str, progress: bool, bf16: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(vectors float32 [n, hidden], tokens [n], windows [n]) of `seqs` as they are (one strand)."""
    import torch
    from tqdm import tqdm

    device = next(model.parameters()).device
    c = model.config
    width = limit - 2
    full = tok(seqs, add_special_tokens=True, verbose=False)["input_ids"]  # <s> ... </s>: tokenized once, whole
    # One piece per window: (row, first sequence token, its length, [lo, hi) of its pooled positions in the
    # window). A sequence that fits (or is truncated) is one piece: <s> + its first `width` tokens + </s>.
    pieces: list[tuple[int, int, int, int, int]] = []
    for i, r in enumerate(full):
        n = len(r) - 2
        if n <= width or long == "truncate":
            m = min(n, width)
            pieces.append((i, 0, m, 1, m + 1))
            continue
        starts = window_starts(n, width, stride)
        pieces += [(i, a, width, lo - a + 1, hi - a + 1) for a, (lo, hi) in zip(starts, owned_ranges(starts, n, width))]
    lengths = np.array([p[2] + 2 for p in pieces])
    order = np.argsort(lengths, kind="stable")  # length-sorted batches pad less
    sums = np.zeros((len(seqs), c.hidden_size), dtype=np.float64)
    counts = np.zeros(len(seqs), dtype=np.int64)
    windows = np.bincount([p[0] for p in pieces], minlength=len(seqs))
    amp = autocast_for(device, bf16)
    with torch.no_grad(), amp(), tqdm(total=len(pieces), disable=not progress, desc="embed", unit="window") as bar:
        for s in range(0, len(order), batch_size):
            chunk = [pieces[k] for k in order[s:s + batch_size]]
            x = torch.full((len(chunk), int(lengths[order[s:s + batch_size]].max())), c.pad_token_id,
                           dtype=torch.long)
            own = torch.zeros_like(x)
            for j, (i, a, m, lo, hi) in enumerate(chunk):
                r = full[i]
                x[j, :m + 2] = torch.tensor([r[0], *r[1 + a:1 + a + m], r[-1]])
                own[j, lo:hi] = 1
            mask = (x != c.pad_token_id).long()
            x, mask, own = x.to(device), mask.to(device), own.to(device)
            h = model(input_ids=x, attention_mask=mask, output_hidden_states=True).hidden_states[layer].float()
            rows = [p[0] for p in chunk]
            if pooling == "cls":  # a window's <s>; over several windows their mean
                np.add.at(sums, rows, h[:, 0].cpu().numpy())
                np.add.at(counts, rows, 1)
            else:  # the sequence's own tokens, each from the one window that owns it (not <s>, </s> or padding)
                own = torch.where(own.sum(1, keepdim=True) > 0, own, mask)  # an empty sequence: all it has
                np.add.at(sums, rows, (h * own.unsqueeze(-1)).sum(1).cpu().numpy())
                np.add.at(counts, rows, own.sum(1).cpu().numpy())
            bar.update(len(chunk))
    # float64 sums divided once: for a one-window sequence exactly the float32 mean of before (a correctly rounded
    # quotient either way), and no float32 drift over the thousands of windows of a long region
    return (sums / counts[:, None]).astype(np.float32), np.array([len(r) for r in full]), windows


def embed_sequences(model, tok, seqs: list[str], pooling: str = "mean", layer: int = -1, batch_size: int = 64,
                    max_length: int = 0, progress: bool = False, bf16: bool = True, *, long: str = "windows",
                    stride: int = 0, strands: str = "forward") -> tuple[np.ndarray, np.ndarray]:
    """(vectors float32 [n, hidden], tokens per sequence incl. <s> </s> BEFORE truncation [n]), in input order:
    `embed` with `max_length` as the window (0 = the model's limit)."""
    e = embed(model, tok, seqs, pooling, layer, batch_size, max_length, stride, long, strands, progress, bf16)
    return e.vectors, e.tokens


def run_embed(cfg: EmbedConfig) -> Path:
    out = Path(cfg.out)
    idx_path = index_path(out)
    if (out.exists() or idx_path.exists()) and not cfg.overwrite:
        raise InputError(f"{out}: already exists; pass --overwrite to replace it (and {idx_path.name})")
    from tinydnabert.pretrain.distributed import pick_device

    device = pick_device(cfg.device, "embed")
    records = read_sequences(cfg.input)
    with tempfile.TemporaryDirectory() as work:
        spec = encoder_spec(cfg.model, None, resolve_model_dir(cfg.model, Path(work)))
        model = build_encoder(spec, 0, device)
    e = embed(model, spec.tokenizer, [s for _, s in records], cfg.pooling, cfg.layer, cfg.batch_size, cfg.window,
              cfg.stride, cfg.long, cfg.strands, progress=cfg.progress, bf16=cfg.bf16,
              names=[f"{cfg.input}: {name}" for name, _ in records])
    limit = token_limit(model.config, cfg.window)
    cut = cfg.long == "truncate"
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(INDEX_COLUMNS)
    for i, ((name, seq), n, k) in enumerate(zip(records, e.tokens.tolist(), e.windows.tolist())):
        w.writerow([i, name, len(seq), min(n, limit) if cut else n, int(cut and n > limit), k])
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}.npy")
    try:
        np.save(tmp, e.vectors)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    atomic_write_text(idx_path, buf.getvalue())
    many = int((e.tokens > limit).sum())
    print0(f"wrote {out} ({e.vectors.shape[0]} x {e.vectors.shape[1]} float32, {cfg.pooling} pooling, layer "
           f"{cfg.layer}, strands {cfg.strands}; {many} sequence(s) over {limit} tokens "
           f"{'truncated' if cut else f'in {int(e.windows.sum())} windows in all'}) and {idx_path}")
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_dataclass_args(parser, EmbedConfig)
    # the flag's name before windows existed (then it truncated): existing commands keep running
    parser.add_argument("--max-length", dest="window", type=int, default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def main(args: argparse.Namespace) -> int:
    run_embed(dataclass_from_args(EmbedConfig, args))
    return 0


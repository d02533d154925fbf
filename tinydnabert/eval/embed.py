"""Embeddings of DNA sequences from a trained encoder: one vector per input sequence.

    tinydnabert embed --model RUN/export --input seqs.fa --out emb.npy
    tinydnabert embed --model RUN/export --input task/test.csv --out emb.npy --pooling cls --layer 4

Input: FASTA (plain or gzip; one vector per record), CSV with a `sequence` column, or TSV with one
(a header line) — e.g. a GUE `test.csv` or the NT revised TSV. Output, written atomically:
    OUT.npy          float32 [n_sequences, hidden], row i = input sequence i, in input order
    OUT.index.csv    index,name,bases,tokens,truncated — the row's source (FASTA name or file line)

Pooling: `mean` (default) averages the hidden states of the sequence's own tokens (not <s>, </s> or
padding), `cls` takes the <s> position. `--layer N` reads hidden state N (0 = the embeddings, the
default -1 = the last layer). Batches are length-sorted (less padding) and put back in input order.
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

import numpy as np

from tinydnabert.config import add_dataclass_args, dataclass_from_args
from tinydnabert.console import print0
from tinydnabert.errors import InputError
from tinydnabert.eval.encoder import autocast_for, build_encoder, encoder_spec, resolve_model_dir, token_limit
from tinydnabert.io import atomic_write_text, open_text


@dataclass
class EmbedConfig:
    model: str = field(metadata={"help": "HF export directory (RUN/export): config.json + weights + tokenizer; "
                                         "or a pretraining checkpoint directory"})
    input: str = field(metadata={"help": "FASTA, CSV or TSV file of sequences (CSV/TSV: a 'sequence' column)"})
    out: str = field(metadata={"help": "output .npy path; OUT.index.csv is written beside it"})
    pooling: str = field(default="mean", metadata={
        "help": "mean: average over the sequence's own tokens; cls: the <s> position", "choices": ["mean", "cls"]})
    layer: int = field(default=-1, metadata={"help": "hidden state to read: 0 = embeddings, -1 = last layer"})
    batch_size: int = field(default=64, metadata={"help": "sequences per forward pass"})
    max_length: int = field(default=0, metadata={
        "help": "tokens per sequence incl. <s> </s>; longer ones are truncated (0 = the model's limit)"})
    device: str = field(default="auto", metadata={"help": "auto (cuda if available), cpu or cuda",
                                                  "choices": ["auto", "cpu", "cuda"]})
    bf16: bool = field(default=True, metadata={"help": "bf16 autocast on GPU (CPU always runs fp32)"})
    progress: bool = field(default=True, metadata={"help": "show a progress bar"})
    overwrite: bool = field(default=False, metadata={"help": "replace an existing OUT"})

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.max_length < 0:
            raise InputError("embed: --batch-size must be >= 1 and --max-length >= 0")
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


def embed_sequences(model, tok, seqs: list[str], pooling: str = "mean", layer: int = -1, batch_size: int = 64,
                    max_length: int = 0, progress: bool = False, bf16: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(vectors float32 [n, hidden], tokens per sequence incl. <s> </s> BEFORE truncation [n]), in input order."""
    import torch
    from tqdm import tqdm

    device = next(model.parameters()).device
    c = model.config
    limit = token_limit(c, max_length)
    n_layers = c.num_hidden_layers
    if not -(n_layers + 1) <= layer <= n_layers:
        raise InputError(f"embed: --layer {layer} out of range for a {n_layers}-layer model (0..{n_layers}, or -1)")
    full = tok(seqs, add_special_tokens=True)["input_ids"]
    ids = [r if len(r) <= limit else r[:limit - 1] + r[-1:] for r in full]  # keep </s> last, as truncation does
    lengths = np.array([len(r) for r in ids])
    order = np.argsort(lengths, kind="stable")  # length-sorted batches pad less
    out = np.zeros((len(seqs), c.hidden_size), dtype=np.float32)
    amp = autocast_for(device, bf16)
    with torch.no_grad(), amp(), tqdm(total=len(seqs), disable=not progress, desc="embed", unit="seq") as bar:
        for s in range(0, len(order), batch_size):
            chunk = order[s:s + batch_size]
            width = int(lengths[chunk].max())
            x = torch.full((len(chunk), width), c.pad_token_id, dtype=torch.long)
            for j, i in enumerate(chunk):
                x[j, :lengths[i]] = torch.tensor(ids[i])
            mask = (x != c.pad_token_id).long()
            x, mask = x.to(device), mask.to(device)
            h = model(input_ids=x, attention_mask=mask, output_hidden_states=True).hidden_states[layer].float()
            if pooling == "cls":
                v = h[:, 0]
            else:  # the sequence's own tokens: not <s> (position 0), not </s> (last real position), not padding
                own = mask.clone()
                own[:, 0] = 0
                own[torch.arange(len(chunk), device=device), mask.sum(1) - 1] = 0
                own = torch.where(own.sum(1, keepdim=True) > 0, own, mask)  # an empty sequence: all it has
                v = (h * own.unsqueeze(-1)).sum(1) / own.sum(1, keepdim=True)
            out[chunk] = v.cpu().numpy()
            bar.update(len(chunk))
    return out, np.array([len(r) for r in full])


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
    vectors, tokens = embed_sequences(model, spec.tokenizer, [s for _, s in records], cfg.pooling, cfg.layer,
                                      cfg.batch_size, cfg.max_length, progress=cfg.progress, bf16=cfg.bf16)
    limit = token_limit(model.config, cfg.max_length)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["index", "name", "bases", "tokens", "truncated"])
    for i, ((name, seq), n) in enumerate(zip(records, tokens.tolist())):
        w.writerow([i, name, len(seq), min(n, limit), int(n > limit)])
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}.npy")
    try:
        np.save(tmp, vectors)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    atomic_write_text(idx_path, buf.getvalue())
    print0(f"wrote {out} ({vectors.shape[0]} x {vectors.shape[1]} float32, {cfg.pooling} pooling, layer "
           f"{cfg.layer}) and {idx_path}")
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_dataclass_args(parser, EmbedConfig)


def main(args: argparse.Namespace) -> int:
    run_embed(dataclass_from_args(EmbedConfig, args))
    return 0


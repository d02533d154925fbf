"""Zero-shot variant scores from the masked LM: how much more (or less) likely the model finds the ALT haplotype
than the REF one, for SNVs, multi-allelic records (one row per ALT) and indels. No labels.

    tinydnabert score-variants --model RUN/export --fasta grch37_chr20.fa.gz --vcf calls.vcf.gz --out scores.tsv

The method, the cost per variant and the output columns are in METHOD below (it is the command's --help) and in
docs/use.md. Code map: plan_variants (VCF x FASTA -> one Variant per (record, ALT): checks, window, status),
strand_terms (which masked inputs a variant needs on one strand), MaskedLM (batched, deduplicated forward passes),
score_variants (both together, in position order, so variants that share a window share its passes).
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tinydnabert.config import add_dataclass_args, dataclass_from_args
from tinydnabert.console import eprint, print0
from tinydnabert.errors import InputError
from tinydnabert.eval.encoder import DeviceSettings, autocast_for, load_tokenizer_dir, resolve_model_dir, token_limit
from tinydnabert.io import atomic_write_text
from tinydnabert.prep.vcf import Reference, VcfRecord, is_symbolic, read_vcf

METHOD = """\
method (see docs/use.md):
  Each variant gets a window of --window bp of the reference (REF window) and the same window with REF replaced
  by ALT (ALT window; same flanks, so an indel changes its length). Windows are tiles of a fixed grid (every
  window/2 bp): the variant goes in the tile whose middle half holds it, so it has >= window/4 bp of context on
  each side, its window depends on its position only, and variants in one tile share the REF window (its
  tokens, and its masked passes where they coincide: all of them with --pll-tokens window).
  Both windows are tokenized on their own (BPE puts different token boundaries around the variant).

  score  the pseudo-log-likelihood difference PLL(ALT window) - PLL(REF window), PLL = sum over the scored
         tokens, each masked in turn, of log p(the true token). Scored tokens (--pll-tokens variant): those
         that differ between the two tokenizations, plus every token overlapping the variant (for an indel in
         a repeat, every position the indel could be placed at), extended until the tokens left out on each
         side are identical, in the same order, in both windows. Both sums then cover the same bases of
         reference context, and the tokens left out are the same tokens in the same places. An insertion's REF
         side (or a deletion's ALT side) scores the tokens touching the junction. Result: independent of how a
         VCF writes an indel (left-aligned or not). --pll-tokens window sums over every token of both windows.
  llr    where REF and ALT tokenize with the same token boundaries on every scored strand (an SNV or MNP
         that does not move a boundary; how often depends on the vocabulary): mask the differing
         tokens together, one forward pass, llr = sum of log p(ALT token) - log p(REF token) at those
         positions. The masked input is the same for REF and ALT, so swapping them negates it exactly; for a
         one-token difference it equals score. Empty elsewhere (indels, a boundary shift).
  --strands both (default): the reverse complement of both windows is scored the same way; the mean is
         reported.
cost per variant and strand (forward passes of one window, batched; identical masked inputs run once):
  SNV changing one token at the same boundaries: 1. Otherwise n_ref + n_alt (the scored tokens on each side,
  typically 2-6) (+1 for llr when boundaries match). --pll-tokens window: ~2 x tokens per window
  (~2 x 170 at 512 bp with a 128-token vocabulary). Times 2 with --strands both.
output (TSV, written atomically, one row per VCF record and ALT, in VCF order):
  chrom pos id ref alt (as in the VCF), score, llr, window (start-end on the FASTA contig, 1-based inclusive),
  strands, tokens (scored REF/ALT tokens, forward strand), status: ok, or why it was skipped: symbolic_alt
  (<DEL>, *, breakends), no_alt (ALT '.'), not_a_variant (ALT = REF), contig_missing, ref_mismatch (with
  --on-mismatch skip), too_long (an allele or its repeat longer than window/2), n_in_window (a base that is not
  A C G T in either window), too_many_tokens (a window longer than the model's token limit).
"""

STATUSES = ("ok", "symbolic_alt", "no_alt", "not_a_variant", "contig_missing", "ref_mismatch", "too_long",
            "n_in_window", "too_many_tokens")
COLUMNS = ("chrom", "pos", "id", "ref", "alt", "score", "llr", "window", "strands", "tokens", "status")
_COMPLEMENT = str.maketrans("ACGTN", "TGCAN")


@dataclass
class VariantConfig(DeviceSettings):
    model: str = field(metadata={"help": "HF export directory (RUN/export) with its masked-LM head, or a "
                                         "pretraining checkpoint (exported to a temporary directory first)"})
    fasta: str = field(metadata={"help": "the reference FASTA the VCF was called against: BGZF with .fai/.gzi "
                                         "(random access), or plain"})
    vcf: str = field(metadata={"help": "input VCF, plain or .gz (only the 8 fixed columns are read)"})
    out: str = field(metadata={"help": "output TSV, one row per VCF record and ALT"})
    window: int = field(default=512, metadata={"help": "bp of reference around each variant; its tokens must fit "
                                                       "the model (incl. <s> </s>)"})
    strands: str = field(default="both", metadata={"help": "both: mean of the forward and reverse-complement "
                                                           "scores; forward: the forward strand only",
                                                   "choices": ["both", "forward"]})
    pll_tokens: str = field(default="variant", metadata={
        "help": "tokens the PLL sums over: variant (the differing tokens around the variant) or window (all)",
        "choices": ["variant", "window"]})
    on_mismatch: str = field(default="error", metadata={
        "help": "a REF that differs from the FASTA: error (exit 2, naming the record) or skip (status "
                "ref_mismatch)", "choices": ["error", "skip"]})
    batch_size: int = field(default=64, metadata={"help": "masked windows per forward pass"})
    progress: bool = field(default=True, metadata={"help": "show a progress bar"})
    overwrite: bool = field(default=False, metadata={"help": "replace an existing --out"})

    def __post_init__(self) -> None:
        if self.window < 32:
            raise InputError(f"score-variants: --window {self.window} bp is too short; use >= 32 (default 512)")
        if self.batch_size < 1:
            raise InputError("score-variants: --batch-size must be >= 1")


@dataclass
class Variant:
    """One (record, ALT) of the VCF: where it is scored and, once scored, its result."""

    record: VcfRecord
    alt: str
    alt_index: int
    status: str = "ok"
    contig: str = ""          # the FASTA's name for record.chrom
    start: int = 0            # the window on the contig, 0-based half-open
    end: int = 0
    ref_seq: str = ""         # the REF window
    alt_seq: str = ""         # the ALT window: the same flanks, REF replaced by ALT
    span: tuple[int, int, int] = (0, 0, 0)  # where the windows differ: [s, e_ref) of ref_seq, [s, e_alt) of alt_seq
    score: float | None = None
    llr: float | None = None
    tokens: str = ""          # scored REF/ALT tokens on the forward strand

    @property
    def window(self) -> str:
        return f"{self.start + 1}-{self.end}" if self.end else ""


# ------------------------------------------------------------------------------------------------ planning

def revcomp(seq: str) -> str:
    return seq.translate(_COMPLEMENT)[::-1]


def _prefix(a, b) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def diff_span(r: str, a: str) -> tuple[int, int, int]:
    """(s, e_r, e_a): r[s:e_r] and a[s:e_a] are where the two sequences differ, over every way to place the
    change: for an indel in a repeat, from its left-aligned to its right-aligned position (so the span is the
    same however the VCF wrote it). r[:s] == a[:s] and r[e_r:] == a[e_a:]."""
    n = min(len(r), len(a))
    s1 = min(_prefix(reversed(r), reversed(a)), n)           # left-aligned: trim the common suffix first
    left = _prefix(r[:len(r) - s1], a[:len(a) - s1])
    l2 = min(_prefix(r, a), n)                                # right-aligned: trim the common prefix first
    s2 = _prefix(reversed(r[l2:]), reversed(a[l2:]))
    return left, len(r) - s2, len(a) - s2


def place(v: Variant, ref: Reference, window: int) -> None:
    """Set v's window (or its skip status). The REF allele has been checked against the FASTA."""
    rec, contig, length = v.record, v.contig, ref.lengths[v.contig]
    half, quarter = window // 2, window // 4
    if max(len(rec.ref), len(v.alt)) > half:
        v.status = "too_long"
        return
    v0, v1 = rec.pos - 1, rec.pos - 1 + len(rec.ref)
    ps, pe = max(0, v0 - window), min(length, v1 + window)   # a wider window, to find the whole repeat
    r = ref.fetch(contig, ps, pe)
    a = r[:v0 - ps] + v.alt + r[v1 - ps:]
    s, er, ea = diff_span(r, a)
    if (s == 0 and ps > 0) or (er == len(r) and pe < length) or er - s > half:
        v.status = "too_long"   # the repeat the indel sits in is longer than the window can hold
        return
    centre = ps + (s + er) // 2
    v.start = max(0, (centre - quarter) // half) * half       # the tile whose middle half holds the centre
    v.end = min(length, v.start + window)
    v.ref_seq = ref.fetch(contig, v.start, v.end)
    off = v.start - ps                                        # the span lies inside the tile (it is <= half long)
    v.alt_seq = v.ref_seq[:s - off] + a[s:ea] + v.ref_seq[er - off:]
    v.span = (s - off, er - off, ea - off)
    if set(v.ref_seq) - set("ACGT") or set(v.alt_seq) - set("ACGT"):
        v.status = "n_in_window"


def plan_variants(records: list[VcfRecord], ref: Reference, window: int, on_mismatch: str = "error",
                  vcf: str | Path = "VCF") -> list[Variant]:
    """One Variant per (record, ALT), in VCF order, placed or with its skip status. A REF that is not what the
    FASTA holds is an InputError naming the record (line, chrom:pos, both alleles) unless on_mismatch='skip'."""
    out: list[Variant] = []
    mismatches: list[str] = []
    missing: Counter[str] = Counter()
    for rec in records:
        contig = ref.resolve(rec.chrom)
        wrong = ref.mismatch(rec, contig) if contig else None
        if wrong and on_mismatch == "error":
            n = sum(1 for r in records if (c := ref.resolve(r.chrom)) and ref.mismatch(r, c))
            more = f" ({n - 1} more record(s) mismatch too)" if n > 1 else ""
            raise InputError(f"{vcf}, line {rec.line}: {wrong} ({ref.path}){more}; is the VCF called against this "
                             f"reference (same assembly)? Pass --on-mismatch skip to score the other records")
        for i, alt in enumerate(rec.alts):
            v = Variant(rec, alt, i, contig=contig or "")
            if alt == ".":
                v.status = "no_alt"
            elif is_symbolic(alt):
                v.status = "symbolic_alt"
            elif contig is None:
                v.status = "contig_missing"
                missing[rec.chrom] += 1
            elif wrong:
                v.status = "ref_mismatch"
            elif alt == rec.ref:
                v.status = "not_a_variant"
            else:
                place(v, ref, window)
            out.append(v)
        if wrong:
            mismatches.append(f"{rec.where}: {wrong}")
    if missing and all(v.status in ("contig_missing", "symbolic_alt", "no_alt") for v in out):
        raise InputError(f"{vcf}: none of its contigs ({', '.join(sorted(missing))}) is in {ref.path}, which has: "
                         f"{ref.names_shown()}; pass the FASTA the VCF was called against")
    if missing:
        eprint(f"note: {sum(missing.values())} variant(s) on contigs {ref.path} does not have "
               f"({', '.join(sorted(missing))}): status contig_missing; it has: {ref.names_shown()}")
    for m in mismatches[:10]:
        eprint(f"note: skipped (ref_mismatch) {m}")
    if len(mismatches) > 10:
        eprint(f"note: ... and {len(mismatches) - 10} more ref_mismatch record(s)")
    return out


# ------------------------------------------------------------------------------------------------ tokens to score

Term = tuple[tuple[int, ...], int, int]   # (masked input ids, row among its masked positions, target token id)


def _masked(ids: list[int], positions, mask_id: int) -> tuple[int, ...]:
    x = list(ids)
    for i in positions:
        x[i] = mask_id
    return tuple(x)


def _overlapping(offsets, start: int, end: int) -> list[int]:
    if end <= start:  # nothing of this side changed (an insertion's REF, a deletion's ALT): the junction's tokens
        start, end = start - 1, start + 1
    return [i for i, (s, e) in enumerate(offsets) if e > s and s < end and e > start]


def strand_terms(enc_r, enc_a, span: tuple[int, int, int], scope: str, mask_id: int):
    """What one strand of a variant needs: (REF terms, ALT terms, LLR terms or None, (n_ref, n_alt) scored tokens).
    enc_* = (ids, offsets) of a window with <s> </s>; span from diff_span on that strand's windows."""
    (ids_r, offs_r), (ids_a, offs_a) = enc_r, enc_a
    s, er, ea = span
    over_r, over_a = _overlapping(offs_r, s, er), _overlapping(offs_a, s, ea)
    nr, na = len(ids_r), len(ids_a)
    same_left = _prefix(ids_r, ids_a)
    same_right = min(_prefix(reversed(ids_r), reversed(ids_a)), min(nr, na) - same_left)
    i0 = min(same_left, over_r[0], over_a[0])
    tail = min(same_right, nr - 1 - over_r[-1], na - 1 - over_a[-1])
    i1, j1 = nr - tail, na - tail            # r[:i0] == a[:i0], r[i1:] == a[j1:]: the tokens left out
    ref_pos, alt_pos = (range(1, nr - 1), range(1, na - 1)) if scope == "window" else (range(i0, i1), range(i0, j1))
    ref_terms = [(_masked(ids_r, (i,), mask_id), 0, ids_r[i]) for i in ref_pos]
    alt_terms = [(_masked(ids_a, (j,), mask_id), 0, ids_a[j]) for j in alt_pos]
    llr = None
    if nr == na and offs_r[i0:i1] == offs_a[i0:j1]:   # same boundaries: one masked input serves REF and ALT
        key = _masked(ids_r, range(i0, i1), mask_id)
        llr = [(key, k, ids_r[i], ids_a[i]) for k, i in enumerate(range(i0, i1))]
    return ref_terms, alt_terms, llr, (i1 - i0, j1 - i0)


# ------------------------------------------------------------------------------------------------ the model

def load_masked_lm(model_dir: Path, device):
    """(AutoModelForMaskedLM in eval mode on `device`, tokenizer) of an export; one whose masked-LM head would be
    initialised at random (a fine-tuned classifier's directory) is refused: its scores would be noise."""
    from transformers import AutoModelForMaskedLM

    try:
        model, info = AutoModelForMaskedLM.from_pretrained(str(model_dir), output_loading_info=True)
    except Exception as e:  # noqa: BLE001 - any load failure: the directory is not what we expect
        raise InputError(f"{model_dir}: could not load a masked LM ({type(e).__name__}: {e}); pass a "
                         f"pretraining export (RUN/export)") from e
    if info.get("missing_keys"):
        raise InputError(f"{model_dir}: has no trained masked-LM head (missing {sorted(info['missing_keys'])[:3]}); "
                         f"pass the pretraining export (RUN/export), not a fine-tuned model")
    tok = load_tokenizer_dir(model_dir)
    if tok.mask_token_id is None:
        raise InputError(f"{model_dir}: the tokenizer has no mask token; pass a tinydnabert export")
    return model.to(device).eval(), tok


class MaskedLM:
    """log p(token) at the masked positions of many masked windows: deduplicated, length-sorted batches, one
    precision policy (encoder.autocast_for). Only the masked positions go through the LM head."""

    def __init__(self, model, tok, batch_size: int = 64, bf16: bool = True) -> None:
        self.model, self.batch_size = model, batch_size
        self.mask_id, self.pad_id = tok.mask_token_id, model.config.pad_token_id
        self.device = next(model.parameters()).device
        self.amp = autocast_for(self.device, bf16)
        self.base = getattr(model, model.base_model_prefix, None)
        self.passes = 0

    def log_probs(self, keys: list[tuple[int, ...]]) -> dict[tuple[int, ...], np.ndarray]:
        """{masked ids: float32 [masked positions, vocab] log-probabilities}, one forward row per distinct key."""
        import torch

        from tinydnabert.pretrain.model import mlm_logits

        order = sorted(set(keys), key=len)
        out: dict[tuple[int, ...], np.ndarray] = {}
        with torch.no_grad(), self.amp():
            for b in range(0, len(order), self.batch_size):
                chunk = order[b:b + self.batch_size]
                x = torch.full((len(chunk), len(chunk[-1])), self.pad_id, dtype=torch.long)
                for j, k in enumerate(chunk):
                    x[j, :len(k)] = torch.tensor(k)
                x = x.to(self.device)
                att = (x != self.pad_id).long()
                masked = x == self.mask_id                   # [B, T]
                if self.base is not None:
                    h = self.base(input_ids=x, attention_mask=att)[0]   # [B, T, H]
                    logits = mlm_logits(self.model, h[masked])         # [masked, V]
                else:
                    logits = self.model(input_ids=x, attention_mask=att).logits[masked]
                lp = logits.float().log_softmax(-1).cpu().numpy()
                counts = masked.sum(1).tolist()
                for k, rows in zip(chunk, np.split(lp, np.cumsum(counts)[:-1])):
                    out[k] = rows
                self.passes += len(chunk)
        return out


def score_variants(model, tok, variants: list[Variant], strands: str = "both", pll_tokens: str = "variant",
                   batch_size: int = 64, bf16: bool = True, progress: bool = False,
                   chunk_terms: int = 2048) -> dict[str, Any]:
    """Score every variant with status ok (in place: score, llr, tokens; too_many_tokens when a window does not
    fit the model). Variants are taken in position order and flushed in chunks of ~chunk_terms masked inputs,
    so the REF windows variants share (same tile, several ALTs of a record) are tokenized and run once."""
    from tqdm import tqdm

    lm = MaskedLM(model, tok, batch_size, bf16)
    limit = token_limit(model.config)
    todo = sorted((v for v in variants if v.status == "ok"), key=lambda v: (v.contig, v.start, v.record.pos))
    encoded: dict[str, tuple[list[int], list[tuple[int, int]]]] = {}

    def encode(seq: str):
        if seq not in encoded:
            e = tok(seq, add_special_tokens=True, return_offsets_mapping=True)
            encoded[seq] = (e["input_ids"], [tuple(o) for o in e["offset_mapping"]])
        return encoded[seq]

    def finish(batch: list[tuple[Variant, list]]) -> None:
        keys = [t[0] for _, plans in batch for p in plans for t in p[0] + p[1] + (p[2] or [])]
        lp = lm.log_probs(keys)
        for v, plans in batch:
            pll = [sum(lp[k][row, t] for k, row, t in p[1]) - sum(lp[k][row, t] for k, row, t in p[0])
                   for p in plans]
            v.score = float(np.mean(pll))
            if all(p[2] is not None for p in plans):
                v.llr = float(np.mean([sum(lp[k][row, ta] - lp[k][row, tr] for k, row, tr, ta in p[2])
                                       for p in plans]))
        bar.update(len(batch))
        encoded.clear()

    t0 = time.perf_counter()
    batch: list[tuple[Variant, list]] = []
    pending = 0
    with tqdm(total=len(todo), disable=not progress, desc="score-variants", unit="variant") as bar:
        for v in todo:
            pairs = [(v.ref_seq, v.alt_seq, v.span)]
            if strands == "both":
                lr, la = len(v.ref_seq), len(v.alt_seq)
                s, er, ea = v.span
                pairs.append((revcomp(v.ref_seq), revcomp(v.alt_seq), (lr - er, lr - s, la - s)))
            encs = [(encode(r), encode(a), span) for r, a, span in pairs]
            if any(len(e[0]) > limit for r_e, a_e, _ in encs for e in (r_e, a_e)):
                v.status = "too_many_tokens"
                bar.update(1)
                continue
            plans = [strand_terms(r_e, a_e, span, pll_tokens, lm.mask_id) for r_e, a_e, span in encs]
            v.tokens = "{}/{}".format(*plans[0][3])
            batch.append((v, plans))
            pending += sum(len(p[0]) + len(p[1]) + 1 for p in plans)
            if pending >= chunk_terms:
                finish(batch)
                batch, pending = [], 0
        if batch:
            finish(batch)
    return {"passes": lm.passes, "seconds": time.perf_counter() - t0,
            "scored": sum(v.status == "ok" for v in variants)}


# ------------------------------------------------------------------------------------------------ the command

def tsv(variants: list[Variant], strands: str) -> str:
    def num(x: float | None) -> str:
        return "" if x is None else f"{x:.6f}"

    lines = ["\t".join(COLUMNS)]
    for v in variants:
        r = v.record
        ok = v.status == "ok"
        lines.append("\t".join([r.chrom, str(r.pos), r.id, r.ref, v.alt, num(v.score), num(v.llr), v.window,
                                strands if ok else "", v.tokens if ok else "", v.status]))
    return "\n".join(lines) + "\n"


def summary(variants: list[Variant], stats: dict[str, Any]) -> str:
    skipped = Counter(v.status for v in variants if v.status != "ok")
    n_ok = len(variants) - sum(skipped.values())
    why = f" ({', '.join(f'{k} {n}' for k, n in sorted(skipped.items(), key=lambda kv: -kv[1]))})" if skipped else ""
    per = f", {stats['passes'] / n_ok:.1f} per scored variant" if n_ok else ""
    rate = f", {n_ok / stats['seconds']:.1f} variants/s" if n_ok and stats["seconds"] > 0 else ""
    return (f"score-variants: {n_ok} of {len(variants)} variants scored, {sum(skipped.values())} skipped{why}; "
            f"{stats['passes']} forward passes{per}; {stats['seconds']:.1f} s{rate}")


def run_score_variants(cfg: VariantConfig) -> list[Variant]:
    import tempfile

    from tinydnabert.pretrain.distributed import pick_device

    out = Path(cfg.out)
    if out.exists() and not cfg.overwrite:
        raise InputError(f"{out}: already exists; pass --overwrite to replace it")
    records = read_vcf(cfg.vcf)
    ref = Reference(cfg.fasta)
    try:
        variants = plan_variants(records, ref, cfg.window, cfg.on_mismatch, cfg.vcf)  # all input errors first
    finally:
        ref.close()
    device = pick_device(cfg.device, "score-variants")
    with tempfile.TemporaryDirectory() as work:
        model, tok = load_masked_lm(resolve_model_dir(cfg.model, Path(work)), device)
    stats = score_variants(model, tok, variants, cfg.strands, cfg.pll_tokens, cfg.batch_size, cfg.bf16, cfg.progress)
    atomic_write_text(out, tsv(variants, cfg.strands))
    print0(summary(variants, stats))
    if any(v.status == "too_many_tokens" for v in variants):
        eprint(f"note: some windows hold more tokens than the model takes ({token_limit(model.config)}); a smaller "
               f"--window (now {cfg.window} bp) fits them")
    print0(f"wrote {out}")
    return variants


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = METHOD
    add_dataclass_args(parser, VariantConfig)


def main(args: argparse.Namespace) -> int:
    run_score_variants(dataclass_from_args(VariantConfig, args))
    return 0

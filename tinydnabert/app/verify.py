"""`tinydnabert verify DIR`: is what a stage wrote still what it wrote?

    tinydnabert verify SHARDS                          # every shard against manifest.json
    tinydnabert verify SHARDS --fasta GENOME.fa.gz     # ... and every sample against the genome
    tinydnabert verify RUN                             # every checkpoint's files against its marker
    tinydnabert verify RUN/checkpoints/step00010000    # one checkpoint

A shards directory (it has manifest.json): each listed shard exists, has its recorded size and sha256,
parses as a tar, holds the recorded sample / token / base counts, token ids inside the vocabulary's
content ids, and origin JSON that is well formed ({"record", "start", "end", "strand"}, 0 <= start < end,
the sample key made from it); no shard on disk is unlisted; the tokenizer is the one recorded. With
--fasta, every sample is decoded and compared with the genome at its coordinates (reverse complement
for strand "-"), one record in memory at a time.

A run directory, its checkpoints/ directory or one checkpoint: every file of every complete checkpoint
against its marker (tinydnabert_checkpoint.json), and `latest` names a complete checkpoint.

Exit status 0 when all is well; 2 with one line per problem (naming the file) on stdout and a summary.
"""

from __future__ import annotations

import argparse
import collections
from pathlib import Path
from typing import Any

from tinydnabert import formats
from tinydnabert.console import eprint
from tinydnabert.errors import InputError
from tinydnabert.prep.shards import read_shard
from tinydnabert.pretrain import checkpoint

MAX_PER_SHARD = 5  # problem lines per shard before "... and N more" (a bad shard can have thousands)


def verify_shards(data_dir: str | Path, fasta: list[str] | None = None) -> tuple[list[str], str]:
    """(problems, summary) for a shards directory."""
    data_dir = Path(data_dir)
    manifest = formats.load_manifest(data_dir)  # InputError if there is none or it does not parse
    mpath = data_dir / formats.MANIFEST
    problems: list[str] = []
    try:
        tok = manifest["tokenizer"]
        vocab = int(tok["vocab_size"])
        if formats.tokenizer_fingerprint(data_dir / formats.TOKENIZER_DIR) != tok["sha256"]:
            problems.append(f"{data_dir / formats.TOKENIZER_DIR / formats.TOKENIZER_FILE}: sha256 differs from "
                            f"{mpath}'s tokenizer.sha256 (another tokenizer: the ids would mean other tokens)")
    except (KeyError, TypeError, ValueError) as e:
        raise InputError(f"{mpath}: no tokenizer vocab_size / sha256 ({e}); re-run `tinydnabert preprocess`") from e
    except InputError as e:
        problems.append(str(e))
        vocab = int(manifest["tokenizer"]["vocab_size"])
    by_record: dict[str, list[Path]] = collections.defaultdict(list)  # record -> the shards holding it
    n_shards = n_samples = 0
    for split in formats.SPLITS:
        entries = ((manifest.get("splits") or {}).get(split) or {}).get("shards") or []
        listed = {e.get("name") for e in entries}
        on_disk = sorted((data_dir / split).glob(formats.SHARD_GLOB)) if (data_dir / split).is_dir() else []
        problems += [f"{p}: not listed in {mpath} (added after preprocessing?)" for p in on_disk
                     if p.name not in listed]
        for e in entries:
            path = data_dir / split / str(e.get("name"))
            n_shards += 1
            found, records = _check_shard(path, e, vocab, mpath)
            problems += found
            n_samples += int(e.get("samples") or 0)
            for r in records:
                by_record[r].append(path)
        unsummed = [e for e in entries if "sha256" not in e or "bytes" not in e]
        if unsummed:
            problems.append(f"{mpath}: records no size / sha256 for {len(unsummed)} {split} shards (made by an older "
                            f"tinydnabert), so their bytes cannot be verified; re-run `tinydnabert preprocess`")
        totals = {k: sum(int(e.get(k) or 0) for e in entries) for k in ("samples", "bases", "tokens")}
        split_info = (manifest.get("splits") or {}).get(split) or {}
        for k, v in totals.items():
            if k in split_info and split_info[k] != v:
                problems.append(f"{mpath}: splits.{split}.{k} is {split_info[k]:,} but its shards add up to {v:,}")
    summary = f"{data_dir}: {n_shards} shards, {n_samples:,} samples"
    if fasta:
        problems += _compare_with_genome(data_dir, manifest, fasta, by_record)
        summary += f", every sample equal to {', '.join(fasta)} at its coordinates"
    return problems, summary


def _check_shard(path: Path, entry: dict, vocab: int, mpath: Path) -> tuple[list[str], set[str]]:
    """Problems of one shard, and the records its samples come from."""
    if not path.is_file():
        return [f"{path}: listed in {mpath} but missing"], set()
    problems = []
    try:  # size and sha256 first (an InputError saying which), then the tar and its JSON
        samples = read_shard(path, meta=True, sha256=entry.get("sha256"), size=entry.get("bytes"))
    except InputError as e:
        problems.append(str(e))
        try:  # say what else is wrong, if the tar still parses
            samples = read_shard(path, meta=True)
        except InputError:
            return problems, set()
    bad: list[str] = []
    records: set[str] = set()
    tokens = bases = 0
    for s in samples:
        tokens += len(s.ids)
        if s.ids.size and (int(s.ids.min()) < formats.NUM_SPECIAL or int(s.ids.max()) >= vocab):
            out = s.ids[(s.ids < formats.NUM_SPECIAL) | (s.ids >= vocab)]
            bad.append(f"{path}: sample {s.key!r} holds token id {int(out[0])}, outside the vocabulary's content "
                       f"ids {formats.NUM_SPECIAL}..{vocab - 1}")
        m = s.meta
        why = _origin_problem(m)
        if why:
            bad.append(f"{path}: sample {s.key!r}: origin JSON {why}")
            continue
        if formats.sample_key(m["record"], m["start"], m["end"], m["strand"]) != s.key:
            bad.append(f"{path}: sample {s.key!r}: origin JSON says {m['record']}:{m['start']}-{m['end']} "
                       f"({m['strand']}), which is another key")
        bases += m["end"] - m["start"]
        records.add(m["record"])
    problems += bad[:MAX_PER_SHARD]
    if len(bad) > MAX_PER_SHARD:
        problems.append(f"{path}: ... and {len(bad) - MAX_PER_SHARD} more bad samples")
    for k, v in (("samples", len(samples)), ("tokens", tokens), ("bases", bases)):
        if not bad and entry.get(k) != v:
            problems.append(f"{path}: holds {v:,} {k} but {mpath} says {entry.get(k)}")
    return problems, records


def _origin_problem(m: Any) -> str | None:
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


def _compare_with_genome(data_dir: Path, manifest: dict, fasta: list[str],
                         by_record: dict[str, list[Path]]) -> list[str]:
    """Decode every sample and compare it with the genome, one FASTA record in memory at a time (shards
    are in genome order, so a shard is read once per record it holds: nearly always once)."""
    from tinydnabert.prep.fasta import iter_records
    from tinydnabert.prep.segment import segment_text
    from tinydnabert.prep.tokenizer import load_raw_tokenizer

    keep_case = bool((manifest.get("config") or {}).get("keep_case", False))
    tok = load_raw_tokenizer(data_dir / formats.TOKENIZER_DIR / formats.TOKENIZER_FILE)
    problems: list[str] = []
    seen: set[str] = set()
    for rec in iter_records(fasta, keep_case):
        if rec.name not in by_record:
            continue
        seen.add(rec.name)
        for path in by_record[rec.name]:
            try:
                samples = [s for s in read_shard(path, meta=True) if s.meta and s.meta.get("record") == rec.name]
            except InputError:
                continue  # already reported
            texts = tok.decode_batch([s.ids.tolist() for s in samples], skip_special_tokens=False)
            bad = []
            for s, text in zip(samples, texts):
                m = s.meta
                if m["end"] > len(rec.seq):
                    bad.append(f"{path}: sample {s.key!r} ends at {m['end']:,}, past {rec.name} "
                               f"({len(rec.seq):,} bp) in {rec.path}")
                elif text != segment_text(rec.seq, m["start"], m["end"], m["strand"] == "-"):
                    bad.append(f"{path}: sample {s.key!r} decodes to another sequence than {rec.name}:"
                               f"{m['start']}-{m['end']} ({m['strand']}) of {rec.path}")
            problems += bad[:MAX_PER_SHARD]
            if len(bad) > MAX_PER_SHARD:
                problems.append(f"{path}: ... and {len(bad) - MAX_PER_SHARD} more samples unlike the genome")
        del rec
    for name in sorted(set(by_record) - seen):
        problems.append(f"{by_record[name][0]}: holds samples of record {name!r}, which is not in "
                        f"{', '.join(fasta)} (pass the FASTA files the shards were made from)")
    return problems


def verify_checkpoints(path: str | Path) -> tuple[list[str], str]:
    """(problems, summary) for a run directory, a checkpoints directory or one checkpoint."""
    p = Path(path)
    if (p / checkpoint.MARKER).is_file():
        tags, root = [p], None
    else:
        root = p / checkpoint.CHECKPOINTS if (p / checkpoint.CHECKPOINTS).is_dir() else p
        tags = sorted(d for d in root.iterdir() if d.is_dir() and checkpoint.step_of(d.name) is not None)
    problems: list[str] = []
    notes: list[str] = []
    complete = 0
    for tag in tags:
        if not (tag / checkpoint.MARKER).is_file():
            notes.append(f"note: {tag}: no {checkpoint.MARKER}, an interrupted save (never resumed from; the next "
                         f"save removes it)")
            continue
        try:
            marker = checkpoint.Marker.read(tag)
        except InputError as e:
            problems.append(str(e))
            continue
        complete += 1
        problems += checkpoint.verify_files(tag, marker)
        if marker.files:
            on_disk = {f.relative_to(tag).as_posix() for f in tag.rglob("*") if f.is_file()}
            problems += [f"{tag / rel}: not in {checkpoint.MARKER} (added after the save)"
                         for rel in sorted(on_disk - set(marker.files) - {checkpoint.MARKER})]
    if root is not None:
        try:
            checkpoint.latest(root)
        except InputError as e:
            problems.append(str(e))
        if not complete:
            problems.append(f"{root}: no complete checkpoint (no stepNNNNNNNN directory with {checkpoint.MARKER})")
    for n in notes:
        eprint(n)
    return problems, f"{p}: {complete} complete checkpoint(s), every file as its marker lists it"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", help="a shards directory (output of preprocess), a run directory, its "
                                    "checkpoints/ directory, or one checkpoint (RUN/checkpoints/stepNNNNNNNN)")
    parser.add_argument("--fasta", nargs="+", default=None, metavar="FASTA",
                        help="shards only: the FASTA files they were made from; every sample is decoded and "
                             "compared with the genome at its coordinates (reads the whole genome)")


def main(args: argparse.Namespace) -> int:
    d = Path(args.dir)
    if not d.is_dir():
        raise InputError(f"{d}: not a directory; pass a shards directory, a run directory or a checkpoint")
    if (d / formats.MANIFEST).is_file():
        problems, summary = verify_shards(d, args.fasta)
    elif (d / checkpoint.MARKER).is_file() or (d / checkpoint.CHECKPOINTS).is_dir() or checkpoint.has_checkpoints(d):
        if args.fasta:
            raise InputError(f"{d}: --fasta is for a shards directory; {d} holds checkpoints")
        problems, summary = verify_checkpoints(d)
    else:
        raise InputError(f"{d}: neither a shards directory (no {formats.MANIFEST}) nor a run / checkpoints "
                         f"directory (no {checkpoint.CHECKPOINTS}/ or step* checkpoints)")
    for line in problems:
        print(line, flush=True)
    if problems:
        raise InputError(f"{d}: {len(problems)} problem(s), listed above. Shards: re-run `tinydnabert "
                         f"preprocess` (or copy them again); checkpoints: resume or export from an earlier one")
    print(f"ok: {summary}", flush=True)
    return 0

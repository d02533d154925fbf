"""`tinydnabert verify DIR`: is what a stage wrote still what it wrote?

    tinydnabert verify SHARDS                          # every shard against manifest.json
    tinydnabert verify SHARDS --fasta GENOME.fa.gz     # ... and every sample against the genome
    tinydnabert verify RUN                             # every checkpoint's files against its marker
    tinydnabert verify RUN/checkpoints/step00010000    # one checkpoint

A shards directory (it has manifest.json): each listed shard exists, has its recorded size and sha256,
parses as a tar, holds the recorded sample / token / base counts, token ids inside the vocabulary's
content ids, and origin JSON that is well formed ({"record", "start", "end", "strand"}, 0 <= start < end,
the sample key made from it); no shard on disk is unlisted; the tokenizer is the one recorded. These are
the training loader's checks, in the same words (prep/shardcheck.py), every problem listed (at most
MAX_PER_SHARD lines a shard) where the loader stops at the first. With --fasta, every sample is decoded
and compared with the genome at its coordinates (reverse complement for strand "-"), one record in memory
at a time.

A run directory, its checkpoints/ directory or one checkpoint: every file of every complete checkpoint
against its marker (tinydnabert_checkpoint.json), and `latest` names a complete checkpoint.

Exit status 0 when all is well; 2 with one line per problem (naming the file) on stdout and a summary.
"""

from __future__ import annotations

import argparse
import collections
from pathlib import Path

from tinydnabert import formats
from tinydnabert.console import eprint
from tinydnabert.errors import InputError
from tinydnabert.prep import shardcheck
from tinydnabert.prep.shards import read_shard
from tinydnabert.pretrain import checkpoint

MAX_PER_SHARD = 5  # problem lines per shard before "... and N more" (a bad shard can have thousands)


def verify_shards(data_dir: str | Path, fasta: list[str] | None = None) -> tuple[list[str], str]:
    """(problems, summary) for a shards directory: the checks of prep/shardcheck.py (the training loader's),
    every problem listed instead of the first raised."""
    data_dir = Path(data_dir)
    manifest = formats.load_manifest(data_dir)  # InputError if there is none or it does not parse
    mpath = data_dir / formats.MANIFEST
    vocab, _ = shardcheck.manifest_tokenizer(manifest, mpath)
    problems: list[str] = []
    try:
        shardcheck.check_tokenizer(data_dir)
    except InputError as e:
        problems.append(str(e))
    by_record: dict[str, list[Path]] = collections.defaultdict(list)  # record -> the shards holding it
    n_shards = n_samples = 0
    for split in formats.SPLITS:
        shards = shardcheck.listed_shards(manifest, split, mpath, lambda n, split=split: str(data_dir / split / n))
        # sizes are checked as each shard is read (below), not twice
        problems += shardcheck.listing_problems(data_dir, split, shards, mpath, sizes=False)
        for shard in shards:
            n_shards += 1
            n_samples += shard.samples
            path = Path(shard.path)
            if not path.is_file():
                continue  # listed but missing: said above
            samples, found = shardcheck.check_shard(shard, vocab, mpath, meta=True)
            problems += found[:MAX_PER_SHARD]
            if len(found) > MAX_PER_SHARD:
                problems.append(f"{path}: ... and {len(found) - MAX_PER_SHARD} more problems")
            for r in {s.meta["record"] for s in samples if shardcheck.origin_problem(s.meta) is None}:
                by_record[r].append(path)
        note = shardcheck.unverifiable(shards, split, mpath)
        if note:
            problems.append(f"{note}, so their bytes cannot be verified; re-run `tinydnabert preprocess`")
        problems += shardcheck.totals_problems(manifest, split, shards, mpath)
    summary = f"{data_dir}: {n_shards} shards, {n_samples:,} samples"
    if fasta:
        problems += _compare_with_genome(data_dir, manifest, fasta, by_record)
        summary += f", every sample equal to {', '.join(fasta)} at its coordinates"
    return problems, summary


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

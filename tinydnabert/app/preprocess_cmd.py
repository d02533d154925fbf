"""`tinydnabert preprocess` with task names in --exclude-from: prep's stage, the names resolved here.

    tinydnabert preprocess --fasta GRCh38.fa.gz --out data/grch38 --exclude-from gue/prom_core_all

prep/ may import nothing above it, and the task registry and loaders are eval/'s, so prep/preprocess.py takes
files only and this app-layer entry point turns each --exclude-from entry that is no path but a task name into
that task's sequences (every split: eval/overlap.py `task_sequences`) before running the very same stage. The
flags, the checks and the output are prep/preprocess.py's.
"""

from __future__ import annotations

import argparse

from tinydnabert.prep import preprocess as stage


def add_arguments(parser: argparse.ArgumentParser) -> None:
    stage.add_arguments(parser)


def main(args: argparse.Namespace) -> int:
    from tinydnabert.eval.overlap import task_sequences

    return stage.main(args, task_sequences(args.exclude_from or []))

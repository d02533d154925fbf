"""The `tinydnabert` command: one subcommand per stage.

Only the chosen stage's module is imported, so `tinydnabert preprocess --help` does not pay for
importing torch/DeepSpeed. Every stage module exposes:

    add_arguments(parser: argparse.ArgumentParser) -> None
    main(args: argparse.Namespace) -> int          # exit status

An `InputError` anywhere is printed as `error: ...` and exits 2, with no traceback: it is the
user's input that is wrong, and the message says which file and what to do.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from tinydnabert.console import eprint
from tinydnabert.errors import InputError, disk_full_error, disk_full_reason

# name -> (module, one-line help). Order is the order of the pipeline.
COMMANDS: dict[str, tuple[str, str]] = {
    "download": ("tinydnabert.prep.download", "fetch a reference genome (GRCh38.p14, hg38 chromosomes)"),
    "preprocess": ("tinydnabert.app.preprocess_cmd", "FASTA -> BPE tokenizer + WebDataset shards + manifest"),
    "export": ("tinydnabert.pretrain.export", "turn a pretraining checkpoint into a plain Hugging Face directory"),
    "verify": ("tinydnabert.app.verify", "check shards against the manifest (and genome), checkpoints against markers"),
    "finetune": ("tinydnabert.eval.finetune", "fine-tune a pretrained (or scratch) model on an NT task, report MCC"),
    "probe": ("tinydnabert.eval.probe", "linear probe of a frozen encoder (logistic regression on embeddings): MCC"),
    "embed": ("tinydnabert.eval.embed", "embeddings of the sequences of a FASTA/CSV/TSV file from a trained encoder"),
    "score-variants": ("tinydnabert.eval.variants", "zero-shot MLM scores of a VCF's variants (no labels needed)"),
    "overlap": ("tinydnabert.eval.overlap", "which benchmark rows the pretraining shards already hold (shared k-mers)"),
    "benchmark": ("tinydnabert.eval.benchmark", "pretrained vs scratch vs SOTA on many tasks: MCC table, JSON, chart"),
    "quickstart": ("tinydnabert.app.quickstart", "the whole pipeline in one command (`make demo`)"),
    "plot": ("tinydnabert.app.plots", "draw loss / learning rate / throughput from a run's TensorBoard logs"),
}


def _top_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tinydnabert",
        description="Pretrain a DNA language model: genome FASTA -> tokenizer and shards -> "
        "DeepSpeed MLM pretraining (launch/pretrain.py) -> export -> NT fine-tuning.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="commands:\n" + "\n".join(f"  {n:<11} {h}" for n, (_, h) in COMMANDS.items())
        + "\n\nPretraining runs under the DeepSpeed launcher:\n"
        "  deepspeed launch/pretrain.py --deepspeed_config ds_configs/zero1.json --data DIR --out RUN\n"
        "Run `tinydnabert COMMAND --help` for a command's options.",
    )
    p.add_argument("command", choices=list(COMMANDS), metavar="COMMAND")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        _top_parser().parse_args(argv[:1] or ["--help"])
        return 2
    name, rest = argv[0], argv[1:]
    module_name, help_text = COMMANDS[name]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"tinydnabert {name}", description=help_text,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    return run_stage(module, parser, rest)


def run_stage(module, parser: argparse.ArgumentParser, argv: list[str] | None = None) -> int:
    """Parse a stage's flags and run it: the one place that turns InputError into `error: ...` + exit 2.
    Used by `tinydnabert COMMAND` and by the thin `launch/*.py` entry points."""
    module.add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return int(module.main(args) or 0)
    except InputError as e:
        eprint(f"error: {e}")
        return 2
    except KeyboardInterrupt:
        eprint("interrupted")
        return 130
    except BrokenPipeError:  # `tinydnabert download --list | head`: the reader left; not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as e:  # after BrokenPipeError, an OSError too
        # A full disk where no atomic writer was around to say more (they raise DiskFullError, above):
        # still one line and exit 2, not a 20-line traceback.
        reason = disk_full_reason(e)
        if reason is None:
            raise
        where = e.filename or os.getcwd()
        eprint(f"error: {disk_full_error(where, reason, 'unknown MB', 'free some space, then run again')}")
        return 2


if __name__ == "__main__":
    sys.exit(main())

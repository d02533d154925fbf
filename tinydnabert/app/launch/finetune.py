"""Fine-tune a pretrained export (or the same architecture from scratch) on a classification task.

    python launch/finetune.py --model RUN/export --task promoter_tata --out ft/promoter_tata
    python launch/finetune.py --model scratch --scratch-from RUN/export --task gue/prom_300_tata --out ft/scratch
    python launch/finetune.py --list-tasks

The same as `tinydnabert finetune` (flags: `--help`). A plain torch loop on one device (cuda when
available, bf16 autocast there; fp32 on CPU): fine-tuning needs no DeepSpeed.
"""

import argparse
import sys

from tinydnabert.app.cli import run_stage
from tinydnabert.eval import finetune

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sys.exit(run_stage(finetune, parser))

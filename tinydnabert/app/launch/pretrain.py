"""Pretrain the reference TinyDNABERT (RoBERTa MLM) on preprocessed shards under DeepSpeed.

    deepspeed launch/pretrain.py --deepspeed_config ds_configs/zero1.json --data DIR --out RUN
    deepspeed --num_gpus 2 launch/pretrain.py --deepspeed_config ds_configs/zero1.json --data DIR --out RUN
    deepspeed --hostfile hostfile launch/pretrain.py --deepspeed_config ds_configs/zero1.json --data DIR --out RUN
    deepspeed --num_gpus 2 launch/pretrain.py --deepspeed_config ds_configs/zero1-cpu-fp32.json ...   # no GPU
    ... --out RUN --resume            # continue RUN from its latest complete checkpoint

Batch size, precision, optimizer, LR schedule and clipping come only from the JSON; `--help` lists the rest.
"""

import argparse
import sys

from tinydnabert.app.cli import run_stage
from tinydnabert.pretrain import train

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sys.exit(run_stage(train, parser))

"""DeepSpeed JSON configs: load one, check it against the world size, derive a variant of it.

What DeepSpeed owns (micro-batch, accumulation, precision, ZeRO stage, clipping, optimizer, LR schedule)
lives only in these files; a short run that needs another batch or schedule writes a derived copy
(`derive`) next to its outputs instead of repeating the values in flags.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

from tinydnabert.errors import InputError

# The shipped configs are package data (a wheel carries them); the checkout's top-level ds_configs/ is a link here,
# so `--deepspeed_config ds_configs/zero1.json` and the installed package read the same files.
CONFIG_DIR = Path(__file__).resolve().parent / "ds_configs"
GPU_CONFIG = "zero1.json"
CPU_CONFIG = "zero1-cpu-fp32.json"


def load(path: str | os.PathLike) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: DeepSpeed config not found; pass --deepspeed_config ds_configs/{GPU_CONFIG} "
                         f"(GPU) or ds_configs/{CPU_CONFIG} (CPU)")
    try:
        cfg = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise InputError(f"{p}: not valid JSON ({e})") from e
    if not isinstance(cfg, dict):
        raise InputError(f"{p}: expected a JSON object")
    return cfg


def shipped(name: str) -> dict[str, Any]:
    """One of the repository's ds_configs/*.json by file name."""
    return load(CONFIG_DIR / name)


def check_batch_sizes(ds: dict[str, Any], world_size: int, where: str = "DeepSpeed config") -> tuple[int, int, int]:
    """(train_batch_size, micro, accumulation) for this world size, or an InputError saying what to change.

    DeepSpeed's own check is an AssertionError deep in engine start-up; this says which number to edit."""
    tbs = ds.get("train_batch_size")
    mbs = ds.get("train_micro_batch_size_per_gpu")
    gas = ds.get("gradient_accumulation_steps")
    if tbs is None or mbs is None:
        raise InputError(f"{where}: set both train_batch_size (the global batch) and "
                         "train_micro_batch_size_per_gpu; DeepSpeed then derives gradient_accumulation_steps")
    if not (isinstance(tbs, int) and isinstance(mbs, int) and tbs > 0 and mbs > 0):
        raise InputError(f"{where}: train_batch_size and train_micro_batch_size_per_gpu must be positive integers")
    if tbs % (mbs * world_size):
        raise InputError(
            f"{where}: train_batch_size {tbs} is not divisible by train_micro_batch_size_per_gpu {mbs} x "
            f"{world_size} ranks = {mbs * world_size}; change train_micro_batch_size_per_gpu (or the number of "
            "ranks) so that micro x ranks divides the global batch")
    derived = tbs // (mbs * world_size)
    if gas is not None and gas != derived:
        raise InputError(f"{where}: gradient_accumulation_steps {gas} disagrees with train_batch_size {tbs} / "
                         f"({mbs} x {world_size} ranks) = {derived}; remove gradient_accumulation_steps")
    return tbs, mbs, derived


def derive(base: dict[str, Any], *, batch: int | None = None, micro: int | None = None, lr: float | None = None,
           warmup: int | None = None, steps: int | None = None, constant: bool = False) -> dict[str, Any]:
    """A copy of `base` with another global batch / micro-batch, peak LR, warmup or schedule length.

    The accumulation is left for DeepSpeed to derive (batch / (micro x ranks)); a new peak LR is set both
    as the optimizer's lr and as the scheduler's warmup_max_lr, which must agree. `constant`: DeepSpeed's
    WarmupLR (linear warmup, then the peak LR held) instead of a decay, so that every checkpoint along one
    run is a fair point of a budget curve and the run can be extended (there is no end to decay towards)."""
    ds = copy.deepcopy(base)
    if constant:
        if steps is not None:
            raise InputError("derive: a constant schedule has no length; stop the run with --max-steps")
        params = dict(ds.get("scheduler", {}).get("params", {}))
        params.pop("total_num_steps", None)
        params.setdefault("warmup_type", "linear")
        ds["scheduler"] = {"type": "WarmupLR", "params": params}
    if batch is not None:
        ds["train_batch_size"] = batch
    if micro is not None:
        ds["train_micro_batch_size_per_gpu"] = micro
    if batch is not None or micro is not None:
        ds.pop("gradient_accumulation_steps", None)
    sched = ds.get("scheduler", {}).get("params")
    if (warmup is not None or steps is not None) and sched is None:
        raise InputError("derive: the base config has no scheduler.params to set warmup/steps in")
    if lr is not None:
        ds["optimizer"]["params"]["lr"] = lr
        if sched is not None and "warmup_max_lr" in sched:
            sched["warmup_max_lr"] = lr
    if warmup is not None:
        sched["warmup_num_steps"] = warmup
    if steps is not None:
        sched["total_num_steps"] = steps
    return ds

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
# DeepSpeed builds every scheduler type but this one from the JSON; train.py builds it (schedule.py).
WSD = "WarmupStableDecayLR"
SCHEDULES = {"linear": "WarmupDecayLR", "wsd": WSD}  # derive(schedule=...) -> scheduler.type


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


def check_schedule(ds: dict[str, Any], where: str = "DeepSpeed config") -> dict[str, Any] | None:
    """The params of a WarmupStableDecayLR scheduler block, checked; None for DeepSpeed's own types.

    DeepSpeed would reject the unknown type only deep in engine start-up; this says which number to edit."""
    sched = ds.get("scheduler") or {}
    if sched.get("type") != WSD:
        return None
    p = dict(sched.get("params") or {})
    known = {"warmup_min_lr", "warmup_max_lr", "warmup_num_steps", "warmup_type", "total_num_steps",
             "decay_fraction", "decay_min_lr"}
    if set(p) - known:
        raise InputError(f"{where}: scheduler {WSD} has unknown params {sorted(set(p) - known)}; "
                         f"known: {sorted(known)}")
    for name in ("total_num_steps", "warmup_num_steps"):
        if not isinstance(p.get(name), int) or p[name] < 1:
            raise InputError(f"{where}: scheduler {WSD} needs a positive integer {name}, got {p.get(name)}")
    f = p.get("decay_fraction")
    if not isinstance(f, (int, float)) or not 0.0 < f <= 1.0:
        raise InputError(f"{where}: scheduler {WSD} decay_fraction {f}: must be in (0, 1], the last fraction of "
                         "total_num_steps that decays (e.g. 0.2)")
    decay = round(f * p["total_num_steps"])
    warm = max(2, p["warmup_num_steps"])  # DeepSpeed's WarmupLR warms up over at least 2 steps
    if decay < 1:
        raise InputError(f"{where}: decay_fraction {f} x total_num_steps {p['total_num_steps']} rounds to 0 decay "
                         "steps; raise decay_fraction")
    if warm + decay > p["total_num_steps"]:
        raise InputError(f"{where}: warmup_num_steps {warm} + decay steps {decay} (decay_fraction {f} x "
                         f"total_num_steps {p['total_num_steps']}) exceed total_num_steps; lower one of them")
    if p.setdefault("warmup_type", "linear") != "linear":
        raise InputError(f"{where}: scheduler {WSD} warms up linearly; set warmup_type \"linear\"")
    lr = (ds.get("optimizer") or {}).get("params", {}).get("lr")
    for name in ("warmup_min_lr", "warmup_max_lr", "decay_min_lr"):
        if name in p and (not isinstance(p[name], (int, float)) or p[name] < 0):
            raise InputError(f"{where}: scheduler {WSD} {name} {p[name]}: must be a number >= 0")
    if "warmup_max_lr" not in p or (lr is not None and p["warmup_max_lr"] != lr):
        raise InputError(f"{where}: scheduler {WSD} warmup_max_lr {p.get('warmup_max_lr')} must be set and equal "
                         f"optimizer lr {lr} (the peak LR); derive(lr=...) sets both")
    return p


def derive(base: dict[str, Any], *, batch: int | None = None, micro: int | None = None, lr: float | None = None,
           warmup: int | None = None, steps: int | None = None, constant: bool = False,
           schedule: str | None = None, decay_fraction: float | None = None,
           decay_min_lr: float | None = None) -> dict[str, Any]:
    """A copy of `base` with another global batch / micro-batch, peak LR, warmup or schedule length.

    The accumulation is left for DeepSpeed to derive (batch / (micro x ranks)); a new peak LR is set both
    as the optimizer's lr and as the scheduler's warmup_max_lr, which must agree. `constant`: DeepSpeed's
    WarmupLR (linear warmup, then the peak LR held) instead of a decay, so that every checkpoint along one
    run is a fair point of a budget curve and the run can be extended (there is no end to decay towards).
    `schedule`: "linear" (DeepSpeed's WarmupDecayLR: warmup, then linear decay over all remaining steps) or
    "wsd" (warmup-stable-decay, schedule.py: warmup, the peak held, then linear decay over the last
    `decay_fraction` of the steps (default 0.2) to `decay_min_lr` (default warmup_min_lr)); None keeps the base's."""
    ds = copy.deepcopy(base)
    if schedule is not None and schedule not in SCHEDULES:
        raise InputError(f"derive: schedule {schedule!r}: choose one of {sorted(SCHEDULES)}")
    if constant and schedule is not None:
        raise InputError("derive: constant=True is its own schedule (WarmupLR); do not pass schedule too")
    if schedule is not None:
        params = dict(ds.get("scheduler", {}).get("params", {}))
        for k in ("decay_fraction", "decay_min_lr"):
            params.pop(k, None)
        if schedule == "wsd":
            params["decay_fraction"] = 0.2
        ds["scheduler"] = {"type": SCHEDULES[schedule], "params": params}
    if (decay_fraction is not None or decay_min_lr is not None) and ds.get("scheduler", {}).get("type") != WSD:
        raise InputError("derive: decay_fraction and decay_min_lr belong to the wsd schedule; pass schedule='wsd'")
    if decay_fraction is not None:
        ds["scheduler"]["params"]["decay_fraction"] = decay_fraction
    if decay_min_lr is not None:
        ds["scheduler"]["params"]["decay_min_lr"] = decay_min_lr
    if constant:
        if steps is not None:
            raise InputError("derive: a constant schedule has no length; stop the run with --max-steps")
        params = dict(ds.get("scheduler", {}).get("params", {}))
        for k in ("total_num_steps", "decay_fraction", "decay_min_lr"):
            params.pop(k, None)
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
    check_schedule(ds, where="derive")
    return ds

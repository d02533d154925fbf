"""The pretraining checkpoint format: its layout, the completeness marker, save / resolve / prune / load.

    RUN/checkpoints/latest                     tag of the newest COMPLETE checkpoint (written last, atomically)
    RUN/checkpoints/stepNNNNNNNN/              one checkpoint ("tag"):
        mp_rank_00_model_states.pt             DeepSpeed: the module weights (+ client state: step, data position)
        *_optim_states.pt, ...                 DeepSpeed: each rank's optimizer shard
        rng/rankNNNNN.pt                       every RNG of each rank (exact resume)
        tokenizer/                             the shards' tokenizer (an export needs no shards directory)
        tinydnabert_checkpoint.json            the marker: written by rank 0 after every rank's files are on
                                               disk, so a tag without it is an interrupted save

Complete or absent: a save killed half-way leaves a tag without a marker, which `latest` never names,
resume never reads and the next save prunes. This module is the only place that knows these names;
train.py writes checkpoints through `save`, resume and export read them through `resolve` / `Marker.read`.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .common import InputError, atomic_write_json, atomic_write_text, is_rank0, rank
from .distributed import rng_state, set_rng_state

CHECKPOINTS = "checkpoints"
LATEST = "latest"
MARKER = "tinydnabert_checkpoint.json"
MODEL_STATES = "mp_rank_00_model_states.pt"  # DeepSpeed's name; with ZeRO-1 every rank holds the full module
RNG_DIR = "rng"
TOKENIZER_DIR = "tokenizer"
OBJECTIVE_PREFIX = "net."  # train.py hands DeepSpeed a MaskedLMObjective whose RobertaForMaskedLM is `.net`
MARKER_VERSION = 1


@dataclass
class Marker:
    """What a complete checkpoint says about itself (tinydnabert_checkpoint.json)."""

    step: int                         # optimizer steps done
    tokens_seen: int                  # tokens in all ranks' batches
    batches_consumed_per_rank: int    # the data position (micro-batches each rank has drawn)
    world_size: int
    global_batch: int
    seq_len: int
    model_config: dict[str, Any]
    configs: dict[str, Any]           # pretrain / model / data configs of the run
    ds_config: dict[str, Any]         # the DeepSpeed config as the engine resolved it
    time_utc: str = ""
    version: int = MARKER_VERSION

    def write(self, tag_dir: Path) -> None:
        atomic_write_json(tag_dir / MARKER, dataclasses.asdict(self))

    @classmethod
    def read(cls, tag_dir: Path) -> Marker:
        """The marker of a checkpoint; a corrupt, incomplete or newer one is an InputError naming the file."""
        path = tag_dir / MARKER
        try:
            raw = json.loads(path.read_text())
            if not isinstance(raw, dict):
                raise TypeError("not a JSON object")
            version = raw.setdefault("version", MARKER_VERSION)  # markers before versioning were version 1
            if version > MARKER_VERSION:
                raise InputError(f"{path}: marker version {version} is newer than this tinydnabert reads "
                                 f"({MARKER_VERSION}); upgrade tinydnabert")
            names = {f.name for f in dataclasses.fields(cls)}
            return cls(**{k: v for k, v in raw.items() if k in names})
        except InputError:
            raise
        except (OSError, json.JSONDecodeError, TypeError) as e:
            raise InputError(f"{path}: not a valid checkpoint marker ({type(e).__name__}: {e}); use an earlier "
                             "complete checkpoint (write its tag into checkpoints/latest)") from e


def tag_of(step: int) -> str:
    return f"step{step:08d}"


def step_of(name: str) -> int | None:
    """The step of a tag directory name, or None for anything else."""
    return int(name[4:]) if name.startswith("step") and name[4:].isdigit() else None


def has_checkpoints(ckpt_root: Path) -> bool:
    """True if ckpt_root holds any tag directory, complete or not."""
    return ckpt_root.is_dir() and any(step_of(d.name) is not None for d in ckpt_root.iterdir())


def latest(ckpt_root: Path) -> Path | None:
    """The newest complete checkpoint under ckpt_root (its `latest` file), or None."""
    latest_file = ckpt_root / LATEST
    if not latest_file.is_file():
        return None
    tag_dir = ckpt_root / latest_file.read_text().strip()
    if not (tag_dir / MARKER).is_file():
        raise InputError(f"{latest_file} names {tag_dir.name}, which is not a complete checkpoint (no {MARKER}); "
                         f"write the tag of a complete one into {latest_file}")
    return tag_dir


def resolve(path: str | Path) -> Path:
    """A checkpoint tag directory from a tag dir, a checkpoints dir or a run dir."""
    p = Path(path)
    if (p / MARKER).is_file():
        return p
    for root in (p, p / CHECKPOINTS):
        if (root / LATEST).is_file():
            found = latest(root)
            if found is not None:
                return found
    if p.is_dir() and (p / MODEL_STATES).is_file():
        raise InputError(f"{p}: checkpoint is incomplete (no {MARKER}): its save was interrupted; use an "
                         "earlier checkpoint")
    raise InputError(f"{p}: not a tinydnabert checkpoint, checkpoints directory or run directory "
                     f"(no {MARKER} and no {LATEST} file)")


def is_checkpoint(path: str | Path) -> bool:
    """True for a complete checkpoint dir, or a run/checkpoints dir whose `latest` names one."""
    try:
        resolve(path)
    except InputError:
        return False
    return True


def save(engine, ckpt_root: Path, marker: Marker, client_state: dict[str, Any], tokenizer_dir: Path,
         keep: int) -> Path:
    """All ranks: DeepSpeed files + this rank's RNG; then rank 0 marks the tag complete, points `latest`
    at it and prunes. Every rank returns only after the marker is written."""
    import deepspeed.comm as dist

    tag = tag_of(marker.step)
    tag_dir = ckpt_root / tag
    if is_rank0() and tag_dir.exists():  # a stale partial save of this same step (killed, then resumed)
        shutil.rmtree(tag_dir)
    dist.barrier()
    engine.save_checkpoint(str(ckpt_root), tag=tag, client_state=client_state, save_latest=False)
    (tag_dir / RNG_DIR).mkdir(parents=True, exist_ok=True)
    torch.save(rng_state(), tag_dir / RNG_DIR / f"rank{rank():05d}.pt")
    dist.barrier()  # every rank's files are on disk
    if is_rank0():
        shutil.copytree(tokenizer_dir, tag_dir / TOKENIZER_DIR, dirs_exist_ok=True)
        marker.time_utc = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        marker.write(tag_dir)
        atomic_write_text(ckpt_root / LATEST, tag + "\n")
        prune(ckpt_root, keep, marker.step)
    dist.barrier()
    return tag_dir


def prune(ckpt_root: Path, keep: int, current: int) -> None:
    """Keep the newest `keep` complete checkpoints up to `current`; remove older ones and partial saves."""
    complete, partial = [], []
    for d in ckpt_root.iterdir():
        s = step_of(d.name)
        if s is None or not d.is_dir() or s > current:
            continue
        (complete if (d / MARKER).is_file() else partial).append((s, d))
    complete.sort()
    for _, d in complete[:-keep] + partial:
        shutil.rmtree(d, ignore_errors=True)


def load(engine, tag_dir: Path) -> tuple[Marker, dict[str, Any]]:
    """Engine state (weights, optimizer, LR schedule) and this rank's RNG from a complete checkpoint;
    returns its marker and the client state saved with it."""
    marker = Marker.read(tag_dir)
    _, client = engine.load_checkpoint(str(tag_dir.parent), tag=tag_dir.name,
                                       load_optimizer_states=True, load_lr_scheduler_states=True)
    if client is None:
        raise InputError(f"{tag_dir}: DeepSpeed could not load this checkpoint; resume from an earlier one")
    set_rng_state(torch.load(tag_dir / RNG_DIR / f"rank{engine.global_rank:05d}.pt", weights_only=True))
    return marker, client


def load_module_state(tag_dir: Path) -> dict[str, torch.Tensor]:
    """The RobertaForMaskedLM state dict from DeepSpeed's model-states file (fp32, plain tensors).

    Read with torch.load(weights_only=True): tensors and plain containers only, never arbitrary
    pickled code, so a checkpoint from elsewhere cannot run anything."""
    path = tag_dir / MODEL_STATES
    if not path.is_file():
        raise InputError(f"{path}: missing; {tag_dir} is not a complete DeepSpeed checkpoint")
    try:
        states = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means the file is not what we wrote
        raise InputError(f"{path}: cannot be read as plain tensors ({type(e).__name__}: {e}); "
                         "it is corrupt or not a tinydnabert checkpoint") from e
    module = states.get("module") if isinstance(states, dict) else None
    if not isinstance(module, dict):
        raise InputError(f"{path}: no 'module' weights in the DeepSpeed model states")
    return {k.removeprefix(OBJECTIVE_PREFIX): v.float() for k, v in module.items()}

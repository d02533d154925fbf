"""The pretraining checkpoint format: its layout, the completeness marker, save / resolve / prune / load.

    RUN/checkpoints/latest                     tag of the newest COMPLETE checkpoint (written last, atomically)
    RUN/checkpoints/stepNNNNNNNN/              one checkpoint ("tag"):
        mp_rank_00_model_states.pt             DeepSpeed: the module weights (+ client state: step, data position)
        *_optim_states.pt, ...                 DeepSpeed: each rank's optimizer shard
        rng/rankNNNNN.pt                       every RNG of each rank (exact resume)
        tokenizer/                             the shards' tokenizer (an export needs no shards directory)
        tinydnabert_checkpoint.json            the marker: written by rank 0 after every rank's files are on
                                               disk, so a tag without it is an interrupted save; it lists
                                               every other file of the tag with its size and sha256

Complete or absent: a save killed half-way leaves a tag without a marker, which `latest` never names,
resume never reads and the next save prunes; a save that fills the disk removes its partial tag and
stops with a DiskFullError, `latest` still naming the previous checkpoint. Intact or refused: resume and
export check every file against the marker (`check`) and name the previous complete checkpoint when one
no longer matches. This module is the only place that knows these names;
train.py writes checkpoints through `save`, resume and export read them through `resolve` / `Marker.read`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tinydnabert.console import is_rank0, rank
from tinydnabert.errors import DiskFullError, InputError, disk_full_error, disk_full_reason, megabytes
from tinydnabert.io import atomic_write_json, atomic_write_text, sha256_file, tree_bytes
from tinydnabert.pretrain.distributed import rng_state, set_rng_state

CHECKPOINTS = "checkpoints"
LATEST = "latest"
MARKER = "tinydnabert_checkpoint.json"
MODEL_STATES = "mp_rank_00_model_states.pt"  # DeepSpeed's name; with ZeRO-1 every rank holds the full module
# DeepSpeed's per-rank optimizer shards: bf16_zero_pp_rank_R_mp_rank_00_optim_states.pt (bf16), zero_pp_rank_R_...
OPTIM_STATES_GLOB = "*zero_pp_rank_*_mp_rank_00_optim_states.pt"
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
    # every other file of the tag: relative path -> {"bytes", "sha256"}; empty in markers written before
    # checkpoints carried checksums (they are read, unverified). No version bump: older readers ignore it.
    files: dict[str, dict[str, Any]] = field(default_factory=dict)

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
    """All ranks: DeepSpeed files + this rank's RNG; then rank 0 checksums them into the marker, marks the
    tag complete, points `latest` at it and prunes. Every rank returns only after the marker is written.

    A full disk on any rank: that rank removes the partial tag and raises DiskFullError (exit 2; the
    launcher stops the other ranks, which wait in a barrier), and `latest` still names the previous
    complete checkpoint, so `--resume` continues from it once there is space."""
    import deepspeed.comm as dist

    tag = tag_of(marker.step)
    tag_dir = ckpt_root / tag
    try:
        previous = latest(ckpt_root)  # read before this save: what the run falls back on if it fails
    except InputError:
        previous = None
    if is_rank0() and tag_dir.exists():  # a stale partial save of this same step (killed, then resumed)
        shutil.rmtree(tag_dir)
    dist.barrier()
    try:
        engine.save_checkpoint(str(ckpt_root), tag=tag, client_state=client_state, save_latest=False)
        (tag_dir / RNG_DIR).mkdir(parents=True, exist_ok=True)
        torch.save(rng_state(), tag_dir / RNG_DIR / f"rank{rank():05d}.pt")
        dist.barrier()  # every rank's files are on disk
        if is_rank0():
            shutil.copytree(tokenizer_dir, tag_dir / TOKENIZER_DIR, dirs_exist_ok=True)
            marker.time_utc = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            marker.files = checksums(tag_dir)
            marker.write(tag_dir)
            atomic_write_text(ckpt_root / LATEST, tag + "\n")
    except Exception as e:
        reason = "no space left on device" if isinstance(e, DiskFullError) else disk_full_reason(e, tag_dir)
        if reason is None:
            raise
        written = tree_bytes(tag_dir)
        if not (tag_dir / MARKER).is_file():
            shutil.rmtree(tag_dir, ignore_errors=True)  # never half a checkpoint; frees the space it took
        # A checkpoint is about as large as the previous one (same model, same optimizer state).
        needed = f"about {megabytes(tree_bytes(previous))}" if previous else f"more than {megabytes(written)}"
        keep_note = (f"the partial {tag} was removed and {previous.name} is still the latest complete checkpoint: "
                     f"free some space, then continue with --resume" if previous
                     else f"the partial {tag} was removed; free some space and start the run again")
        raise disk_full_error(tag_dir, reason, needed, keep_note) from e
    if is_rank0():
        prune(ckpt_root, keep, marker.step)
    dist.barrier()
    return tag_dir


def checksums(tag_dir: Path) -> dict[str, dict[str, Any]]:
    """{relative path: {"bytes", "sha256"}} of every file in the tag but the marker. Read back after
    writing, ~1 s per GB (sha256 ~1-2 ms/MB from the page cache): a few percent of a save."""
    out = {}
    for path in sorted(p for p in tag_dir.rglob("*") if p.is_file()):
        rel = path.relative_to(tag_dir).as_posix()
        if rel != MARKER:
            out[rel] = {"bytes": path.stat().st_size, "sha256": sha256_file(path)}
    return out


def verify_files(tag_dir: Path, marker: Marker | None = None) -> list[str]:
    """One line per file of a checkpoint that is not as its marker lists it (missing, another size,
    another sha256); empty when all match. A marker without checksums (older) gives one line saying so."""
    marker = marker or Marker.read(tag_dir)
    if not marker.files:
        return [f"{tag_dir / MARKER}: lists no file checksums (saved by an older tinydnabert), so {tag_dir.name} "
                f"cannot be verified"]
    problems = []
    for rel, want in marker.files.items():
        path = tag_dir / rel
        try:
            size = os.path.getsize(path)
        except OSError:
            problems.append(f"{path}: missing (listed in {MARKER})")
            continue
        if size != want.get("bytes"):
            problems.append(f"{path}: {size:,} bytes, {MARKER} says {want.get('bytes'):,} (truncated or replaced)")
        elif sha256_file(path) != want.get("sha256"):
            problems.append(f"{path}: sha256 differs from {MARKER} (the file changed after it was saved)")
    return problems


def previous_complete(tag_dir: Path) -> Path | None:
    """The newest complete checkpoint before `tag_dir` in its checkpoints directory whose files match
    its marker (older markers without checksums count as matching), or None."""
    step = step_of(tag_dir.name)
    if step is None:
        return None
    for s, d in sorted(((step_of(d.name), d) for d in tag_dir.parent.iterdir() if step_of(d.name) is not None),
                       reverse=True):
        if s < step and (d / MARKER).is_file():
            try:
                with_marker = Marker.read(d)
            except InputError:  # an unreadable marker: not a checkpoint to recommend
                continue
            if not with_marker.files or not verify_files(d, with_marker):
                return d
    return None


def check(tag_dir: Path) -> Marker:
    """The marker of a checkpoint whose files all match it (resume and export read only those); else an
    InputError naming the first bad file and the previous complete checkpoint to use instead."""
    marker = Marker.read(tag_dir)
    if not marker.files:
        return marker  # older marker: nothing to check against (`tinydnabert verify` says so)
    problems = verify_files(tag_dir, marker)
    if problems:
        prev = previous_complete(tag_dir)
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        use = (f"use the previous complete checkpoint {prev} instead (--resume {prev}, or `tinydnabert export "
               f"{prev} OUT`; to make it `latest`, write {prev.name} into {tag_dir.parent / LATEST})" if prev
               else f"no earlier complete checkpoint is left in {tag_dir.parent}: start the run again")
        raise InputError(f"{problems[0]}{more}; checkpoint {tag_dir.name} is damaged: {use}")
    return marker


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


def _replay_cpu_adam_steps(base) -> None:
    """Make a resumed run's first update bit-identical to the uninterrupted run's on the CPU accelerator.

    DeepSpeed's fused Adam there (csrc/includes/cpu_adam.h, IncrementStep) keeps beta1^t and beta2^t in a C++
    object of the process and multiplies them by the betas once per step; a fresh process computes them as
    pow(beta, t), which differs in the last bit at some t (float32, beta2 0.999: t = 3, 6, 9, 12, ...). So a
    run resumed at step 5 drifted by 1 ulp from step 7 on (measured: 4.8e-7 in the loss), one resumed at step
    10 did not. Replaying steps 1..t on a one-element tensor gives the object the uninterrupted run's state
    (~5 us a step: 1 s at step 200,000). The CUDA kernel computes the bias correction from t at every step: no
    replay needed there."""
    from deepspeed.accelerator import get_accelerator
    from deepspeed.ops.adam import FusedAdam

    if not isinstance(base, FusedAdam) or get_accelerator().device_name() != "cpu":
        return
    steps = {int(st["step"]) for st in base.state.values() if "step" in st}
    if len(steps) != 1:
        return  # no step taken yet (nothing to replay), or per-tensor steps this replay does not model
    group = base.param_groups[0]
    dummy = [[torch.zeros(1)] for _ in range(4)]  # grad, param, exp_avg, exp_avg_sq
    for t in range(1, steps.pop() + 1):
        base.multi_tensor_adam(2048 * 32, base._dummy_overflow_buf, dummy, 0.0, *group["betas"], group["eps"], t,
                               base.adam_w_mode, int(group.get("bias_correction", True)), 0.0)


def load(engine, tag_dir: Path) -> tuple[Marker, dict[str, Any]]:
    """Engine state (weights, optimizer, LR schedule) and this rank's RNG from a complete checkpoint;
    returns its marker and the client state saved with it."""
    marker = Marker.read(tag_dir)
    elastic = marker.world_size != engine.world_size
    # Another world size: DeepSpeed 0.19's engine refuses to load ZeRO optimizer states saved by another
    # data-parallel size, although its ZeRO-1/2 optimizer can re-partition them (elastic_checkpoint: each rank
    # merges every rank's flat fp32 / Adam partitions and takes its new slice). So the engine loads the
    # module, LR scheduler and client state, and the optimizer is handed all ranks' files itself.
    _, client = engine.load_checkpoint(str(tag_dir.parent), tag=tag_dir.name,
                                       load_optimizer_states=not elastic, load_lr_scheduler_states=True)
    if client is None:
        raise InputError(f"{tag_dir}: DeepSpeed could not load this checkpoint; resume from an earlier one")
    if elastic:
        files = sorted(tag_dir.glob(OPTIM_STATES_GLOB), key=_zero_rank)
        if len(files) != marker.world_size:
            raise InputError(f"{tag_dir}: {len(files)} optimizer-state files for the {marker.world_size} ranks that "
                             "saved it; the checkpoint is incomplete, use an earlier one")
        # DeepSpeed's own reader: these files pickle its loss scaler, which the optimizer uses again.
        states = _AllRanks(engine.checkpoint_engine.load(str(f), map_location="cpu")["optimizer_state_dict"]
                           for f in files)
        engine.optimizer.load_state_dict(states, load_optimizer_states=True, load_from_fp32_weights=True)
    # An elastic checkpoint (ZeRO elastic_checkpoint, on any world size) restores the Adam moments and step but not
    # the optimizer's param_groups, whose lr the LR scheduler set at the saved step; a fresh engine holds the
    # schedule's step-0 lr (0 during warmup), so the first step after the resume would not move (measured: the
    # loss 0.039 off the uninterrupted run's one step later). Set it from the restored scheduler.
    if engine.lr_scheduler is not None:
        for group, lr in zip(engine.optimizer.optimizer.param_groups, engine.lr_scheduler.get_lr()):
            group["lr"] = lr
    _replay_cpu_adam_steps(engine.optimizer.optimizer)
    if elastic:
        # No per-rank RNG to restore (rank r of M need not have a file): the loop seeds each micro-batch's
        # dropout from (seed, step, slot) (distributed.seed_micro_batch), and nothing else draws from these RNGs.
        return marker, client
    set_rng_state(torch.load(tag_dir / RNG_DIR / f"rank{engine.global_rank:05d}.pt", weights_only=True))
    return marker, client


def load_module_state(tag_dir: Path) -> dict[str, torch.Tensor]:
    """The RobertaForMaskedLM state dict from DeepSpeed's model-states file, upcast to fp32 (plain tensors).
    For a bf16 run these are the rounded bf16 copies; `load_fp32_weights` gives the masters instead.

    Read with torch.load(weights_only=True): tensors and plain containers only, never arbitrary
    pickled code, so a checkpoint from elsewhere cannot run anything."""
    module = _load_model_states(tag_dir)["module"]
    return {k.removeprefix(OBJECTIVE_PREFIX): v.float() for k, v in module.items()}


def load_fp32_weights(tag_dir: Path) -> dict[str, torch.Tensor]:
    """The weights an export should hold: the module's own if it trained in fp32 (exactly
    `load_module_state`), else (bf16 / fp16) the optimizer's fp32 master weights, which the module's
    weights are a rounded copy of (bf16 keeps 8 significant bits: ~0.4 % relative error per weight)."""
    states = _load_model_states(tag_dir)
    if all(v.dtype == torch.float32 for v in states["module"].values()):
        return load_module_state(tag_dir)
    return load_master_weights(tag_dir, states)


def load_master_weights(tag_dir: Path, model_states: dict[str, Any] | None = None) -> dict[str, torch.Tensor]:
    """fp32 master weights of a ZeRO stage 1/2 checkpoint, as a RobertaForMaskedLM state dict.

    The same reconstruction as DeepSpeed's zero_to_fp32.get_fp32_state_dict_from_zero_checkpoint, which
    tests/unit/test_export.py checks it against, but read with weights_only=True: each rank's optimizer file
    holds its slice of one flat fp32 vector per parameter group; the slices are concatenated in rank order
    and cut, in the model-states file's `param_shapes` order, into parameters (skipping each parameter's
    alignment padding). Tied weights (`shared_params`: the LM decoder = the word embeddings) are filled from
    the parameter they share; buffers and frozen parameters come from the module, upcast."""
    states = model_states if model_states is not None else _load_model_states(tag_dir)
    files = sorted(tag_dir.glob(OPTIM_STATES_GLOB), key=_zero_rank)
    if not files:
        raise InputError(f"{tag_dir}: no DeepSpeed optimizer states ({OPTIM_STATES_GLOB}) to read the fp32 master "
                         "weights from; the checkpoint is incomplete, use an earlier one")
    optim = [_load_plain(f, _DEEPSPEED_STAND_INS).get("optimizer_state_dict") for f in files]
    first = optim[0]
    if not isinstance(first, dict) or first.get("zero_stage") not in (1, 2):
        raise InputError(f"{files[0]}: not the optimizer states of ZeRO stage 1 or 2 (zero_stage "
                         f"{first.get('zero_stage') if isinstance(first, dict) else None}); export needs those")
    partitions = first["partition_count"]
    world = partitions[0] if isinstance(partitions, list) else partitions
    if len(files) != world:
        raise InputError(f"{tag_dir}: {len(files)} optimizer-state files for {world} ranks; the checkpoint is "
                         "incomplete, use an earlier one")
    module = states["module"]
    out = {k: module[k].float() for k in states.get("buffer_names") or [] if k in module}
    for shapes in states.get("frozen_param_shapes") or []:
        out.update({k: module[k].float() for k in shapes})
    paddings = first.get("param_alignment_paddings")
    for g, shapes in enumerate(states["param_shapes"]):
        flat = torch.cat([o["single_partition_of_fp32_groups"][g] for o in optim])  # [all ranks' slices]
        offset = 0
        for j, (name, shape) in enumerate(shapes.items()):
            n = math.prod(shape)
            out[name] = flat[offset:offset + n].view(tuple(shape)).clone()
            offset += n + (paddings[g][j] if paddings else 0)
        if offset > flat.numel():
            raise InputError(f"{files[0]}: parameter group {g} needs {offset} values, the optimizer states hold "
                             f"{flat.numel()}; the checkpoint is corrupt, use an earlier one")
    for name, source in (states.get("shared_params") or {}).items():
        if source in out:
            out[name] = out[source]
    missing = sorted(set(module) - set(out))
    if missing:
        raise InputError(f"{tag_dir}: no fp32 master weights for {missing[:5]}; the checkpoint is not one "
                         "this version of tinydnabert wrote")
    return {k.removeprefix(OBJECTIVE_PREFIX): out[k] for k in module}


class _AllRanks(list):
    """Every saved rank's optimizer state, in rank order. DeepSpeed's ZeRO-1/2 loader merges all of them, and also
    reads `states[its rank]` for what every rank saved alike (loss scaler, clipping, version, layout); resumed
    on more ranks than saved, that rank has no file, so it is given rank 0's."""

    def __getitem__(self, i):
        if isinstance(i, int) and i >= len(self):
            return super().__getitem__(0)
        return super().__getitem__(i)


def _zero_rank(path: Path) -> int:
    """The data-parallel rank of a ZeRO optimizer-state file (..._zero_pp_rank_R_mp_rank_00_optim_states.pt)."""
    return int(path.name.split("zero_pp_rank_")[1].split("_")[0])


class _Opaque:
    """Stand-in for a DeepSpeed object in an optimizer-state file that the export never uses: it keeps the
    object's pickled state as data, so loading runs no DeepSpeed code."""

    def __setstate__(self, state: Any) -> None:
        self.state = state


class _Fragment(_Opaque):
    pass


# What DeepSpeed 0.19's ZeRO optimizer files pickle besides tensors and containers, by pickled name.
_DEEPSPEED_STAND_INS = [(_Opaque, "deepspeed.runtime.fp16.loss_scaler.LossScaler"),
                        (_Fragment, "deepspeed.utils.tensor_fragment.fragment_address"),
                        (int, "deepspeed.runtime.zero.config.ZeroStageEnum")]


def _load_plain(path: Path, stand_ins: list | None = None) -> Any:
    try:
        with torch.serialization.safe_globals(stand_ins or []):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means the file is not what we wrote
        raise InputError(f"{path}: cannot be read as plain tensors ({type(e).__name__}: {e}); "
                         "it is corrupt or not a tinydnabert checkpoint") from e


def _load_model_states(tag_dir: Path) -> dict[str, Any]:
    path = tag_dir / MODEL_STATES
    if not path.is_file():
        raise InputError(f"{path}: missing; {tag_dir} is not a complete DeepSpeed checkpoint")
    states = _load_plain(path)
    module = states.get("module") if isinstance(states, dict) else None
    if not isinstance(module, dict):
        raise InputError(f"{path}: no 'module' weights in the DeepSpeed model states")
    return states

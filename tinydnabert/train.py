"""MLM pretraining under DeepSpeed: one explicit loop, checkpoints that are complete or absent, exact resume.

    deepspeed launch/pretrain.py --deepspeed_config ds_configs/zero1.json --data SHARDS --out RUN

What DeepSpeed owns (micro-batch, accumulation, precision, ZeRO stage, clipping, optimizer, LR schedule,
the TensorBoard switch) lives in the JSON and is read back from the engine; this module owns the run
directory, the loop, logging, checkpoints and the export. The global batch is
train_batch_size = micro_batch_per_rank x gradient_accumulation_steps x world_size, e.g. zero1.json's
128 = 32 x 4 x 1 GPU = 32 x 2 x 2 GPUs.

Run directory (a reproducibility bundle):
    RUN/config.json           resolved PretrainConfig + ModelConfig + data config
    RUN/ds_config.json        the DeepSpeed config as the engine resolved it (batch sizes filled in)
    RUN/env.json              git SHA (+ RUN/git.diff if dirty), package versions, world size, command line
    RUN/tensorboard/<job>/    rank-0 TensorBoard events (train/, val/, perf/, mem/)
    RUN/checkpoints/latest    tag of the newest COMPLETE checkpoint (written last, atomically)
    RUN/checkpoints/stepNNNNNNNN/   DeepSpeed files + tinydnabert_checkpoint.json (the completeness
                              marker: step, tokens, data position, configs) + rng/rankNNNNN.pt + tokenizer/
    RUN/ranks/rankNNNNN.json  what each rank did (final step, batches, shards read, weight checksum)
    RUN/export/               plain Hugging Face directory of the final weights
    RUN/final_logits.pt       the engine's logits on two val rows (to check an export against)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import random
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from .common import InputError, atomic_write_json, atomic_write_text, is_rank0, print0, rank
from .config import add_dataclass_args, config_to_dict, dataclass_from_args
from .model import MaskedLMObjective, ModelConfig, build_model, count_parameters, flops_per_token

CHECKPOINTS = "checkpoints"
LATEST = "latest"
MARKER = "tinydnabert_checkpoint.json"
MODEL_STATES = "mp_rank_00_model_states.pt"
TB_DIR = "tensorboard"
EXPORT_DIR = "export"
FINAL_LOGITS = "final_logits.pt"

# Peak dense bf16 tensor-core FLOP/s per device, for MFU when --peak-tflops is 0 (vendor datasheets).
# First match wins, so longer names come first.
GPU_PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "GH200": 989.0, "A100": 312.0, "A10G": 70.0, "A10": 125.0,
                   "L40S": 362.0, "L4": 121.0, "V100": 125.0, "4090": 165.0, "3090": 71.0}


@dataclass
class PretrainConfig:
    """Settings the training loop owns. Batch sizes, precision, optimizer, LR schedule and clipping are
    NOT here: they are DeepSpeed's, in the --deepspeed_config JSON."""

    data: str = field(default="", metadata={"help": "shards directory made by `tinydnabert preprocess`"})
    out: str = field(default="", metadata={"help": "run directory (checkpoints, TensorBoard, export)"})
    max_steps: int = field(default=0, metadata={
        "help": "stop after this optimizer step; 0 = the LR scheduler's total_num_steps from the DeepSpeed "
                "config (stopping early does not change the schedule)"})
    log_interval: int = field(default=50, metadata={"help": "optimizer steps between console/TensorBoard lines"})
    eval_interval: int = field(default=1000, metadata={
        "help": "steps between validation passes (0 = only at the end); --val-batches sets their size"})
    save_interval: int = field(default=1000, metadata={"help": "steps between checkpoints (one is always saved at the end)"})
    keep_checkpoints: int = field(default=3, metadata={"help": "complete checkpoints to keep (oldest removed)"})
    seed: int = field(default=0, metadata={"help": "seed of weight init, dropout, shard order and masks"})
    peak_tflops: float = field(default=0.0, metadata={
        "help": "peak FLOP/s per device in TFLOP/s for MFU; 0 = bf16 datasheet value for known GPUs, a measured "
                "fp32 matmul rate on CPU"})
    export: bool = field(default=True, metadata={"help": "write RUN/export (plain HF directory) at the end"})
    compile: bool = field(default=False, metadata={"help": "torch.compile the model through the engine (GPU)"})
    resume: str = field(default="", metadata={"help": "checkpoint to resume", "cli": False})

    def __post_init__(self) -> None:
        if not self.data:
            raise InputError("--data is required: the shards directory made by `tinydnabert preprocess`")
        if not self.out:
            raise InputError("--out is required: the run directory")
        for name in ("log_interval", "save_interval", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise InputError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        for name in ("max_steps", "eval_interval"):
            if getattr(self, name) < 0:
                raise InputError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        if self.peak_tflops < 0:
            raise InputError(f"--peak-tflops must be >= 0, got {self.peak_tflops}")


# ----------------------------------------------------------------------------------------------------------
# DeepSpeed config: read, check against the world size, hand to the engine


def load_ds_config(path: str | os.PathLike) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: DeepSpeed config not found; pass --deepspeed_config ds_configs/zero1.json "
                         "(GPU) or ds_configs/zero1-cpu-fp32.json (CPU)")
    try:
        cfg = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise InputError(f"{p}: not valid JSON ({e})") from e
    if not isinstance(cfg, dict):
        raise InputError(f"{p}: expected a JSON object")
    return cfg


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


# ----------------------------------------------------------------------------------------------------------
# Rank-0 writer: a no-op elsewhere, so the loop never branches on rank to log


class RankZeroWriter:
    """TensorBoard scalars through the engine's own SummaryWriter (rank 0 only; None elsewhere)."""

    def __init__(self, summary_writer: Any | None):
        self.w = summary_writer

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if self.w is None:
            return
        for k, v in values.items():
            self.w.add_scalar(k, v, step)
        self.w.flush()

    def close(self) -> None:
        if self.w is not None:
            self.w.flush()


# ----------------------------------------------------------------------------------------------------------
# Run directory bundle, RNG state, checkpoints


def _git(*args: str) -> str:
    root = Path(__file__).resolve().parents[1]
    try:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def environment_info(world_size: int) -> dict[str, Any]:
    from importlib import metadata

    versions = {}
    for pkg in ("torch", "deepspeed", "transformers", "tokenizers", "webdataset", "numpy", "tinydnabert"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return {"git_sha": _git("rev-parse", "HEAD").strip() or None,
            "git_dirty": bool(_git("status", "--porcelain", "--untracked-files=no").strip()),
            "packages": versions, "python": sys.version.split()[0], "platform": platform.platform(),
            "hostname": platform.node(), "world_size": world_size, "argv": sys.argv,
            "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def rng_state() -> dict[str, Any]:
    """Every RNG this rank draws from, as tensors/ints (loadable with torch.load(weights_only=True))."""
    np_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1]),
             "python_pos": random.getstate()[2],
             "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2])}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((3, tuple(state["python"]), state["python_pos"]))
    np.random.set_state(("MT19937", state["numpy"]["keys"].numpy().astype(np.uint32), state["numpy"]["pos"], 0, 0.0))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def checkpoint_tag(step: int) -> str:
    return f"step{step:08d}"


def _tag_step(name: str) -> int | None:
    return int(name[4:]) if name.startswith("step") and name[4:].isdigit() else None


def latest_checkpoint(ckpt_root: Path) -> Path | None:
    """The newest complete checkpoint under ckpt_root (its `latest` file), or None."""
    latest = ckpt_root / LATEST
    if not latest.is_file():
        return None
    tag_dir = ckpt_root / latest.read_text().strip()
    if not (tag_dir / MARKER).is_file():
        raise InputError(f"{latest} names {tag_dir.name}, which is not a complete checkpoint (no {MARKER}); "
                         f"write the tag of a complete one into {latest}")
    return tag_dir


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint tag directory from a tag dir, a checkpoints dir or a run dir."""
    p = Path(path)
    if (p / MARKER).is_file():
        return p
    for root in (p, p / CHECKPOINTS):
        if (root / LATEST).is_file():
            found = latest_checkpoint(root)
            if found is not None:
                return found
    if p.is_dir() and (p / MODEL_STATES).is_file():
        raise InputError(f"{p}: checkpoint is incomplete (no {MARKER}): its save was interrupted; use an "
                         "earlier checkpoint")
    raise InputError(f"{p}: not a tinydnabert checkpoint, checkpoints directory or run directory "
                     f"(no {MARKER} and no {LATEST} file)")


def save_checkpoint(engine, ckpt_root: Path, step: int, client_state: dict[str, Any],
                    marker: dict[str, Any], tokenizer_dir: Path, keep: int) -> Path:
    """All ranks: DeepSpeed files + this rank's RNG; then rank 0 marks the tag complete and points
    `latest` at it. A save killed half-way leaves a tag dir without a marker, never named by `latest`
    (resume ignores and later prunes it)."""
    import deepspeed.comm as dist

    tag = checkpoint_tag(step)
    tag_dir = ckpt_root / tag
    if is_rank0() and tag_dir.exists():  # a stale partial save of this same step (killed, then resumed)
        shutil.rmtree(tag_dir)
    dist.barrier()
    engine.save_checkpoint(str(ckpt_root), tag=tag, client_state=client_state, save_latest=False)
    (tag_dir / "rng").mkdir(parents=True, exist_ok=True)
    torch.save(rng_state(), tag_dir / "rng" / f"rank{rank():05d}.pt")
    dist.barrier()  # every rank's files are on disk
    if is_rank0():
        shutil.copytree(tokenizer_dir, tag_dir / "tokenizer", dirs_exist_ok=True)
        atomic_write_json(tag_dir / MARKER, marker)
        atomic_write_text(ckpt_root / LATEST, tag + "\n")
        _prune(ckpt_root, keep, step)
    dist.barrier()
    return tag_dir


def _prune(ckpt_root: Path, keep: int, current: int) -> None:
    complete, partial = [], []
    for d in ckpt_root.iterdir():
        s = _tag_step(d.name)
        if s is None or not d.is_dir() or s > current:
            continue
        (complete if (d / MARKER).is_file() else partial).append((s, d))
    complete.sort()
    for _, d in complete[:-keep] + partial:
        shutil.rmtree(d, ignore_errors=True)


# ----------------------------------------------------------------------------------------------------------
# Metrics


def peak_flops_per_device(cfg: PretrainConfig, device: torch.device) -> tuple[float, str]:
    """Peak FLOP/s per device and where the number came from."""
    if cfg.peak_tflops > 0:
        return cfg.peak_tflops * 1e12, "--peak-tflops"
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, tflops in GPU_PEAK_TFLOPS.items():
            if key in name:
                return tflops * 1e12, f"bf16 datasheet ({name})"
        return float("nan"), f"unknown GPU {name}: pass --peak-tflops"
    # CPU: no datasheet; measure a 1024^3 fp32 matmul on this rank's threads: the best of six 50-ms
    # windows, since other jobs on the machine can only make a window slower. Its random operands come
    # from a private generator: drawing from the global one would shift dropout masks.
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(1024, 1024, generator=g), torch.randn(1024, 1024, generator=g)
    a @ b
    best = 0.0
    for _ in range(6):
        t0, n = time.perf_counter(), 0
        while time.perf_counter() - t0 < 0.05:
            a @ b
            n += 1
        best = max(best, 2 * 1024**3 * n / (time.perf_counter() - t0))
    return best, f"measured fp32 matmul, {torch.get_num_threads()} thread(s)"


def memory_stats(device: torch.device) -> dict[str, float]:
    if device.type == "cuda":
        return {"mem/max_allocated_gib": torch.cuda.max_memory_allocated(device) / 2**30,
                "mem/max_reserved_gib": torch.cuda.max_memory_reserved(device) / 2**30}
    # ru_maxrss is KiB on Linux
    return {"mem/max_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


class NonFiniteLoss(InputError):
    pass


def check_finite(loss: float, step: int, run_dir: Path) -> None:
    """Stop (on every rank: the value is all-reduced, so all agree) instead of training on NaN weights."""
    if not math.isfinite(loss):
        raise NonFiniteLoss(
            f"non-finite training loss ({loss}) at step {step}; the weights after this point are not saved. "
            f"Resume from the last complete checkpoint ({run_dir / CHECKPOINTS / LATEST}) with a lower "
            "learning rate or stronger gradient_clipping in the DeepSpeed config "
            "(`--resume` continues from it), or check the shards for corrupt samples.")


# ----------------------------------------------------------------------------------------------------------
# The loop


@dataclass
class TrainState:
    step: int = 0             # optimizer steps done
    tokens_seen: int = 0      # tokens in all ranks' batches


def train_step(engine, batches: Iterator[dict[str, torch.Tensor]], gas: int, device: torch.device,
               acc: torch.Tensor) -> float:
    """One optimizer step = `gas` micro-batches. Adds (loss, n_correct, n_masked) into the device-side
    accumulator `acc` [3] without syncing. Returns the seconds spent waiting for data."""
    wait = 0.0
    for _ in range(gas):
        t0 = time.perf_counter()
        batch = next(batches)
        wait += time.perf_counter() - t0
        input_ids = batch["input_ids"].to(device, non_blocking=True)  # [micro, seq_len]
        labels = batch["labels"].to(device, non_blocking=True)        # [micro, seq_len], -100 = unmasked
        # data.py packs rows full (no padding), so no attention mask: SDPA then runs its unmasked
        # (flash) kernel and transformers does not have to inspect a mask of ones.
        loss, n_correct, n_masked = engine(input_ids, labels)
        engine.backward(loss)
        engine.step()
        acc += torch.stack([loss.detach().double(), n_correct.double(), n_masked.double()])
    return wait


def rng_neutral(iterable: Any) -> Iterator[Any]:
    """Iterate `iterable`, but start it inside torch.random.fork_rng: a DataLoader draws its workers' base
    seed from the global torch RNG when it starts, which would shift every later dropout mask. Starting
    the train stream after a resume (and not at step 0) would otherwise break exact resume."""
    it = iter(iterable)
    with torch.random.fork_rng(devices=[]):
        first = next(it)
    yield first
    yield from it


@torch.no_grad()
def evaluate(engine, val_loader, device: torch.device) -> dict[str, float]:
    """Masked-token-weighted val loss and MLM accuracy over the fixed val set (same count on every rank).
    Runs under fork_rng, so evaluating (or not) never changes the training run."""
    with torch.random.fork_rng(devices=[]):
        return _evaluate(engine, val_loader, device)


def _evaluate(engine, val_loader, device: torch.device) -> dict[str, float]:
    import deepspeed.comm as dist

    engine.eval()
    acc = torch.zeros(3, dtype=torch.float64, device=device)  # [loss * n_masked, n_correct, n_masked]
    for batch in val_loader:
        loss, n_correct, n_masked = engine.module(batch["input_ids"].to(device), batch["labels"].to(device))
        acc += torch.stack([loss.double() * n_masked, n_correct.double(), n_masked.double()])
    engine.train()
    dist.all_reduce(acc)
    loss_n, correct, n = acc.tolist()  # sync: once per evaluation
    if n == 0:
        raise InputError("validation produced no masked tokens; check the val shards of --data")
    return {"val/loss": loss_n / n, "val/mlm_accuracy": correct / n}


def _weights_checksum(module: torch.nn.Module) -> float:
    with torch.no_grad():
        return float(sum(p.double().sum().item() for p in module.parameters()))


def pretrain(cfg: PretrainConfig, model_cfg: ModelConfig, ds_config_path: str,
             data_cfg: Any | None = None) -> TrainState:
    """Run (or resume) pretraining in the DeepSpeed launcher's environment; returns the final state.

    `data_cfg` is a tinydnabert.data.DataConfig (its seed is replaced by cfg.seed: one seed per run)."""
    import deepspeed
    import deepspeed.comm as dist
    from tqdm import tqdm

    from . import data as data_mod
    from .formats import TOKENIZER_DIR
    from .tokenizer import load_tokenizer

    run_dir = Path(cfg.out)
    ckpt_root = run_dir / CHECKPOINTS
    if "RANK" not in os.environ and "OMPI_COMM_WORLD_RANK" not in os.environ:
        # Started as `python launch/pretrain.py` (no launcher): one process. Without these DeepSpeed
        # would try MPI discovery and fail for want of mpi4py.
        for k, v in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"), ("MASTER_ADDR", "127.0.0.1"),
                     ("MASTER_PORT", "29500")):
            os.environ.setdefault(k, v)
    world_size, global_rank = int(os.environ.get("WORLD_SIZE", "1")), rank()
    if not torch.cuda.is_available() and "OMP_NUM_THREADS" not in os.environ:
        # CPU ranks share the machine's cores: torch would give every rank one thread per core, and
        # OpenMP threads that outnumber the cores spin against each other (measured on 2 cores: 77 ms
        # a step with 1 thread, 7 s with 2 while another job ran). OMP_NUM_THREADS overrides this.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_SIZE", "1"))))
    ds = load_ds_config(ds_config_path)
    _, micro, _ = check_batch_sizes(ds, world_size, where=str(ds_config_path))
    data_cfg = dataclasses.replace(data_cfg or data_mod.DataConfig(), seed=cfg.seed)

    # Shards, manifest and tokenizer are checked (by the loaders' constructors) before any process group
    # exists, so bad input is the same error on every rank rather than a hang in the first collective.
    train_loader = data_mod.build_train_loader(cfg.data, data_cfg, micro, global_rank, world_size)
    val_loader = data_mod.build_val_loader(cfg.data, data_cfg, micro, global_rank, world_size)
    tokenizer_dir = Path(cfg.data) / TOKENIZER_DIR
    model_cfg = model_cfg.with_tokenizer(load_tokenizer(tokenizer_dir))
    seq_len = data_cfg.seq_len
    if seq_len > model_cfg.max_tokens:
        raise InputError(f"--seq-len {seq_len} exceeds the model's {model_cfg.max_tokens} positions; raise "
                         f"--max-position-embeddings to {seq_len + model_cfg.pad_token_id + 1}")

    resume_from: Path | None = None
    if cfg.resume:
        resume_from = resolve_checkpoint(ckpt_root if cfg.resume == "latest" else cfg.resume)
    elif ckpt_root.is_dir() and any(_tag_step(d.name) is not None for d in ckpt_root.iterdir()):
        raise InputError(f"{run_dir} already holds checkpoints; pass --resume to continue that run, "
                         "or choose a new --out")

    # TensorBoard is switched on in the JSON; where it writes is the run directory's business.
    tb = ds.setdefault("tensorboard", {"enabled": False})
    if tb.get("output_path"):
        raise InputError(f"{ds_config_path}: remove tensorboard.output_path; events go to {run_dir / TB_DIR}")
    tb["output_path"] = str(run_dir / TB_DIR)
    tb.setdefault("job_name", "pretrain")

    # Same initial weights on every rank (DeepSpeed also broadcasts rank 0's), then a per-rank stream
    # for dropout so that ranks do not drop the same units.
    torch.manual_seed(cfg.seed)
    objective = MaskedLMObjective(build_model(model_cfg))
    n_params = count_parameters(objective.net)
    deepspeed.init_distributed()
    engine, _, _, _ = deepspeed.initialize(model=objective, model_parameters=objective.parameters(), config=ds)
    if cfg.compile:
        engine.compile()
    device = engine.device
    for seed_fn in (torch.manual_seed, random.seed, np.random.seed):
        seed_fn(cfg.seed + 1000 + engine.global_rank)

    # Read back what DeepSpeed owns.
    micro, gas, global_batch = (engine.train_micro_batch_size_per_gpu(), engine.gradient_accumulation_steps(),
                                engine.train_batch_size())
    total_sched = getattr(engine.lr_scheduler, "total_num_steps", None)
    max_steps = cfg.max_steps or total_sched
    if not max_steps:
        raise InputError(f"{ds_config_path}: no scheduler total_num_steps to run to; pass --max-steps")
    if total_sched and max_steps > total_sched:
        raise InputError(f"--max-steps {max_steps} is past the LR schedule's end ({ds_config_path}: scheduler "
                         f"total_num_steps {total_sched}, where the learning rate reaches 0); raise "
                         "total_num_steps in the JSON instead")

    state = TrainState()
    if resume_from is not None:
        marker = json.loads((resume_from / MARKER).read_text())
        if marker["world_size"] != engine.world_size:
            raise InputError(f"{resume_from}: saved by {marker['world_size']} ranks, resuming with "
                             f"{engine.world_size}; exact resume needs the same number of ranks")
        if marker["model_config"] != config_to_dict(model_cfg):
            raise InputError(f"{resume_from}: saved model config {marker['model_config']} differs from this "
                             f"launch's {config_to_dict(model_cfg)}; resume with the same model flags")
        _, client = engine.load_checkpoint(str(resume_from.parent), tag=resume_from.name,
                                           load_optimizer_states=True, load_lr_scheduler_states=True)
        state = TrainState(step=client["step"], tokens_seen=client["tokens_seen"])
        train_loader.load_state_dict(client["data"])  # refuses a differently-defined data stream
        set_rng_state(torch.load(resume_from / "rng" / f"rank{engine.global_rank:05d}.pt", weights_only=True))
        print0(f"resumed from {resume_from} at step {state.step} ({state.tokens_seen:,} tokens, "
               f"{train_loader.batches_consumed} micro-batches per rank)")

    peak, peak_src = peak_flops_per_device(cfg, device)
    fpt = flops_per_token(model_cfg, seq_len)
    tokens_per_step = global_batch * seq_len  # rows are packed full: every position is a real token
    configs = {"pretrain": config_to_dict(cfg), "model": config_to_dict(model_cfg), "data": config_to_dict(data_cfg)}
    resolved_ds = {**ds, "train_batch_size": global_batch, "train_micro_batch_size_per_gpu": micro,
                   "gradient_accumulation_steps": gas}
    if is_rank0():
        run_dir.mkdir(parents=True, exist_ok=True)
        suffix = "" if resume_from is None else f"-resume-step{state.step:08d}"
        atomic_write_json(run_dir / f"config{suffix}.json", configs)
        atomic_write_json(run_dir / f"ds_config{suffix}.json", resolved_ds)
        atomic_write_json(run_dir / f"env{suffix}.json", environment_info(engine.world_size))
        if diff := _git("diff", "HEAD"):
            atomic_write_text(run_dir / f"git{suffix}.diff", diff)
    precision = "bf16" if engine.bfloat16_enabled() else "fp16" if engine.fp16_enabled() else "fp32"
    print0(f"model {n_params:,} parameters ({model_cfg.num_hidden_layers} layers, hidden {model_cfg.hidden_size}, "
           f"vocab {model_cfg.vocab_size}) | ZeRO {engine.zero_optimization_stage()} | {precision} | global batch "
           f"{global_batch} = micro {micro} x accumulation {gas} x {engine.world_size} ranks = "
           f"{tokens_per_step:,} tokens | steps {state.step} -> {max_steps} | peak {peak / 1e12:.2f} TFLOP/s "
           f"per device ({peak_src})" + ("" if device.type == "cuda" else f" | {torch.get_num_threads()} threads/rank"))

    tb_monitor = getattr(engine.monitor, "tb_monitor", None)
    writer = RankZeroWriter(tb_monitor.summary_writer if tb_monitor is not None and is_rank0() else None)
    bar = tqdm(total=max_steps, initial=state.step, disable=not is_rank0(), dynamic_ncols=True,
               desc="pretrain", file=sys.stderr)

    def client_state() -> dict[str, Any]:
        return {"step": state.step, "tokens_seen": state.tokens_seen, "data": train_loader.state_dict()}

    def marker() -> dict[str, Any]:
        return {"step": state.step, "tokens_seen": state.tokens_seen,
                "batches_consumed_per_rank": train_loader.batches_consumed, "world_size": engine.world_size,
                "global_batch": global_batch, "seq_len": seq_len, "model_config": config_to_dict(model_cfg),
                "configs": configs, "ds_config": resolved_ds,
                "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}

    acc = torch.zeros(3, dtype=torch.float64, device=device)  # [loss sum, n_correct, n_masked] since last log
    data_wait, interval_steps, t_interval = 0.0, 0, time.perf_counter()
    last_save = state.step if resume_from is not None else -1

    def flush_metrics() -> None:
        """The log interval: the only place the training loop syncs with the device."""
        nonlocal data_wait, interval_steps, t_interval
        if interval_steps == 0:
            return
        dist.all_reduce(acc)
        loss_sum, correct, masked = acc.tolist()  # sync
        loss = loss_sum / (interval_steps * gas * engine.world_size)
        check_finite(loss, state.step, run_dir)
        dt = time.perf_counter() - t_interval
        grad_norm = engine.get_global_grad_norm()
        grad_norm = float(grad_norm) if grad_norm is not None else float("nan")
        lr = engine.get_lr()[0]
        tok_s = interval_steps * tokens_per_step / dt
        mfu = fpt * tok_s / (peak * engine.world_size)
        values = {"train/loss": loss, "train/mlm_accuracy": correct / max(masked, 1), "train/lr": lr,
                  "train/grad_norm": grad_norm, "train/tokens_seen": state.tokens_seen,
                  "perf/tokens_per_sec": tok_s, "perf/samples_per_sec": interval_steps * global_batch / dt,
                  "perf/step_time_ms": 1000 * dt / interval_steps, "perf/mfu": mfu,
                  "perf/data_wait_pct": 100 * data_wait / dt, **memory_stats(device)}
        writer.scalars(state.step, values)
        line = (f"step {state.step:06d}/{max_steps:06d} | loss {loss:.4f} | lr {lr:.1e} | "
                f"{1000 * dt / interval_steps:.0f} ms | {tok_s / 1000:.1f}k tok/s | mfu {100 * mfu:.1f}% | "
                f"data wait {100 * data_wait / dt:.1f}% | grad norm {grad_norm:.3f}")
        if is_rank0():
            bar.write(line, file=sys.stdout)
        acc.zero_()
        data_wait, interval_steps, t_interval = 0.0, 0, time.perf_counter()

    def run_eval() -> None:
        val = evaluate(engine, val_loader, device)
        writer.scalars(state.step, val)
        print0(f"step {state.step:06d}/{max_steps:06d} | val loss {val['val/loss']:.4f} | "
               f"val mlm acc {100 * val['val/mlm_accuracy']:.2f}%")

    def save() -> Path:
        nonlocal last_save
        flush_metrics()  # a checkpoint is written only after its loss was checked to be finite
        tag_dir = save_checkpoint(engine, ckpt_root, state.step, client_state(), marker(), tokenizer_dir,
                                  cfg.keep_checkpoints)
        last_save = state.step
        print0(f"saved {tag_dir}")
        return tag_dir

    batches = rng_neutral(train_loader)
    engine.train()
    while state.step < max_steps:
        data_wait += train_step(engine, batches, gas, device, acc)
        state.step += 1
        state.tokens_seen += tokens_per_step
        interval_steps += 1
        bar.update(1)
        if state.step % cfg.log_interval == 0:
            flush_metrics()
        if cfg.eval_interval and state.step % cfg.eval_interval == 0:
            flush_metrics()
            run_eval()
            t_interval = time.perf_counter()  # evaluation time is not training throughput
        if state.step % cfg.save_interval == 0:
            save()
            t_interval = time.perf_counter()
    flush_metrics()
    bar.close()
    if not cfg.eval_interval or state.step % cfg.eval_interval:
        run_eval()
    final = save() if last_save != state.step else resolve_checkpoint(ckpt_root)

    # What this rank did, to check multi-rank / multi-node runs: same step and weights, disjoint shards.
    n_workers = max(1, data_cfg.num_workers)
    shards = train_loader.split.shards
    epoch0 = sorted({Path(shards[i].path).name for w in range(n_workers) for i in data_mod.reader_shards(
        len(shards), data_cfg.seed, 0, data_cfg.shuffle, engine.global_rank, engine.world_size, w, n_workers)})
    atomic_write_json(run_dir / "ranks" / f"rank{engine.global_rank:05d}.json", {
        "rank": engine.global_rank, "world_size": engine.world_size, "hostname": platform.node(),
        "step": state.step, "batches_consumed": train_loader.batches_consumed, "tokens_seen": state.tokens_seen,
        "weights_checksum": _weights_checksum(engine.module), "epoch0_train_shards": epoch0})
    if cfg.export and is_rank0():
        from .export import export_checkpoint

        out = export_checkpoint(final, run_dir / EXPORT_DIR, overwrite=True)
        print0(f"exported {out} (AutoModelForMaskedLM.from_pretrained loads it)")
        # The engine's own logits on two val rows, so any export can be checked against the trained model.
        input_ids = next(iter(val_loader))["input_ids"][:2]
        engine.eval()
        with torch.no_grad():
            logits = engine.module.net(input_ids=input_ids.to(device)).logits.float().cpu()
        torch.save({"step": state.step, "input_ids": input_ids, "logits": logits}, run_dir / FINAL_LOGITS)
    writer.close()
    dist.barrier()
    return state


# ----------------------------------------------------------------------------------------------------------
# Command line (launch/pretrain.py is a thin wrapper around these)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    import deepspeed

    from .data import DataConfig

    add_dataclass_args(parser.add_argument_group("run"), PretrainConfig)
    parser.add_argument("--resume", nargs="?", const="latest", default="", metavar="CHECKPOINT",
                        help="continue a run: no value = the latest complete checkpoint in --out; or a "
                             "checkpoint directory (RUN/checkpoints/stepNNNNNNNN)")
    add_dataclass_args(parser.add_argument_group("model"), ModelConfig)
    # --seed is the run's one seed (PretrainConfig); DataConfig's seed follows it.
    add_dataclass_args(parser.add_argument_group("data"), DataConfig, skip=("seed",))
    parser.add_argument("--local_rank", type=int, default=-1, help="set by the DeepSpeed launcher")
    deepspeed.add_config_arguments(parser)


def main(args: argparse.Namespace) -> int:
    from .data import DataConfig

    if not getattr(args, "deepspeed_config", None):
        raise InputError("--deepspeed_config is required (ds_configs/zero1.json on GPU, "
                         "ds_configs/zero1-cpu-fp32.json on CPU)")
    cfg = dataclass_from_args(PretrainConfig, args)
    model_cfg = dataclass_from_args(ModelConfig, args)
    data_cfg = dataclass_from_args(DataConfig, args, seed=cfg.seed)
    pretrain(cfg, model_cfg, args.deepspeed_config, data_cfg)
    return 0

"""MLM pretraining under DeepSpeed: setup -> resume -> fit (the loop) -> finalize.

    deepspeed launch/pretrain.py --deepspeed_config ds_configs/zero1.json --data SHARDS --out RUN

What DeepSpeed owns (micro-batch, accumulation, precision, ZeRO stage, clipping, optimizer, LR schedule,
the TensorBoard switch) lives in the JSON (ds_config.py) and is read back from the engine; this module owns
the loop. The global batch is train_batch_size = micro_batch_per_rank x gradient_accumulation_steps x
world_size, e.g. zero1.json's 128 = 32 x 4 x 1 GPU = 32 x 2 x 2 GPUs.

Who owns the rest: the run directory's layout and bundle (rundir.py), checkpoints and their marker
(checkpoint.py), the launcher-less bootstrap and RNG state (distributed.py), what is measured and logged
(metrics.py), the data stream (data/), the model (model.py, which knows nothing of DeepSpeed).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch

from tinydnabert.config import add_dataclass_args, config_to_dict, dataclass_from_args
from tinydnabert.console import is_rank0, print0, rank
from tinydnabert.errors import InputError
from tinydnabert.io import OutputLock, atomic_write_json
from tinydnabert.pretrain import checkpoint, distributed, ds_config, metrics, recipes, rundir
from tinydnabert.pretrain.model import MaskedLMObjective, ModelConfig, build_model, count_parameters, flops_per_token
from tinydnabert.pretrain.recipes import RECIPES


@dataclass
class PretrainConfig:
    """Settings the training loop owns. Batch sizes, precision, optimizer, LR schedule and clipping are
    NOT here: they are DeepSpeed's, in the --deepspeed_config JSON."""

    data: list[str] = field(default_factory=list, metadata={"repeat": True, "help": (
        "shards directory made by `tinydnabert preprocess`: a path, an http(s)://, s3:// or gs:// URL, or "
        "pipe:COMMAND (tinydnabert/sources.py); repeat as NAME=WHERE:WEIGHT for a mixture, e.g. --data "
        "human=runs/chr20:0.8 --data yeast=runs/yeast:0.2")})
    out: str = field(default="", metadata={"help": "run directory (checkpoints, TensorBoard, export)"})
    max_steps: int = field(default=0, metadata={
        "help": "stop after this optimizer step; 0 = the LR scheduler's total_num_steps from the DeepSpeed "
                "config (stopping early does not change the schedule)"})
    log_interval: int = field(default=50, metadata={"help": "optimizer steps between console/TensorBoard lines"})
    eval_interval: int = field(default=1000, metadata={
        "help": "steps between validation passes (0 = only at the end); --val-batches sets their size"})
    save_interval: int = field(default=1000, metadata={
        "help": "steps between checkpoints (one is always saved at the end)"})
    keep_checkpoints: int = field(default=3, metadata={"help": "complete checkpoints to keep (oldest removed)"})
    seed: int = field(default=0, metadata={"help": "seed of weight init, dropout, shard order and masks"})
    peak_tflops: float = field(default=0.0, metadata={
        "help": "peak FLOP/s per device in TFLOP/s for MFU; 0 = bf16 datasheet value for known GPUs, a measured "
                "fp32 matmul rate on CPU"})
    export: bool = field(default=True, metadata={"help": "write RUN/export (plain HF directory) at the end"})
    compile: bool = field(default=False, metadata={"help": "torch.compile the model through the engine (GPU)"})
    cache_dir: str = field(default="", metadata={
        "help": "remote --data: keep every shard read (verified) here and read it from here next time; "
                "default: shards stream into memory and are not kept"})
    init_from: str = field(default="", metadata={
        "help": "continued pretraining: start from this export's weights (ours, or an HF RoBERTa masked-LM of the "
                "same shape whose tokenizer is the shards'); the LR schedule and data start from step 0"})
    log_rows: bool = field(default=False, metadata={
        "help": "debug: append step, slot and a checksum of every micro-batch's rows to RUN/rows/rankNNNNN.tsv "
                "(a sha1 of each micro-batch on the host; tests compare runs on different world sizes with it)"})
    recipe: str = field(default="", metadata={
        "help": "a named recipe's model/data settings (tinydnabert/pretrain/recipes.py, docs/recipes.md): "
                f"{', '.join(RECIPES)}; a model/data flag given with another value wins over it"})
    resume: str = field(default="", metadata={"help": "checkpoint to resume", "cli": False})

    def __post_init__(self) -> None:
        self.data = [str(d) for d in ([self.data] if isinstance(self.data, (str, os.PathLike)) else self.data or [])
                     if str(d)]
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
        if self.recipe and self.recipe not in RECIPES:
            raise InputError(f"--recipe {self.recipe!r}: not a recipe; choose one of {', '.join(RECIPES)} "
                             "(docs/recipes.md)")


@dataclass
class TrainState:
    step: int = 0             # optimizer steps done
    tokens_seen: int = 0      # tokens in all ranks' batches
    last_saved: int = -1      # step of the newest checkpoint this run wrote or resumed from


@dataclass
class Run:
    """Everything `setup` builds and the loop reads: the engine, the loaders and what was read back from
    DeepSpeed. One object instead of closures sharing state."""

    cfg: PretrainConfig
    model_cfg: ModelConfig
    data_cfg: Any
    ds_path: str
    engine: Any
    train_loader: Any
    val_loaders: dict[str, Any]  # one fixed val set per --data source
    tokenizer_dir: Path
    run_dir: Path
    max_steps: int
    seq_len: int
    configs: dict[str, Any]
    resolved_ds: dict[str, Any]
    resume_from: Path | None
    n_params: int
    lock: OutputLock | None = None  # rank 0's lock on the run directory, held until the run ends

    @property
    def ckpt_root(self) -> Path:
        return self.run_dir / checkpoint.CHECKPOINTS

    @property
    def device(self) -> torch.device:
        return self.engine.device

    @property
    def gas(self) -> int:
        return self.engine.gradient_accumulation_steps()

    @property
    def global_batch(self) -> int:
        return self.engine.train_batch_size()

    @property
    def tokens_per_step(self) -> int:
        return self.global_batch * self.seq_len  # rows are packed full: every position is a real token


# ----------------------------------------------------------------------------------------------------------
# Setup: check every input before any process group exists, then build the engine


def _lock_run_dir(run_dir: Path, global_rank: int, world_size: int) -> tuple[OutputLock | None, InputError | None]:
    """One run per run directory (two would prune and overwrite each other's checkpoints). Rank 0 locks it
    before any process group exists; if it is in use, a lone process stops here, and with several ranks
    rank 0 carries on to the engine, where every rank raises its message at once (raise_on_every_rank):
    rank 0 stopping alone would leave the others waiting in a collective, on other nodes for 30 minutes."""
    if global_rank != 0:
        return None, None
    try:
        return OutputLock(run_dir, "--out"), None
    except InputError as e:
        if world_size == 1:
            raise
        return None, e


def setup(cfg: PretrainConfig, model_cfg: ModelConfig, ds_path: str, data_cfg: Any | None = None) -> Run:
    import deepspeed

    from tinydnabert.formats import TOKENIZER_DIR
    from tinydnabert.prep.tokenizer import load_tokenizer
    from tinydnabert.pretrain import data as data_mod
    from tinydnabert.pretrain import sources

    distributed.bootstrap_env()
    distributed.set_cpu_threads()
    world_size, global_rank = distributed.world_size(), rank()
    run_dir = Path(cfg.out)
    lock, in_use = _lock_run_dir(run_dir, global_rank, world_size)
    ds = ds_config.load(ds_path)
    global_batch, micro, _ = ds_config.check_batch_sizes(ds, world_size, where=str(ds_path))
    data_cfg = dataclasses.replace(data_cfg or data_mod.DataConfig(), seed=cfg.seed)

    # Shards, manifest and tokenizer are checked (by the loaders' constructors) before any process group
    # exists, so bad input is the same error on every rank rather than a hang in the first collective.
    # A remote source's manifest and tokenizer are fetched here (sources.py); a mixture's tokenizers must agree.
    srcs = sources.resolve(cfg.data, cfg.cache_dir or None)
    train_loader = data_mod.build_train_loader(srcs, data_cfg, micro, global_rank, world_size,
                                               global_batch=global_batch)
    val_loaders = data_mod.build_val_loaders(srcs, data_cfg, micro, global_rank, world_size)
    tokenizer_dir = srcs[0].local / TOKENIZER_DIR
    model_cfg = model_cfg.with_tokenizer(load_tokenizer(tokenizer_dir))
    if data_cfg.seq_len > model_cfg.max_tokens:
        offset = model_cfg.max_position_embeddings - model_cfg.max_tokens  # RoBERTa's pad_id + 1; ModernBERT's 0
        raise InputError(f"--seq-len {data_cfg.seq_len} exceeds the model's {model_cfg.max_tokens} positions; "
                         f"raise --max-position-embeddings to {data_cfg.seq_len + offset}")
    ckpt_root = run_dir / checkpoint.CHECKPOINTS
    resume_from = None
    if cfg.resume:
        resume_from = checkpoint.resolve(ckpt_root if cfg.resume == "latest" else cfg.resume)
        checkpoint.check(resume_from)  # every file as saved, on every rank, before any process group
    elif checkpoint.has_checkpoints(ckpt_root):
        raise InputError(f"{run_dir} already holds checkpoints; pass --resume to continue that run, "
                         "or choose a new --out")

    # TensorBoard is switched on in the JSON; where it writes is the run directory's business.
    tb = ds.setdefault("tensorboard", {"enabled": False})
    if tb.get("output_path"):
        raise InputError(f"{ds_path}: remove tensorboard.output_path; events go to {run_dir / rundir.TB_DIR}")
    tb["output_path"] = str(run_dir / rundir.TB_DIR)
    tb.setdefault("job_name", "pretrain")
    if in_use:
        tb["enabled"] = False  # write no events file into the other run's directory

    # Same initial weights on every rank (DeepSpeed also broadcasts rank 0's), then a per-rank stream
    # for dropout so that ranks do not drop the same units.
    torch.manual_seed(cfg.seed)
    # masked_per_row > 0: the head on a fixed N positions per row (no sync); the data caps rows at N.
    objective = MaskedLMObjective(build_model(model_cfg), masked_per_row=data_cfg.masked_per_row)
    init = None
    if cfg.init_from and resume_from is None:  # a resumed run has its own weights in the checkpoint
        from tinydnabert.pretrain.export import load_init_weights

        state, init = load_init_weights(cfg.init_from, model_cfg, load_tokenizer(tokenizer_dir))
        objective.net.load_state_dict(state)  # every rank loads the same file: identical weights
        print0(f"initialised from {init['path']} ({', '.join(init['files'])})")
    # DeepSpeed has no warmup-stable-decay: a WarmupStableDecayLR block is built here (schedule.py) and handed
    # over as a client scheduler, which DeepSpeed steps, checkpoints and restores like its own.
    wsd = ds_config.check_schedule(ds, where=str(ds_path))
    client_sched = None
    if wsd is not None:
        from tinydnabert.pretrain import schedule

        client_sched = schedule.build(wsd)
    deepspeed.init_distributed()
    engine, _, _, _ = deepspeed.initialize(
        model=objective, model_parameters=objective.parameters(), lr_scheduler=client_sched,
        config={k: v for k, v in ds.items() if k != "scheduler"} if wsd is not None else ds)
    distributed.raise_on_every_rank(in_use)
    distributed.release_shm_buffer()
    if cfg.compile:
        engine.compile()
    distributed.seed_rank(cfg.seed, engine.global_rank)

    total_sched = getattr(engine.lr_scheduler, "total_num_steps", None)
    max_steps = cfg.max_steps or total_sched
    if not max_steps:
        raise InputError(f"{ds_path}: no scheduler total_num_steps to run to; pass --max-steps")
    if total_sched and max_steps > total_sched:
        raise InputError(f"--max-steps {max_steps} is past the LR schedule's end ({ds_path}: scheduler "
                         f"total_num_steps {total_sched}, where the learning rate reaches 0); raise "
                         "total_num_steps in the JSON instead")
    configs = {"pretrain": config_to_dict(cfg), "model": config_to_dict(model_cfg), "data": config_to_dict(data_cfg),
               **({"init_from": init} if init else {})}  # where the weights started: path + sha256 per file
    resolved_ds = {**ds, "train_batch_size": engine.train_batch_size(),
                   "train_micro_batch_size_per_gpu": engine.train_micro_batch_size_per_gpu(),
                   "gradient_accumulation_steps": engine.gradient_accumulation_steps()}
    return Run(cfg, model_cfg, data_cfg, str(ds_path), engine, train_loader, val_loaders, tokenizer_dir, run_dir,
               max_steps, data_cfg.seq_len, configs, resolved_ds, resume_from, count_parameters(objective.net), lock)


def resume(run: Run) -> TrainState:
    """The state to start from: step 0, or the checkpoint's weights, optimizer, schedule, data position and RNG."""
    if run.resume_from is None:
        return TrainState()
    engine, where = run.engine, run.resume_from
    marker = checkpoint.Marker.read(where)
    if marker.global_batch != run.global_batch:
        raise InputError(f"{where}: saved with a global batch of {marker.global_batch} rows, resuming with "
                         f"{run.global_batch}; set train_batch_size {marker.global_batch} in {run.ds_path}")
    if marker.world_size != engine.world_size:
        # Other hardware: the data position is a global step (data/layout.py), dropout is seeded per slot, and
        # DeepSpeed's elastic ZeRO-1 checkpoint re-partitions the optimizer state (checkpoint.py).
        for name, ds in (("the checkpoint", marker.ds_config), (run.ds_path, run.resolved_ds)):
            if not (ds.get("zero_optimization") or {}).get("elastic_checkpoint"):
                raise InputError(f"{where}: saved by {marker.world_size} ranks, resuming with {engine.world_size}, "
                                 f"but {name} lacks \"zero_optimization\": {{\"elastic_checkpoint\": true}}, "
                                 f"without which DeepSpeed cannot re-partition the optimizer state; resume "
                                 f"with {marker.world_size} ranks")
        print0(f"resuming a {marker.world_size}-rank checkpoint on {engine.world_size} ranks: same global batch "
               f"and rows per step, optimizer state re-partitioned")
    if marker.model_config != config_to_dict(run.model_cfg):
        saved = run_recipe_of(run.run_dir)
        hint = f" and --recipe {saved}" if saved else ""
        raise InputError(f"{where}: saved model config {marker.model_config} differs from this "
                         f"launch's {config_to_dict(run.model_cfg)}; resume with the same model flags{hint}")
    _, client = checkpoint.load(engine, where)
    run.train_loader.load_state_dict(client["data"])  # refuses a differently-defined data stream
    state = TrainState(step=client["step"], tokens_seen=client["tokens_seen"], last_saved=client["step"])
    print0(f"resumed from {where} at step {state.step} ({state.tokens_seen:,} tokens, "
           f"{run.train_loader.batches_consumed} micro-batches per rank)")
    return state


def run_recipe_of(run_dir: Path) -> str:
    """The --recipe a run directory was started with ("" if none or unreadable): for the resume error's hint."""
    try:
        return json.loads((run_dir / "config.json").read_text())["pretrain"].get("recipe", "")
    except (OSError, ValueError, KeyError, TypeError):
        return ""


def announce(run: Run, state: TrainState, peak: float, peak_src: str) -> None:
    """Rank 0: the run bundle on disk and one line saying what this run is."""
    engine, m = run.engine, run.model_cfg
    if is_rank0():
        rundir.write_bundle(run.run_dir, run.configs, run.resolved_ds, engine.world_size,
                            resumed_at=None if run.resume_from is None else state.step)
    precision = "bf16" if engine.bfloat16_enabled() else "fp16" if engine.fp16_enabled() else "fp32"
    print0(f"model {run.n_params:,} parameters ({m.num_hidden_layers} layers, hidden {m.hidden_size}, "
           f"vocab {m.vocab_size}) | ZeRO {engine.zero_optimization_stage()} | {precision} | global batch "
           f"{run.global_batch} = micro {engine.train_micro_batch_size_per_gpu()} x accumulation {run.gas} x "
           f"{engine.world_size} ranks = {run.tokens_per_step:,} tokens | steps {state.step} -> {run.max_steps} | "
           f"peak {peak / 1e12:.2f} TFLOP/s per device ({peak_src})"
           + ("" if run.device.type == "cuda" else f" | {torch.get_num_threads()} threads/rank"))
    mix = run.train_loader.mix
    if mix is not None:
        print0("mixture: " + ", ".join(f"{s.name} {share:.4f} ({s.root})"
                                       for s, share in zip(run.train_loader.sources, mix.shares))
               + " of the rows (shares exact over every block of a lane: data.Mixture)")


# ----------------------------------------------------------------------------------------------------------
# The loop


def train_step(engine, batches: Iterator[dict[str, torch.Tensor]], gas: int, device: torch.device,
               acc: torch.Tensor, seed_dropout=None) -> float:
    """One optimizer step = `gas` micro-batches. Adds (loss, n_correct, n_masked) into the device-side
    accumulator `acc` [3] without syncing. `seed_dropout(m)`, if given, seeds micro-step m's dropout.
    Returns the seconds spent waiting for data."""
    wait = 0.0
    for m in range(gas):
        if seed_dropout is not None:
            seed_dropout(m)
        t0 = time.perf_counter()
        batch = next(batches)
        wait += time.perf_counter() - t0
        input_ids = batch["input_ids"].to(device, non_blocking=True)  # [micro, seq_len]
        labels = batch["labels"].to(device, non_blocking=True)        # [micro, seq_len], -100 = unmasked
        # data/packing.py packs rows full (no padding), so no attention mask: SDPA then runs its unmasked
        # (flash) kernel and transformers does not have to inspect a mask of ones.
        loss, n_correct, n_masked = engine(input_ids, labels)
        engine.backward(loss)
        engine.step()
        acc += torch.stack([loss.detach().double(), n_correct.double(), n_masked.double()])
    return wait


def fit(run: Run, state: TrainState) -> None:
    """Optimizer steps to max_steps; log, evaluate and save only at step boundaries."""
    from tqdm import tqdm

    peak, peak_src = metrics.peak_flops_per_device(run.cfg.peak_tflops, run.device)
    announce(run, state, peak, peak_src)
    tb = getattr(run.engine.monitor, "tb_monitor", None)
    writer = metrics.RankZeroWriter(tb.summary_writer if tb is not None and is_rank0() else None)
    meter = metrics.IntervalMeter(run.device)
    bar = tqdm(total=run.max_steps, initial=state.step, disable=not is_rank0(), dynamic_ncols=True,
               desc="pretrain", file=sys.stderr)
    log = functools.partial(log_interval, run, state, meter, writer, bar, peak)
    cfg, batches = run.cfg, distributed.rng_neutral(run.train_loader)
    if cfg.log_rows:
        batches = _logging_rows(batches, run)
    run.engine.train()
    slot = run.train_loader.layout.slot  # micro-step m of this rank -> its place in the global batch
    # micro-step m's dropout stream is a function of (seed, step, slot): any rank computing the slot draws it
    dropout = functools.partial(_seed_dropout, cfg.seed, state, slot)
    while state.step < run.max_steps:
        meter.data_wait += train_step(run.engine, batches, run.gas, run.device, meter.acc, dropout)
        state.step += 1
        state.tokens_seen += run.tokens_per_step
        meter.steps += 1
        bar.update(1)
        if state.step % cfg.log_interval == 0:
            log()
        if cfg.eval_interval and state.step % cfg.eval_interval == 0:
            log()
            run_eval(run, state, writer)
            meter.pause_clock()
        if state.step % cfg.save_interval == 0:
            log()  # a checkpoint is written only after its loss was checked to be finite
            save(run, state)
            meter.pause_clock()
    log()
    bar.close()
    if not cfg.eval_interval or state.step % cfg.eval_interval:
        run_eval(run, state, writer)
    if state.last_saved != state.step:
        log()
        save(run, state)
    writer.close()


def _seed_dropout(seed: int, state: TrainState, slot, m: int) -> None:
    distributed.seed_micro_batch(seed, state.step, slot(m))


def _logging_rows(batches: Iterator[dict[str, torch.Tensor]], run: Run) -> Iterator[dict[str, torch.Tensor]]:
    """--log-rows: pass the batches on, appending "step slot sha1" of each to RUN/rows/rankNNNNN.tsv (step as
    the console counts it, from 1; a resumed run appends, so the last line of a (step, slot) is the latest)."""
    import hashlib

    path = rundir.rows_log_path(run.run_dir, run.engine.global_rank)
    path.parent.mkdir(parents=True, exist_ok=True)
    layout = run.train_loader.layout
    with path.open("a") as f:
        for j, batch in enumerate(batches, run.train_loader.batches_consumed):
            step, slot = layout.micro_batch(j)
            digest = hashlib.sha1(batch["input_ids"].numpy().tobytes() + batch["labels"].numpy().tobytes())
            # a mixture adds the rows of each source in this micro-batch, as the worker drew them
            per_source = "" if "source" not in batch else "\t" + ",".join(
                str(int(c)) for c in torch.bincount(batch["source"], minlength=len(run.val_loaders)))
            f.write(f"{step + 1}\t{slot}\t{digest.hexdigest()[:16]}{per_source}\n")
            f.flush()
            yield batch


def log_interval(run: Run, state: TrainState, meter: metrics.IntervalMeter, writer: metrics.RankZeroWriter,
                 bar, peak: float) -> None:
    """The log interval: the only place the training loop syncs with the device."""
    import deepspeed.comm as dist

    if meter.steps == 0:
        return
    engine, steps = run.engine, meter.steps
    loss_sum, correct, masked, dt = meter.read(dist.all_reduce)
    loss = loss_sum / (steps * run.gas * engine.world_size)
    metrics.check_finite(loss, state.step, str(run.ckpt_root / checkpoint.LATEST))
    grad_norm = engine.get_global_grad_norm()
    grad_norm = float(grad_norm) if grad_norm is not None else float("nan")
    lr = engine.get_lr()[0]
    tok_s = steps * run.tokens_per_step / dt
    mfu = flops_per_token(run.model_cfg, run.seq_len) * tok_s / (peak * engine.world_size)
    writer.scalars(state.step, {
        "train/loss": loss, "train/mlm_accuracy": correct / max(masked, 1), "train/lr": lr,
        "train/grad_norm": grad_norm, "train/tokens_seen": state.tokens_seen, "perf/tokens_per_sec": tok_s,
        "perf/samples_per_sec": steps * run.global_batch / dt, "perf/step_time_ms": 1000 * dt / steps,
        "perf/mfu": mfu, "perf/data_wait_pct": 100 * meter.data_wait / dt, **metrics.memory_stats(run.device),
        **({} if run.train_loader.mix is None else {  # exact counts of the stream, not a measurement: no sync
            f"train/tokens_seen/{name}": rows * run.seq_len
            for name, rows in run.train_loader.rows_by_source(state.step).items()})})
    if is_rank0():
        bar.write(f"step {state.step:06d}/{run.max_steps:06d} | loss {loss:.4f} | lr {lr:.1e} | "
                  f"{1000 * dt / steps:.0f} ms | {tok_s / 1000:.1f}k tok/s | mfu {100 * mfu:.1f}% | "
                  f"data wait {100 * meter.data_wait / dt:.1f}% | grad norm {grad_norm:.3f}", file=sys.stdout)
    meter.restart()


def run_eval(run: Run, state: TrainState, writer: metrics.RankZeroWriter) -> None:
    """The val loss of each source; for a mixture, val/loss is their mean weighted as the mixture is."""
    if len(run.val_loaders) == 1:
        val = evaluate(run.engine, next(iter(run.val_loaders.values())), run.device)
    else:
        shares = dict(zip(run.val_loaders, run.train_loader.mix.shares))
        per = {name: evaluate(run.engine, loader, run.device) for name, loader in run.val_loaders.items()}
        val = {f"val/{name}/{k.split('/', 1)[1]}": v for name, r in per.items() for k, v in r.items()}
        val.update({k: sum(shares[n] * per[n][k] for n in per) for k in ("val/loss", "val/mlm_accuracy")})
        print0(f"step {state.step:06d}/{run.max_steps:06d} | "
               + " | ".join(f"val loss {name} {r['val/loss']:.4f}" for name, r in per.items()))
    writer.scalars(state.step, val)
    print0(f"step {state.step:06d}/{run.max_steps:06d} | val loss {val['val/loss']:.4f} | "
           f"val mlm acc {100 * val['val/mlm_accuracy']:.2f}%")


def save(run: Run, state: TrainState) -> Path:
    marker = checkpoint.Marker(
        step=state.step, tokens_seen=state.tokens_seen, batches_consumed_per_rank=run.train_loader.batches_consumed,
        world_size=run.engine.world_size, global_batch=run.global_batch, seq_len=run.seq_len,
        model_config=config_to_dict(run.model_cfg), configs=run.configs, ds_config=run.resolved_ds)
    client = {"step": state.step, "tokens_seen": state.tokens_seen, "data": run.train_loader.state_dict()}
    tag_dir = checkpoint.save(run.engine, run.ckpt_root, marker, client, run.tokenizer_dir, run.cfg.keep_checkpoints)
    state.last_saved = state.step
    print0(f"saved {tag_dir}")
    return tag_dir


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


# ----------------------------------------------------------------------------------------------------------
# Finalize: what each rank did, the export, the engine's own logits to check it against


def finalize(run: Run, state: TrainState) -> None:
    import deepspeed.comm as dist

    engine = run.engine
    # What this rank did, to check multi-rank / multi-node runs: same step and weights, disjoint shards.
    epoch0 = run.train_loader.epoch0_shards()
    atomic_write_json(rundir.rank_report_path(run.run_dir, engine.global_rank), {
        "rank": engine.global_rank, "world_size": engine.world_size, "hostname": platform.node(),
        "step": state.step, "batches_consumed": run.train_loader.batches_consumed, "tokens_seen": state.tokens_seen,
        "weights_checksum": _weights_checksum(engine.module), "epoch0_train_shards": epoch0})
    if run.cfg.export and is_rank0():
        from tinydnabert.pretrain.export import export_checkpoint

        out = export_checkpoint(checkpoint.resolve(run.ckpt_root), run.run_dir / rundir.EXPORT_DIR, overwrite=True)
        print0(f"exported {out} (AutoModelForMaskedLM.from_pretrained loads it)")
        input_ids = next(iter(next(iter(run.val_loaders.values()))))["input_ids"][:2]
        engine.eval()
        with torch.no_grad():
            logits = engine.module.net(input_ids=input_ids.to(run.device)).logits.float().cpu()
        torch.save({"step": state.step, "input_ids": input_ids, "logits": logits}, run.run_dir / rundir.FINAL_LOGITS)
    dist.barrier()


def _weights_checksum(module: torch.nn.Module) -> float:
    with torch.no_grad():
        return float(sum(p.double().sum().item() for p in module.parameters()))


def pretrain(cfg: PretrainConfig, model_cfg: ModelConfig, ds_config_path: str,
             data_cfg: Any | None = None) -> TrainState:
    """Run (or resume) pretraining in the DeepSpeed launcher's environment; returns the final state.

    `data_cfg` is a tinydnabert.pretrain.data.DataConfig (its seed is replaced by cfg.seed: one seed per run)."""
    run = setup(cfg, model_cfg, ds_config_path, data_cfg)
    try:
        state = resume(run)
        fit(run, state)
        finalize(run, state)
    finally:
        if run.lock is not None:
            run.lock.release()
    return state


# ----------------------------------------------------------------------------------------------------------
# Command line (launch/pretrain.py is a thin wrapper around these)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    import deepspeed

    from tinydnabert.pretrain.data import DataConfig

    add_dataclass_args(parser.add_argument_group("run"), PretrainConfig)
    parser.add_argument("--resume", nargs="?", const="latest", default="", metavar="CHECKPOINT",
                        help="continue a run: no value = the latest complete checkpoint in --out; or a "
                             "checkpoint directory (RUN/checkpoints/stepNNNNNNNN)")
    add_dataclass_args(parser.add_argument_group("model"), ModelConfig)
    # --seed is the run's one seed (PretrainConfig); DataConfig's seed follows it.
    add_dataclass_args(parser.add_argument_group("data"), DataConfig, skip=("seed",))
    parser.add_argument("--local_rank", type=int, default=-1, help="set by the DeepSpeed launcher")
    deepspeed.add_config_arguments(parser)


def configs_from_args(args: argparse.Namespace) -> tuple[PretrainConfig, ModelConfig, Any]:
    """(run, model, data) configs of the command line, a --recipe filled in where a flag kept its default."""
    from tinydnabert.pretrain.data import DataConfig

    cfg = dataclass_from_args(PretrainConfig, args)
    model_cfg = dataclass_from_args(ModelConfig, args)
    data_cfg = dataclass_from_args(DataConfig, args, seed=cfg.seed)
    if cfg.recipe:
        model_cfg, data_cfg = recipes.apply(cfg.recipe, model_cfg, data_cfg)
    return cfg, model_cfg, data_cfg


def main(args: argparse.Namespace) -> int:
    if not getattr(args, "deepspeed_config", None):
        raise InputError(f"--deepspeed_config is required (ds_configs/{ds_config.GPU_CONFIG} on GPU, "
                         f"ds_configs/{ds_config.CPU_CONFIG} on CPU)")
    cfg, model_cfg, data_cfg = configs_from_args(args)
    pretrain(cfg, model_cfg, args.deepspeed_config, data_cfg)
    return 0

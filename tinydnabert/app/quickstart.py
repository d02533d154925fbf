"""The whole pipeline, one command: genome -> preprocess (BPE tokenizer + shards) -> DeepSpeed MLM
pretraining -> HF export -> fine-tuning on real tasks (pretrained vs scratch) -> results table + figures.

    make demo                                        # = tinydnabert quickstart
    tinydnabert quickstart --out runs/qs --fasta my_genome.fa.gz
    tinydnabert quickstart --smoke                   # smallest setting (~2 min on 2 CPU cores), what the test runs
    tinydnabert quickstart --dry-run                 # print the plan: stages, budgets, the exact commands

Every stage runs the same command a user would type from the README (printed as `$ ...` before it
runs), so the quickstart doubles as a runbook. Before each stage a banner says what it does, the
time so far and how long is left; the estimate comes from a per-stage budget measured on a
2-core CPU machine, rescaled by how fast the finished stages ran compared with their budgets.
A stage that fails stops the run with its name and exit status; its command can be rerun alone.

The genome is --fasta, else $TINYDNABERT_FASTA, else the real GRCh37 chr20 in
$TINYDNABERT_DATA/genome, else UCSC hg38 chr21 fetched with `tinydnabert download hg38-chr21`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from tinydnabert.config import add_dataclass_args, config_to_dict, dataclass_from_args, to_flags
from tinydnabert.console import eprint
from tinydnabert.errors import InputError
from tinydnabert.io import OutputLock, atomic_write_json, data_dir

# The pretraining entry point ships inside the package (a wheel has no checkout around it); in a checkout
# the top-level launch/ is a link to the same folder, and the command is printed as the README spells it.
LAUNCH_PRETRAIN = Path(__file__).resolve().parent / "launch" / "pretrain.py"
# What benchmarks/pretrain_scaling.py recorded, read from the checkout the quickstart runs in (if it is one).
CURVE = Path("benchmarks") / "results" / "pretrain_scaling.json"

FASTA_ENV = "TINYDNABERT_FASTA"
DEFAULT_GENOME = "grch37_chr20.fa.gz"
SMOKE_GENOME = "hg38_chr2_1-2333275.fa.gz"
RECORD = "quickstart.json"  # written into OUT; marks a directory this script may replace


# ---------------------------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Preset:
    """Everything that changes between the smoke test, the 2-core CPU demo and a GPU run."""
    name: str
    # preprocess
    vocab_size: int
    min_frequency: int
    samples_per_shard: int
    val_fraction: float
    # pretrain: the DeepSpeed JSON is ds_configs/<ds_base> with the batch and the LR schedule below
    # written over it (a 200k-step schedule would still be warming up when a demo run stops).
    ds_base: str
    train_batch: int               # sequences per optimizer step (global)
    micro_batch: int               # per rank; DeepSpeed derives the accumulation
    peak_lr: float
    seq_len: int                   # tokens per packed row
    model: dict[str, int]          # ModelConfig fields passed as flags ({} = the reference model)
    recipe: str                    # launch/pretrain.py --recipe (pretrain/recipes.py; "" = none: the reference)
    hold_lr: bool                  # after the warmup, hold the peak LR (no decay) instead of linear decay to 0
    pretrain_steps: int
    eval_interval: int
    log_interval: int
    val_batches: int               # validation micro-batches per evaluation (0 = all of DIR/val)
    # evaluate (`tinydnabert benchmark`: pretrained and scratch, the same seeds, paired intervals)
    protocol: str                  # finetune | probe | both
    seeds: int
    finetune_steps: int
    finetune_batch: int
    finetune_max_train: int        # rows of each task's train split used (0 = all)
    finetune_lr: float
    tasks: str                     # default fine-tuning tasks (--tasks overrides)
    # seconds per stage on the 2-core CPU machine (GPU: estimated); they drive the ETA
    budgets: dict[str, float]


PRESETS: dict[str, Preset] = {
    # Seconds matter here: the test runs this. 30 steps of a 2-layer 64-wide model on the 2.3 Mbp
    # hg38 slice, 20 fine-tuning steps per task and kind.
    "smoke": Preset(
        name="smoke", vocab_size=256, min_frequency=2, samples_per_shard=256, val_fraction=0.02,
        ds_base="zero1-cpu-fp32.json", train_batch=8, micro_batch=8, peak_lr=1e-3, seq_len=256,
        model=dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128), recipe="",
        hold_lr=False, pretrain_steps=30, eval_interval=15, log_interval=5, val_batches=4, protocol="both", seeds=2,
        finetune_steps=20, finetune_batch=16, finetune_max_train=512, finetune_lr=1e-3,
        tasks="gue/prom_300_tata,gue/H3",
        budgets=dict(genome=1, preprocess=5, pretrain=30, export=8, finetune=50, report=8)),
    # The demo on 2 CPU cores, sized to show its gain within 15 minutes also on a machine half as fast as ours
    # (a user's 2-core box ran the 1,500-step reference demo in 33.9 min, 0.8 s a step). At equal FLOPs the
    # modernbert recipe is the one that gains early (benchmarks/recipes.py, docs/recipes.md): at 2.0M tokens its
    # probe is ahead of a random ModernBERT on gue/prom_core_all while the reference's is still behind a random
    # RoBERTa. So: 500 steps of 32 x 128 tokens (2.0M), LR 1e-3 after 50 warmup steps, *held*: that is how the
    # recipe was measured, and a linear decay to 0 over these 500 steps halves the mean LR while the loss still
    # falls fast: measured, val loss 5.677 and no probe gain (-0.002 [-0.005, +0.001], the run of
    # benchmarks/results/quickstart_linear_2026-12-05/) against 5.614 and +0.056 held. Validation every 100
    # steps (the points `tinydnabert plot` checks against the shipped curve of this recipe); then the probe alone
    # (seconds; fine-tuning both arms on two tasks took 250 s here, 1.7x the whole pretraining) with 3 paired
    # seeds on prom_core_all (5,920 test rows resolve a few hundredths of MCC) and mouse_0.
    "cpu": Preset(
        name="cpu", vocab_size=1024, min_frequency=4, samples_per_shard=2048, val_fraction=0.01,
        ds_base="zero1-cpu-fp32.json", train_batch=32, micro_batch=32, peak_lr=1e-3, seq_len=128,
        model=dict(hidden_size=128, num_hidden_layers=4, num_attention_heads=4), recipe="modernbert",
        hold_lr=True, pretrain_steps=500, eval_interval=100, log_interval=50, val_batches=16, protocol="probe", seeds=3,
        finetune_steps=200, finetune_batch=32, finetune_max_train=8000, finetune_lr=5e-4,
        tasks="gue/prom_core_all,gue/mouse_0",
        budgets=dict(genome=1, preprocess=45, pretrain=200, export=10, finetune=60, report=10)),
    # One GPU: the reference model, precision and tokens per step (128 x 512, bf16), a short run.
    "gpu": Preset(
        name="gpu", vocab_size=1024, min_frequency=4, samples_per_shard=4096, val_fraction=0.01,
        ds_base="zero1.json", train_batch=128, micro_batch=32, peak_lr=1e-4, seq_len=512,
        model={}, recipe="", hold_lr=False, pretrain_steps=2000, eval_interval=500, log_interval=50, val_batches=0,
        protocol="both", seeds=3,
        finetune_steps=1000, finetune_batch=64, finetune_max_train=0, finetune_lr=1e-4,
        tasks="gue/prom_300_tata,gue/H3",
        budgets=dict(genome=1, preprocess=40, pretrain=600, export=10, finetune=300, report=10)),
}


@dataclass
class QuickstartConfig:
    out: str = field(default="runs/quickstart", metadata={
        "help": "output directory (a previous quickstart run there is replaced)"})
    fasta: str = field(default="", metadata={
        "help": f"genome FASTA(.gz) to pretrain on (default: ${FASTA_ENV}, else $TINYDNABERT_DATA/genome/"
                f"{DEFAULT_GENOME}, else a downloaded hg38 chr21)"})
    smoke: bool = field(default=False, metadata={
        "help": "smallest setting: tiny model, few steps, the 2.3 Mbp hg38 slice (~3 min)"})
    device: str = field(default="auto", metadata={"help": "auto: the GPU preset if CUDA is available, else cpu",
                                                  "choices": ["auto", "cpu", "gpu"]})
    tasks: str = field(default="", metadata={
        "help": "fine-tuning tasks, comma-separated (see `tinydnabert finetune --list-tasks`); default: the preset's "
                "(cpu: gue/prom_core_all,gue/mouse_0; smoke and gpu: gue/prom_300_tata,gue/H3)"})
    pretrain_steps: int = field(default=0, metadata={"help": "override the preset's pretraining steps (0 = preset)"})
    finetune_steps: int = field(default=0, metadata={"help": "override the preset's fine-tuning steps (0 = preset)"})
    seed: int = field(default=0, metadata={"help": "seed for every stage"})
    heartbeat: float = field(default=60.0, metadata={
        "help": "seconds between 'still running' lines inside a long stage (0 = off)"})
    dry_run: bool = field(default=False, metadata={"help": "print the stages, budgets and commands, run nothing"})

    def __post_init__(self) -> None:
        if self.pretrain_steps < 0 or self.finetune_steps < 0:
            raise InputError("--pretrain-steps / --finetune-steps must be >= 0 (0 = the preset's value)")
        if self.fasta and not Path(self.fasta).is_file():
            raise InputError(f"--fasta {self.fasta}: file not found")

    def preset(self) -> Preset:
        if self.smoke:
            p = PRESETS["smoke"]
        elif self.device == "gpu" or (self.device == "auto" and _cuda_available()):
            p = PRESETS["gpu"]
        else:
            p = PRESETS["cpu"]
        budgets = dict(p.budgets)
        over: dict[str, object] = {}
        # An override of the step count scales that stage's budget with it, so the ETA stays honest.
        for stage, key, steps in (("pretrain", "pretrain_steps", self.pretrain_steps),
                                  ("finetune", "finetune_steps", self.finetune_steps)):
            if steps:
                budgets[stage] = budgets[stage] * steps / getattr(p, key)
                over[key] = steps
        return dataclasses.replace(p, budgets=budgets, **over)


def _cuda_available() -> bool:
    # Asked in a child process so this script does not pay for importing torch just to decide.
    try:
        r = subprocess.run([sys.executable, "-c", "import torch,sys; sys.exit(0 if torch.cuda.is_available() else 1)"],
                           capture_output=True, timeout=120)
        return r.returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


# ---------------------------------------------------------------------------------------------
# Stage runner: banners, elapsed time, ETA from budgets
# ---------------------------------------------------------------------------------------------

def fmt_s(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


@dataclass
class Stage:
    name: str
    what: str
    budget: float
    run: Callable[[], None]
    commands: list[list[str]] = field(default_factory=list)  # shown by --dry-run
    seconds: float | None = None
    status: str = "pending"


class StageRunner:
    """Runs stages in order, saying before each what it does, how long the run has taken and how
    long is left. The estimate: remaining budgets times a pace, the finished stages' actual/budget
    ratio shrunk toward 1 by a prior worth `prior` x the total budget,

        pace = (sum actual + P) / (sum budget + P),   P = prior x total budget,  clamped to 0.5..3,

    so a 1-second stage that took 0 s does not halve the estimate, while a long stage that ran
    slow (a busy or slower machine) does move it."""

    def __init__(self, stages: list[Stage], log: Callable[[str], None], heartbeat: float = 60.0,
                 clock: Callable[[], float] = time.monotonic, prior: float = 0.25):
        self.stages, self.log, self.heartbeat, self.clock = stages, log, heartbeat, clock
        self.prior = prior * sum(s.budget for s in stages)
        self.t0 = clock()

    def pace(self) -> float:
        done = [s for s in self.stages if s.seconds is not None]
        actual = sum(s.seconds for s in done) + self.prior
        budget = sum(s.budget for s in done) + self.prior
        return 1.0 if budget <= 0 else min(3.0, max(0.5, actual / budget))

    def eta(self, current: int, in_stage: float = 0.0) -> float:
        """Seconds left: the rest of stage `current` plus every later stage, at the observed pace."""
        pace = self.pace()
        cur = self.stages[current]
        expected = cur.budget * pace
        # Past its budget a stage is assumed to be nearly done (10% more), not to have "negative" time left.
        left = expected - in_stage if in_stage < expected else 0.1 * expected
        return left + sum(s.budget * pace for s in self.stages[current + 1:])

    def banner(self, i: int) -> str:
        s = self.stages[i]
        elapsed = self.clock() - self.t0
        return (f"\n=== [{i + 1}/{len(self.stages)}] {s.name}: {s.what}\n"
                f"=== elapsed {fmt_s(elapsed)} | this stage ~{fmt_s(s.budget * self.pace())} | "
                f"~{fmt_s(self.eta(i))} left in all "
                f"(ETA {time.strftime('%H:%M:%S', time.localtime(time.time() + self.eta(i)))})")

    def _beat(self, i: int, stop: threading.Event) -> None:
        start = self.clock()
        while not stop.wait(self.heartbeat):
            in_stage = self.clock() - start
            self.log(f"--- still in {self.stages[i].name}: {fmt_s(in_stage)} of "
                     f"~{fmt_s(self.stages[i].budget * self.pace())}; "
                     f"~{fmt_s(self.eta(i, in_stage))} left in all")

    def run(self) -> bool:
        for i, s in enumerate(self.stages):
            self.log(self.banner(i))
            stop = threading.Event()
            beat = None
            if self.heartbeat > 0:
                beat = threading.Thread(target=self._beat, args=(i, stop), daemon=True)
                beat.start()
            t = self.clock()
            try:
                s.run()
                s.status = "ok"
            except BaseException as e:  # noqa: BLE001 - reported, then the run stops
                s.status = "failed"
                s.seconds = self.clock() - t
                stop.set()
                self.log(f"=== {s.name} FAILED after {fmt_s(s.seconds)}: {e}")
                if isinstance(e, KeyboardInterrupt):
                    raise
                return False
            finally:
                stop.set()
                if beat is not None:
                    beat.join(timeout=1)
            s.seconds = self.clock() - t
            self.log(f"=== {s.name} done in {fmt_s(s.seconds)} (budget {fmt_s(s.budget)})")
        return True

    def table(self) -> str:
        rows = [f"{'stage':<11} {'seconds':>8} {'budget':>7}  status"]
        for s in self.stages:
            rows.append(f"{s.name:<11} {s.seconds if s.seconds is not None else float('nan'):>8.1f} "
                        f"{s.budget:>7.0f}  {s.status}")
        rows.append(f"{'total':<11} {sum(s.seconds or 0 for s in self.stages):>8.1f} "
                    f"{sum(s.budget for s in self.stages):>7.0f}")
        return "\n".join(rows)


def curve_summary(path: Path) -> str:
    """One sentence from the recorded budget curve (benchmarks/pretrain_scaling.py): the smallest pretraining
    budget at which the probe gain's interval is above 0 on at least 2 tasks, and what it cost there."""
    if not path.is_file():
        return f"(no recorded budget curve at {rel(path)}: run benchmarks/pretrain_scaling.py to see how much " \
               "pretraining a clear gain takes)"
    res = json.loads(path.read_text())
    rows = [r for r in res["rows"] if r["protocol"] == "probe"]
    tasks = sorted({r["task"] for r in rows})
    for tokens in sorted({r["tokens"] for r in rows}):
        ahead = [r["task"] for r in rows if r["tokens"] == tokens and r["paired"]["low"] > 0]
        if len(ahead) >= min(2, len(tasks)):
            return (f"The recorded budget curve ({rel(path)}, {res['setup']['layers']}x{res['setup']['hidden']} on "
                    f"chr20): the probe gain over scratch is above 0 with 95% confidence on {len(ahead)} of "
                    f"{len(tasks)} tasks from {tokens / 1e6:.1f}M pretraining tokens.")
    top = max(r["tokens"] for r in rows) if rows else 0
    best = max((sum(r["paired"]["low"] > 0 for r in rows if r["tokens"] == t) for t in {r["tokens"] for r in rows}),
               default=0)
    return (f"The recorded budget curve ({rel(path)}): up to {top / 1e6:.1f}M pretraining tokens the probe gain is "
            f"above 0 with 95% confidence on at most {best} of the {len(tasks)} tasks it measured; a clear gain on "
            "more of them needs more pretraining than that.")


class StageFailed(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pretrain_script() -> str:
    """launch/pretrain.py as the README spells it when run from a checkout, else the installed package's copy."""
    here = Path("launch") / "pretrain.py"
    if here.is_file() and here.resolve() == LAUNCH_PRETRAIN:
        return str(here)
    return rel(LAUNCH_PRETRAIN)


def rel(path: str | os.PathLike) -> str:
    """A path as short as it can be written from the current directory (commands are shown to be copied)."""
    r = os.path.relpath(Path(path).resolve())
    return r if not r.startswith("..") else str(Path(path).resolve())


def tool(name: str) -> list[str]:
    """The console command `name` (tinydnabert, deepspeed) as the README spells it, if it is on PATH."""
    if shutil.which(name):
        return [name]
    if name == "tinydnabert":
        return [sys.executable, "-m", "tinydnabert.app.cli"]
    raise InputError(f"`{name}` is not on PATH; install the project (`pip install -e .`, README step 1)")


def run_command(cmd: list[str], log: Callable[[str], None], env: dict[str, str] | None = None) -> None:
    """Run one README command with this console as its console; a nonzero exit stops the stage."""
    log("$ " + shlex.join(cmd))
    r = subprocess.run(cmd, env=env)
    if r.returncode != 0:
        raise StageFailed(f"`{shlex.join(cmd)}` exited with status {r.returncode}")


# ---------------------------------------------------------------------------------------------
# The pipeline
# ---------------------------------------------------------------------------------------------

class Quickstart:
    def __init__(self, cfg: QuickstartConfig, log: Callable[[str], None] = print):
        self.cfg, self.preset = cfg, cfg.preset()
        self.tasks = cfg.tasks.strip() or self.preset.tasks
        from tinydnabert.eval.tasks import resolve_tasks
        resolve_tasks(self.tasks)  # a misspelt --tasks fails now, not at stage 5 after pretraining
        self.log = lambda msg: log(msg) or sys.stdout.flush()
        self.out = Path(cfg.out)
        self.shards = self.out / "shards"
        self.run_dir = self.out / "pretrain"
        self.export_dir = self.run_dir / "export"
        self.ds_config = self.out / "ds_config.json"
        self.results = self.out / "finetune"
        self.figures = self.out / "figures"
        self.fasta: Path | None = None
        self.env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.env.setdefault("TINYDNABERT_DATA", str(data_dir()))

    # -- genome --------------------------------------------------------------------------
    def pick_fasta(self) -> tuple[Path | None, str]:
        """(path, why) — path None means it must be downloaded first."""
        if self.cfg.fasta:
            return Path(self.cfg.fasta).resolve(), "--fasta"
        if os.environ.get(FASTA_ENV):
            p = Path(os.environ[FASTA_ENV])
            if not p.is_file():
                raise InputError(f"${FASTA_ENV}={p}: file not found; unset it or point it at a FASTA(.gz)")
            return p.resolve(), f"${FASTA_ENV}"
        name = SMOKE_GENOME if self.cfg.smoke else DEFAULT_GENOME
        p = data_dir() / "genome" / name
        if p.is_file():
            return p, "the shared real data"
        from tinydnabert.prep.download import DEFAULT_SMALL, GENOMES
        local = self.download_dir() / GENOMES[DEFAULT_SMALL].filename
        if local.is_file():
            return local, f"an earlier `tinydnabert download {DEFAULT_SMALL}`"
        return None, f"{p} is not here; fetching UCSC hg38 chr21 instead"

    @staticmethod
    def download_dir() -> Path:
        """Where a fetched genome goes: beside the shared data if that is writable (so the next run
        and `tinydnabert download`'s default find it), else a user cache; never inside OUT, which
        a rerun replaces."""
        shared = data_dir() / "genome"
        if os.access(shared if shared.is_dir() else data_dir(), os.W_OK):
            return shared
        return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tinydnabert" / "genome"

    def stage_genome(self) -> None:
        path, why = self.pick_fasta()
        if path is None:
            from tinydnabert.prep.download import DEFAULT_SMALL
            self.log(why)
            run_command(self.cmd_download(), self.log, self.env)
            path, why = self.pick_fasta()
            if path is None:
                raise StageFailed(f"`tinydnabert download {DEFAULT_SMALL}` finished but wrote no file")
        self.fasta = path
        self.log(f"genome: {rel(path)} ({path.stat().st_size / 1e6:.1f} MB, from {why})")

    # -- commands ------------------------------------------------------------------------
    # Each command is built from its stage's config dataclass (config.to_flags): a renamed field fails in
    # tests/unit/test_stage_flags.py, which builds every command, not minutes into the smoke run.
    def cmd_download(self) -> list[str]:
        from tinydnabert.prep.download import DEFAULT_SMALL, DownloadConfig

        return [*tool("tinydnabert"), "download", DEFAULT_SMALL,
                *to_flags(DownloadConfig, out=rel(self.download_dir()))]

    def cmd_preprocess(self) -> list[str]:
        from tinydnabert.prep.preprocess import PreprocessConfig

        p = self.preset
        return [*tool("tinydnabert"), "preprocess", *to_flags(
            PreprocessConfig, fasta=[rel(self.fasta) if self.fasta else "GENOME.fa.gz"], out=rel(self.shards),
            vocab_size=p.vocab_size, min_frequency=p.min_frequency, val_fraction=p.val_fraction,
            samples_per_shard=p.samples_per_shard, seed=self.cfg.seed, workers=0, progress=False)]

    def write_ds_config(self) -> Path:
        """OUT/ds_config.json: the repo's DeepSpeed JSON with this preset's batch and a schedule that fits
        the short run (warmup 10% of the steps, then linear decay to 0 at the last step, or the peak LR held:
        Preset.hold_lr). The JSON stays the one source of these values; no flag repeats them."""
        from tinydnabert.pretrain import ds_config

        p = self.preset
        warmup = max(1, p.pretrain_steps // 10)
        if p.hold_lr:
            ds = ds_config.derive(ds_config.shipped(p.ds_base), batch=p.train_batch, micro=p.micro_batch,
                                  lr=p.peak_lr, warmup=warmup, constant=True)
        else:
            ds = ds_config.derive(ds_config.shipped(p.ds_base), batch=p.train_batch, micro=p.micro_batch,
                                  lr=p.peak_lr, warmup=warmup, steps=p.pretrain_steps)
        atomic_write_json(self.ds_config, ds)
        return self.ds_config

    def cmd_pretrain(self, port: int = 29500) -> list[str]:
        from tinydnabert.pretrain.data import DataConfig
        from tinydnabert.pretrain.model import ModelConfig
        from tinydnabert.pretrain.train import PretrainConfig

        p = self.preset
        # --master_port: a free one, so the demo does not collide with another DeepSpeed job on 29500.
        # --no-export: the export stage below runs `tinydnabert export` on the checkpoint instead.
        return [*tool("deepspeed"), "--num_gpus", "1", "--master_port", str(port), pretrain_script(),
                "--deepspeed_config", rel(self.ds_config),
                *to_flags(PretrainConfig, data=[rel(self.shards)], out=rel(self.run_dir), max_steps=p.pretrain_steps,
                          log_interval=p.log_interval, eval_interval=p.eval_interval,
                          save_interval=p.pretrain_steps, seed=self.cfg.seed, export=False,
                          **({"recipe": p.recipe} if p.recipe else {})),
                *to_flags(DataConfig, val_batches=p.val_batches, seq_len=p.seq_len, num_workers=1),
                *to_flags(ModelConfig, **p.model)]

    def stage_pretrain(self) -> None:
        self.write_ds_config()
        run_command(self.cmd_pretrain(free_port()), self.log, self.env)

    def cmd_export(self) -> list[str]:
        return [*tool("tinydnabert"), "export", rel(self.run_dir), rel(self.export_dir)]

    def cmd_finetune(self) -> list[str]:
        from tinydnabert.eval.benchmark import BenchmarkConfig

        p = self.preset
        return [*tool("tinydnabert"), "benchmark", *to_flags(
            BenchmarkConfig, model=rel(self.export_dir), tasks=self.tasks, lr=p.finetune_lr, steps=p.finetune_steps,
            batch_size=p.finetune_batch, warmup_steps=max(1, p.finetune_steps // 10),
            eval_every=max(1, p.finetune_steps // 2), log_every=max(1, p.finetune_steps // 4),
            max_train_samples=p.finetune_max_train, protocol=p.protocol, seeds=p.seeds, seed=self.cfg.seed,
            out=rel(self.results))]

    # -- report --------------------------------------------------------------------------
    def stage_report(self) -> None:
        from tinydnabert.app.plots import PlotConfig, health, plot_run, tensorboard_command
        png = plot_run(PlotConfig(run=str(self.run_dir), out=str(self.figures / "training.png"),
                                  title=f"quickstart ({self.preset.name}): {self.fasta.name if self.fasta else ''}"))
        self.log(f"training curves: {png}\n{health(self.run_dir)}")
        for p in sorted(self.results.glob("*.png")):
            dst = self.figures / p.name
            shutil.copyfile(p, dst)
            self.log(f"fine-tuning chart: {dst}")
        for p in sorted(self.results.glob("*.md")):
            self.log(f"\nresults ({p}):\n{p.read_text()}")
        self.log(curve_summary(CURVE))
        self.log(f"look at the run interactively:\n  {tensorboard_command(self.run_dir)}")

    # -- plan ----------------------------------------------------------------------------
    def stages(self) -> list[Stage]:
        b = dict(self.preset.budgets)
        if self.fasta is None and self.pick_fasta()[0] is None:
            b["genome"] = 90  # UCSC chr21 is 12 MB: seconds on a normal link, but allow a slow one
        lg = self.log
        return [
            Stage("genome", "choose the reference FASTA (download one if none is here)", b["genome"],
                  self.stage_genome),
            Stage("preprocess",
                  "FASTA -> drop N -> 256-1024 bp segments -> BPE tokenizer -> WebDataset shards + manifest",
                  b["preprocess"], lambda: run_command(self.cmd_preprocess(), lg, self.env), [self.cmd_preprocess()]),
            Stage("pretrain", f"DeepSpeed MLM pretraining, {self.preset.pretrain_steps} steps of "
                              f"{self.preset.train_batch} x {self.preset.seq_len} tokens "
                              f"({self.preset.ds_base} + short schedule)",
                  b["pretrain"], self.stage_pretrain, [self.cmd_pretrain()]),
            Stage("export", "last checkpoint -> plain Hugging Face model directory",
                  b["export"], lambda: run_command(self.cmd_export(), lg, self.env), [self.cmd_export()]),
            Stage("finetune", f"pretrained vs scratch on {self.tasks} ({self.preset.protocol}, "
                              f"{self.preset.seeds} paired seeds), test MCC",
                  b["finetune"], lambda: run_command(self.cmd_finetune(), lg, self.env), [self.cmd_finetune()]),
            Stage("report", "figures, results table, the TensorBoard command", b["report"], self.stage_report),
        ]

    def prepare_out(self) -> None:
        if self.out.exists():
            if not self.out.is_dir():
                raise InputError(f"{self.out}: exists and is not a directory; choose another --out")
            if not (self.out / RECORD).is_file() and any(self.out.iterdir()):
                raise InputError(f"{self.out}: exists and is not a quickstart output; choose another --out "
                                 f"or remove it")
            shutil.rmtree(self.out)  # a previous quickstart run: replaced, never appended to
        self.out.mkdir(parents=True)

    def run(self) -> int:
        stages = self.stages()
        p = self.preset
        self.log(f"tinydnabert quickstart: preset '{p.name}', output {self.out}, "
                 f"budget ~{fmt_s(sum(s.budget for s in stages))} on a 2-core CPU")
        if self.cfg.dry_run:
            path, why = self.pick_fasta()
            self.fasta = path
            self.log(f"genome: {path or '(to download)'} ({why})")
            stages = self.stages()  # again, now that the commands can name the genome
            for i, s in enumerate(stages):
                self.log(f"[{i + 1}/{len(stages)}] {s.name} (~{fmt_s(s.budget)}): {s.what}")
                for c in s.commands:
                    self.log("    $ " + shlex.join(c))
            return 0
        self.prepare_out()
        record = {"config": config_to_dict(self.cfg), "preset": dataclasses.asdict(p), "stages": []}
        atomic_write_json(self.out / RECORD, record)
        runner = StageRunner(stages, self.log, heartbeat=self.cfg.heartbeat)
        ok = False
        try:
            ok = runner.run()
        finally:  # stage times are recorded even when a stage fails or the user presses Ctrl-C
            record["stages"] = [{"name": s.name, "seconds": s.seconds, "budget": s.budget, "status": s.status}
                                for s in stages]
            record["fasta"] = str(self.fasta) if self.fasta else None
            record["ok"] = ok
            atomic_write_json(self.out / RECORD, record)
            self.log("\nstage times:\n" + runner.table())
        if ok:
            self.log(f"\nall outputs under {self.out}/: shards/ (manifest, tokenizer), pretrain/ (checkpoints, "
                     f"tensorboard, export = the HF model), finetune/ (results), figures/")
        else:
            eprint("quickstart stopped; the failed stage's command is printed above (`$ ...`): "
                   "fix its input and rerun it, or rerun the quickstart")
        return 0 if ok else 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_dataclass_args(parser, QuickstartConfig)


def main(args: argparse.Namespace) -> int:
    try:
        cfg = dataclass_from_args(QuickstartConfig, args)
        with OutputLock(Path(cfg.out), "--out"):  # a second quickstart into --out would remove this one's output
            return Quickstart(cfg).run()
    except KeyboardInterrupt:
        eprint("interrupted; rerun the same command to start again (a quickstart output directory is replaced)")
        return 130

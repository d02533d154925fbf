"""A pretraining run directory: its layout and the reproducibility bundle written at the start of a run.

    RUN/config.json           resolved PretrainConfig + ModelConfig + data config
    RUN/ds_config.json        the DeepSpeed config as the engine resolved it (batch sizes filled in)
    RUN/env.json              git SHA (+ RUN/git.diff if dirty), package versions, world size, command line
    RUN/tensorboard/<job>/    rank-0 TensorBoard events (train/, val/, perf/, mem/)
    RUN/checkpoints/          see checkpoint.py
    RUN/ranks/rankNNNNN.json  what each rank did (final step, batches, shards read, weight checksum)
    RUN/export/               plain Hugging Face directory of the final weights
    RUN/final_logits.pt       the engine's logits on two val rows (to check an export against)

A resumed run writes its bundle again with a `-resume-stepNNNNNNNN` suffix, so the first one is kept.
"""

from __future__ import annotations

import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tinydnabert.io import atomic_write_json, atomic_write_text

TB_DIR = "tensorboard"
EXPORT_DIR = "export"
FINAL_LOGITS = "final_logits.pt"
RANKS_DIR = "ranks"
ROWS_DIR = "rows"  # --log-rows: per-rank (step, slot, checksum) of every micro-batch
PACKAGES = ("torch", "deepspeed", "transformers", "tokenizers", "webdataset", "numpy", "tinydnabert")


def git(*args: str) -> str:
    # git looks upward from the package: a checkout's commit, nothing for an installed wheel
    try:
        return subprocess.run(["git", *args], cwd=Path(__file__).resolve().parent, capture_output=True, text=True,
                              timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def environment_info(world_size: int) -> dict[str, Any]:
    from importlib import metadata

    versions = {}
    for pkg in PACKAGES:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return {"git_sha": git("rev-parse", "HEAD").strip() or None,
            "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no").strip()),
            "packages": versions, "python": sys.version.split()[0], "platform": platform.platform(),
            "hostname": platform.node(), "world_size": world_size, "argv": sys.argv,
            "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def write_bundle(run_dir: Path, configs: dict[str, Any], ds_config: dict[str, Any], world_size: int,
                 resumed_at: int | None = None) -> None:
    """Rank 0: the configs, the resolved DeepSpeed config, the environment and any uncommitted diff."""
    run_dir.mkdir(parents=True, exist_ok=True)
    suffix = "" if resumed_at is None else f"-resume-step{resumed_at:08d}"
    atomic_write_json(run_dir / f"config{suffix}.json", configs)
    atomic_write_json(run_dir / f"ds_config{suffix}.json", ds_config)
    atomic_write_json(run_dir / f"env{suffix}.json", environment_info(world_size))
    if diff := git("diff", "HEAD"):
        atomic_write_text(run_dir / f"git{suffix}.diff", diff)


def rank_report_path(run_dir: Path, global_rank: int) -> Path:
    return run_dir / RANKS_DIR / f"rank{global_rank:05d}.json"


def rows_log_path(run_dir: Path, global_rank: int) -> Path:
    return run_dir / ROWS_DIR / f"rank{global_rank:05d}.tsv"

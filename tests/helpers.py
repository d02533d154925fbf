"""What the tests share, in one place: no test module imports another (tests/unit/test_layout.py checks it).

    child processes   child_env, start (one process, no launcher), launch / launch_ranks (the deepspeed
                      launcher), finish, wait, wait_for, kill, kill_after_first_checkpoint; free_port is the
                      package's own (tinydnabert.pretrain.distributed)
    tiny runs         MODEL_FLAGS, RUN_FLAGS, tiny_ds_config, pretrain_cmd; the runs themselves are session
                      fixtures (tests/integration/conftest.py: reference_run, killed_run) that every test
                      reading their outputs shares, because a launch costs 7-12 s of start-up on 2 cores
    reading outputs   scalars, losses, rows (of a run), all_samples (of shards)
    faults            flip, members, tmpfs
    the CLI           run_cli

Import it as `from tests.helpers import ...` (tests/ is a package; pytest puts the repository root on sys.path).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from tinydnabert.pretrain.distributed import free_port

REPO = Path(__file__).resolve().parents[1]
HG38 = "hg38_chr2_1-2333275.fa.gz"

# A 2-layer 64-wide model (121,024 parameters with the 256-token vocabulary of `hg38_shards`).
MODEL_FLAGS = ["--hidden-size", "64", "--num-hidden-layers", "2", "--num-attention-heads", "2",
               "--intermediate-size", "128"]
# The tiny run of the launcher tests: a console line every step, validation every 10, a checkpoint every 5
# (step 5 is the first a killed run resumes from: where DeepSpeed's CPU Adam, restarted, would drift), the
# rows of every step (--log-rows) so that another run can be compared with it row by row.
RUN_FLAGS = MODEL_FLAGS + ["--seq-len", "128", "--num-workers", "1", "--val-batches", "2", "--log-interval", "1",
                           "--eval-interval", "10", "--save-interval", "5", "--keep-checkpoints", "2", "--log-rows"]

REFERENCE_STEPS = 30  # tests/integration/conftest.py's reference_run


def tiny_ds_config(path: Path, **changes) -> Path:
    """The shipped CPU config with a small batch and a 40-step schedule: 16 rows = micro 4 x accumulation 2 x
    2 ranks (4 x 4 on 1 rank: the same rows per step on any world size). `changes` override derive()'s."""
    from tinydnabert.pretrain import ds_config

    kw = {"batch": 16, "micro": 4, "lr": 2e-3, "warmup": 5, "steps": 40, **changes}
    path.write_text(json.dumps(ds_config.derive(ds_config.shipped(ds_config.CPU_CONFIG), **kw), indent=2))
    return path


def child_env(one_process: bool = False) -> dict[str, str]:
    """The environment of a child process: this checkout's tinydnabert (not whichever one `pip install -e` last
    pointed at), one OpenMP thread (ranks on 2 shared cores fight over them otherwise), unbuffered output.
    one_process: without what a launcher (or an earlier in-process test) left, so the child is world size 1 and
    picks its own free port."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    if one_process:
        for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
            env.pop(k, None)
    return env


def start(cmd: list[str], log: Path, cwd: Path | None = None) -> subprocess.Popen:
    """One process, no launcher; stdout and stderr into `log`. Its own process group: kill() reaches its
    DataLoader workers too."""
    return subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, env=child_env(one_process=True),
                            cwd=cwd or log.parent, start_new_session=True)


def launch(launcher_args: list[str], args: list[str], log: Path, cwd: Path | None = None) -> subprocess.Popen:
    """`deepspeed LAUNCHER_ARGS launch/pretrain.py ARGS`, its own process group: kill() reaches every rank."""
    cmd = ["deepspeed", *launcher_args, str(REPO / "launch" / "pretrain.py"), *args]
    return subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=cwd or log.parent,
                            env=child_env(), start_new_session=True)


def launch_ranks(ranks: int, args: list[str], log: Path, cwd: Path | None = None) -> subprocess.Popen:
    """`ranks` local ranks on a free port (29500 may be another run's)."""
    return launch(["--num_gpus", str(ranks), "--master_port", str(free_port())], args, log, cwd)


def pretrain_cmd(ds: Path, data: Path | str, out: Path, *extra: str, flags: list[str] = RUN_FLAGS) -> list[str]:
    """`python launch/pretrain.py` (no launcher: world size 1) with the tiny run's flags, then `extra`."""
    return [sys.executable, str(REPO / "launch" / "pretrain.py"), "--deepspeed_config", str(ds), "--data", str(data),
            "--out", str(out), *flags, *extra]


def kill(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    """Signal the process group (every rank, every worker); gone already is fine."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


def finish(proc: subprocess.Popen, log: Path, timeout: float = 300) -> str:
    """Wait for the process (killed, and the test failed, past `timeout`); its log."""
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill(proc)
        proc.wait()
        pytest.fail(f"hung for {timeout:.0f} s:\n{log.read_text()[-3000:]}")
    return log.read_text()


def wait(proc: subprocess.Popen, log: Path, timeout: float = 400) -> str:
    """finish(), and the process must have succeeded."""
    text = finish(proc, log, timeout)
    assert proc.returncode == 0, text[-4000:]
    return text


def wait_for(cond, proc: subprocess.Popen, log: Path, what: str, timeout: float = 400) -> None:
    """Poll `cond` while the process runs; it ending (or `timeout`) first fails the test."""
    deadline = time.time() + timeout
    while not cond():
        if proc.poll() is not None or time.time() > deadline:
            kill(proc)
            pytest.fail(f"never {what}:\n{log.read_text()[-3000:]}")
        time.sleep(0.02)


def kill_after_first_checkpoint(proc: subprocess.Popen, run: Path, log: Path) -> int:
    """SIGKILL the run once its first checkpoint is complete (`latest` is written last); that checkpoint's step."""
    latest = run / "checkpoints" / "latest"
    wait_for(latest.is_file, proc, log, "saved a first checkpoint")
    kill(proc)
    proc.wait()
    return int(latest.read_text().strip()[4:])


# ------------------------------------------------------------------------------------------------ reading a run

def scalars(event_path: Path) -> dict[str, dict[int, float]]:
    """{tag: {step: value}} of one TensorBoard events file."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(event_path), size_guidance={"scalars": 0})
    ea.Reload()
    return {tag: {e.step: e.value for e in ea.Scalars(tag)} for tag in ea.Tags()["scalars"]}


def losses(run: Path) -> dict[int, float]:
    """train/loss by step over every events file of the run (a resumed run's file wins for its steps)."""
    out: dict[int, float] = {}
    for events in sorted((run / "tensorboard" / "pretrain").glob("events.out.tfevents.*"), key=os.path.getmtime):
        out.update(scalars(events).get("train/loss", {}))
    return out


def rows(run: Path) -> dict[int, dict[int, str]]:
    """{step: {slot: checksum}} from every rank's RUN/rows file (--log-rows); a later line (a resumed run) wins."""
    out: dict[int, dict[int, str]] = {}
    for path in sorted((run / "rows").glob("rank*.tsv")):
        for line in path.read_text().splitlines():
            step, slot, digest = line.split("\t")[:3]
            out.setdefault(int(step), {})[int(slot)] = digest
    return out


def all_samples(shards: Path, split: str):
    """Every (key, ids, meta) of a split's shards, in order."""
    from tinydnabert.formats import shard_paths
    from tinydnabert.prep.shards import read_shard

    for p in shard_paths(shards, split):
        yield from read_shard(p)


# ------------------------------------------------------------------------------------------------ faults

def members(shard: Path) -> list[tarfile.TarInfo]:
    with tarfile.open(shard) as t:
        return t.getmembers()


def flip(path: Path, offset: int, bit: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 1 << bit
    path.write_bytes(bytes(raw))


@contextlib.contextmanager
def tmpfs(path: Path, size: str):
    """A real small file system: tmpfs of `size` mounted at `path` (root only; skips otherwise), unmounted after."""
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True,
                       text=True)
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs to fill ({r.stderr.strip() or r.returncode}): needs root or CAP_SYS_ADMIN")
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


# ------------------------------------------------------------------------------------------------ the CLI

def run_cli(capsys, *argv) -> tuple[int, str, str]:
    """`tinydnabert ARGV` in this process: (exit status, stdout, stderr)."""
    from tinydnabert.app import cli

    capsys.readouterr()
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err

"""Process-level set-up for training: the launcher-less bootstrap, CPU threads, and RNG state.

Rank and rank-0 printing stay in common.py (every stage prints through print0, and common imports
nothing of ours); what lives here is only needed by processes that train.
"""

from __future__ import annotations

import os
import random
import socket
from typing import Any, Iterable, Iterator

import numpy as np
import torch

from tinydnabert.errors import InputError


def bootstrap_env() -> None:
    """Started as `python launch/pretrain.py` (no launcher): one process. Without these variables
    DeepSpeed would try MPI discovery and fail for want of mpi4py. A launcher's values are kept.

    The port is a free one, not a fixed 29500: a one-process run binds it for its process group's store,
    so a second run on the same machine would die on EADDRINUSE."""
    # A launcher sets all of these (OpenMPI its own); a lone RANK without WORLD_SIZE/MASTER_ADDR (left behind
    # in an environment by something else) is no launcher, and DeepSpeed would fall back to MPI discovery.
    if "OMPI_COMM_WORLD_RANK" in os.environ or all(k in os.environ for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR")):
        return
    for k, v in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"), ("MASTER_ADDR", "127.0.0.1")):
        os.environ.setdefault(k, v)
    if "MASTER_PORT" not in os.environ:
        os.environ["MASTER_PORT"] = str(free_port())


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the kernel picks it: bind to port 0). Another program could take
    it in the ~second before the store binds it; among ~28k ephemeral ports, that is unlikely."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def raise_on_every_rank(error: InputError | None) -> None:
    """Every rank raises rank 0's `error` (pass None on the other ranks and when there is none): one
    broadcast from rank 0, after the engine has set each rank's device. For what only rank 0 knows, such
    as whether it holds the run directory's lock; rank 0 stopping alone would leave the others waiting
    in their next collective until its timeout (30 min) or a launcher killing them (not across nodes)."""
    import torch.distributed as tdist

    if not tdist.is_initialized() or tdist.get_world_size() == 1:
        if error is not None:
            raise error
        return
    box = [None if error is None else str(error)]
    tdist.broadcast_object_list(box, src=0)
    if box[0] is not None:
        # Tear the process group down before the exit: left to interpreter shutdown, its threads were destroyed
        # while joinable and a rank aborted ("terminate called without an active exception", exit -6 instead of
        # 2) in 1 of 4 runs of test_run_in_use_stops_every_rank_under_the_launcher.
        tdist.destroy_process_group()
        raise InputError(box[0])


def release_shm_buffer() -> None:
    """Unlink this rank's DeepSpeed shared-memory all-reduce file on the CPU accelerator, once every rank has mapped it.

    DeepSpeed's CPU all-reduce (csrc/cpu/comm/shm.cpp) makes one 69 MB POSIX shm file per rank,
    /dev/shm/deepspeed_allreduce_buffer_{uid}_{MASTER_ADDR}_{MASTER_PORT}_{rank}, and never unlinks it: every CPU run
    left its files behind, a SIGKILLed one too (the test suite: 41 files, 2.8 GB, per run), until /dev/shm filled this
    24 GB machine and the OOM killer stopped a test run. Each rank maps every peer's file while the process group
    starts, so after a barrier the names can go: the mappings stay valid, and the memory is freed when the last rank
    exits, however it exits."""
    import deepspeed.comm as dist
    from deepspeed.accelerator import get_accelerator

    if get_accelerator().device_name() != "cpu":
        return
    dist.barrier()  # every rank is past the process group's start, so has mapped every peer's file
    name = (f"deepspeed_allreduce_buffer_{os.getuid()}_{os.environ.get('MASTER_ADDR', '')}_"
            f"{os.environ.get('MASTER_PORT', '')}_{dist.get_rank()}")
    try:
        os.unlink(os.path.join("/dev/shm", name))
    except FileNotFoundError:  # ranks on several nodes: DeepSpeed made no shm file
        pass


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def set_cpu_threads() -> None:
    """CPU ranks share the machine's cores: torch would give every rank one thread per core, and
    OpenMP threads that outnumber the cores spin against each other (measured on 2 cores: 77 ms a
    step with 1 thread, 7 s with 2 while another job ran). OMP_NUM_THREADS overrides this."""
    if torch.cuda.is_available() or "OMP_NUM_THREADS" in os.environ:
        return
    # The cores this process may run on (taskset, a container's cpuset), not the host's: cpu_count() would
    # give 2 threads on 1 allowed core, and they spin against each other.
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    torch.set_num_threads(max(1, cores // int(os.environ.get("LOCAL_SIZE", "1"))))


def seed_rank(seed: int, global_rank: int) -> None:
    """A per-rank stream for dropout (and anything else drawn from the global RNGs), so ranks do not
    drop the same units. Weight init is seeded separately, identically on every rank."""
    for seed_fn in (torch.manual_seed, random.seed, np.random.seed):
        seed_fn(seed + 1000 + global_rank)


def seed_micro_batch(seed: int, step: int, slot: int) -> None:
    """Dropout of a micro-batch drawn from (seed, step, slot) alone: the slot is the micro-batch's place in the
    global batch (data.Layout), so its dropout masks are the same whichever rank
    computes it, and a run resumed on another world size drops the same units as the uninterrupted one.
    Seeding costs ~10 us per micro-batch and no device sync (torch.manual_seed seeds CUDA lazily)."""
    torch.manual_seed(int(np.random.SeedSequence([seed, 1000, step, slot]).generate_state(1)[0]))


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


def rng_neutral(iterable: Iterable[Any]) -> Iterator[Any]:
    """Iterate `iterable`, but start it inside torch.random.fork_rng: a DataLoader draws its workers' base
    seed from the global torch RNG when it starts, which would shift every later dropout mask. Starting
    the train stream after a resume (and not at step 0) would otherwise break exact resume."""
    it = iter(iterable)
    with torch.random.fork_rng(devices=[]):
        first = next(it)
    yield first
    yield from it


def pick_device(name: str, who: str) -> torch.device:
    """--device auto|cpu|cuda of the single-device stages (finetune, probe, embed): auto = cuda when visible."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError(f"{who}: --device cuda but no GPU is visible; use --device cpu")
    return torch.device(name)

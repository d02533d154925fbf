"""The shared output machinery (common.py): locks, temporary directories of dead runs, modes, full disks.
The same faults on real runs (SIGKILL, a second run, a tmpfs that fills) are in tests/integration/test_faults.py."""

from __future__ import annotations

import errno
import os
import socket
import stat
import subprocess
import sys

import pytest

from tests.helpers import child_env
from tinydnabert.errors import DiskFullError, InputError, disk_full_reason
from tinydnabert.io import OutputLock, atomic_output_dir, atomic_write_text, umask
from tinydnabert.pretrain.distributed import free_port

HOST = socket.gethostname()


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid  # reaped: no such process (until the kernel reuses the number)


def test_lock_refuses_a_second_holder_and_is_removed_on_release(tmp_path):
    out = tmp_path / "out"
    with OutputLock(out, "--out"):
        assert (tmp_path / ".out.lock").read_text().split()[:2] == [str(os.getpid()), HOST]
        with pytest.raises(InputError, match=f"{out} is in use by pid {os.getpid()} on {HOST}: .*another --out"):
            OutputLock(out, "--out")  # flock is per open file: a second open of it conflicts, even here
        with pytest.raises(InputError, match="in use by pid"):
            with atomic_output_dir(out):
                pass
    assert not (tmp_path / ".out.lock").exists()
    with OutputLock(out):  # free again
        pass


def test_lock_held_by_another_process_and_dropped_when_it_is_killed(tmp_path):
    out = tmp_path / "out"
    code = f"from tinydnabert.io import OutputLock; import sys, time; l = OutputLock({str(out)!r}); " \
           "print('locked', flush=True); time.sleep(60)"
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                              env=child_env())
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(InputError, match=f"in use by pid {holder.pid} on {HOST}"):
            OutputLock(out)
    finally:
        holder.kill()
        holder.wait()
    with OutputLock(out):  # the kernel released it at SIGKILL; the file it left is taken over
        pass


def test_stale_temporary_directories(tmp_path, capsys):
    dead, live = dead_pid(), os.getpid()
    stale = tmp_path / f".out.tmp-{HOST}-{dead}-abc_1234"
    running = tmp_path / f".out.tmp-{HOST}-{live}-12345678"  # an all-digit mkdtemp suffix parses too
    elsewhere = tmp_path / ".out.tmp-other-host-7-zzzzzzzz"
    unknown = tmp_path / ".out.tmp-q1w2e3r4"  # named before temporary names said who made them
    other_output = tmp_path / f".outer.tmp-{HOST}-{dead}-abcdefgh"
    for d in (stale, running, elsewhere, unknown, other_output):
        (d / "train").mkdir(parents=True)
        (d / "train" / "shard-000000.tar").write_bytes(bytes(3_000_000))
    with atomic_output_dir(tmp_path / "out") as tmp:
        assert tmp.name.startswith(f".out.tmp-{HOST}-{live}-")
        (tmp / "x").write_text("x")
    err = capsys.readouterr().err
    assert not stale.exists() and f"removed {stale} (3.0 MB), left by pid {dead}, which is no longer running" in err
    assert running.exists() and f"{running} (3.0 MB) belongs to pid {live}, which is still running" in err
    assert elsewhere.exists() and f"{elsewhere} (3.0 MB) was left by pid 7 on other-host" in err
    assert unknown.exists() and f"{unknown} (3.0 MB) was left by an unknown process" in err
    assert other_output.exists() and str(other_output) not in err  # another output's: not ours to judge
    assert (tmp_path / "out" / "x").read_text() == "x"


def test_outputs_get_the_umask_modes(tmp_path):
    old = os.umask(0o022)
    try:
        assert umask() == 0o022
        with atomic_output_dir(tmp_path / "out") as tmp:
            (tmp / "f").write_text("f")
        atomic_write_text(tmp_path / "out" / "g.json", "{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o755  # mkdtemp alone gives 0700
    assert stat.S_IMODE((tmp_path / "out" / "g.json").stat().st_mode) == 0o644  # mkstemp alone gives 0600


def test_disk_full_is_recognised_in_its_several_disguises(tmp_path):
    assert disk_full_reason(OSError(errno.ENOSPC, "No space left on device")) == "no space left on device"
    assert disk_full_reason(OSError(errno.EDQUOT, "Disk quota exceeded")) == "disk quota exceeded"
    # safetensors: SafetensorError('Error while serializing: I/O error: No space left on device (os error 28)')
    assert disk_full_reason(Exception("I/O error: No space left on device (os error 28)")) == "no space left on device"
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as e:
            raise RuntimeError("basic_ios::clear: iostream error") from e
    except RuntimeError as e:
        assert disk_full_reason(e) == "no space left on device"  # the cause counts
    # torch.save's bare RuntimeError: only a disk that is really (nearly) full makes it one
    assert disk_full_reason(RuntimeError("unexpected pos 576 vs 534"), tmp_path) is None
    assert disk_full_reason(OSError(errno.EACCES, "Permission denied")) is None
    assert issubclass(DiskFullError, InputError)


def test_free_port_is_bindable():
    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_cpu_threads_follow_the_cores_this_process_may_use(monkeypatch):
    """Under taskset / a container cpuset, one thread per *allowed* core (two on one core spin against each other)."""
    import torch

    from tinydnabert.pretrain import distributed

    got = []
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("LOCAL_SIZE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch, "set_num_threads", got.append)
    monkeypatch.setattr(distributed.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(distributed.os, "sched_getaffinity", lambda pid: {0}, raising=False)
    distributed.set_cpu_threads()
    monkeypatch.setattr(distributed.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setenv("LOCAL_SIZE", "2")
    distributed.set_cpu_threads()
    assert got == [1, 2]

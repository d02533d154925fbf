"""The shared output machinery (common.py): temporary directories of dead runs, output modes; free ports.
The same faults on real runs (SIGKILL, two runs at once) are in tests/integration/test_faults.py."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

from tinydnabert.common import atomic_output_dir, atomic_write_text, umask
from tinydnabert.distributed import free_port

HOST = socket.gethostname()
REPO = Path(__file__).resolve().parents[2]


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid  # reaped: no such process (until the kernel reuses the number)


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


def test_free_port_is_bindable():
    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))

"""Outputs that are complete or absent: atomic files and directories, output locks, temporary directories of
dead runs, hashing, text that may be gzip, and where the real data lives."""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import socket
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any, Iterator

from tinydnabert.console import eprint
from tinydnabert.errors import DiskFullError, InputError, disk_full_error, disk_full_reason, megabytes


def data_dir() -> Path:
    """The real-data directory: $TINYDNABERT_DATA, else ../shared/data from the current directory (the
    checkout's root, where the README's commands run). Never a path inside the package: an installed
    package (a wheel, `pip install git+...`) has no checkout around it."""
    env = os.environ.get("TINYDNABERT_DATA")
    if env:
        return Path(env)
    return Path.cwd().parent / "shared" / "data"


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def tree_bytes(path: str | os.PathLike) -> int:
    """Bytes in the regular files under `path` (0 if it is gone)."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total


def umask() -> int:
    """The process umask, read without changing it (Linux >= 4.7 shows it in /proc/self/status):
    os.umask can only be read by setting it, and files other threads create in between would get it."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def hostname() -> str:
    return socket.gethostname() or "localhost"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def _stale_owner(name: str, entry: str) -> tuple[str | None, int | None] | None:
    """(host, pid) of a temporary directory of output `name` (None, None if it does not say), or None if
    `entry` is not one. Names: .NAME.tmp-HOST-PID-XXXXXXXX (XXXXXXXX: mkdtemp's, no '-' in it) and
    .NAME.old-HOST-PID; host names may hold '-', so the pid is the last all-digit field before them."""
    base = re.escape(name)
    for pattern in (rf"^\.{base}\.tmp-(?P<host>.+)-(?P<pid>\d+)-[a-z0-9_]{{8}}$",
                    rf"^\.{base}\.old-(?P<host>.+)-(?P<pid>\d+)$"):
        if m := re.match(pattern, entry):
            return m.group("host"), int(m.group("pid"))
    if re.match(rf"^\.{base}\.(?:tmp|old)-", entry):  # made before temporary names said who made them
        return None, None
    return None


def clean_stale_temps(final: Path) -> None:
    """Remove the temporary directories of `final` that a dead process on this host left behind (a
    SIGKILLed preprocess of GRCh38 leaves gigabytes); name, with their size, the ones that belong to a
    live process or to another host (their owner is unknown to us, so they are left alone)."""
    with contextlib.suppress(OSError):
        for entry in sorted(final.parent.iterdir()):
            owner = _stale_owner(final.name, entry.name)
            if owner is None or not entry.is_dir() or entry.is_symlink():
                continue
            size = megabytes(tree_bytes(entry))
            host, pid = owner
            if pid is not None and host == hostname() and not _alive(pid):
                shutil.rmtree(entry, ignore_errors=True)
                eprint(f"note: removed {entry} ({size}), left by pid {pid}, which is no longer running")
            elif pid is not None and host == hostname():
                eprint(f"note: {entry} ({size}) belongs to pid {pid}, which is still running; left alone")
            else:
                owner = f"pid {pid} on {host}" if pid is not None else "an unknown process"
                eprint(f"note: {entry} ({size}) was left by {owner}; remove it if no run is writing it")


class OutputLock:
    """An exclusive lock on an output path: flock(2) on PARENT/.NAME.lock, beside the output so that it
    also covers an output that does not exist yet or is replaced by a rename.

    The kernel drops the lock when the holder exits, SIGKILL included, so a lock is never stale (a killed
    holder leaves only the small file, which the next run takes over). The file holds "pid host time" of
    the holder, for the refusal message, and is removed on release: the holder unlinks it while still
    locked, and a locker that got an unlinked file (it opened it just before) sees another inode at the
    path and tries again. flock works across NFS clients on Linux >= 2.6.12 (as a POSIX lock), unless
    the file system is mounted with `nolock`.
    """

    def __init__(self, out: str | os.PathLike, what: str = "output directory") -> None:
        self.out = Path(out)
        self.path = self.out.parent / f".{self.out.name}.lock"
        self.fd: int | None = None
        while self.fd is None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            except OSError as e:
                raise InputError(f"{self.path}: cannot create the lock file of {self.out} ({e.strerror}); "
                                 f"choose a {what} in a directory you can write") from e
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 256, 0).decode("utf-8", "replace").split()
                os.close(fd)
                who = f"pid {holder[0]} on {holder[1]}" if len(holder) >= 2 else "another process"
                raise InputError(f"{self.out} is in use by {who}: wait for that run to end or stop it, or "
                                 f"choose another {what}") from None
            except BaseException:
                os.close(fd)
                raise
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if not same:  # its holder removed it as we opened it: lock the file now at the path
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            os.pwrite(fd, f"{os.getpid()} {hostname()} {stamp}\n".encode(), 0)
            self.fd, self.pid = fd, os.getpid()

    def release(self) -> None:
        # Only in the process that locked: a forked child (a DataLoader worker) shares the lock and must
        # not remove the file while its parent still runs.
        if self.fd is not None and os.getpid() == self.pid:
            with contextlib.suppress(OSError):
                os.unlink(self.path)  # still locked here: see the class docstring
            os.close(self.fd)  # closing the last descriptor releases the flock
            self.fd = None

    def __enter__(self) -> OutputLock:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # at interpreter exit `os` may already be gone
            self.release()


@contextlib.contextmanager
def atomic_output_dir(final: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Build a directory under a temporary name beside `final`, rename it into place on success.

    The output is locked for the whole build (OutputLock: a second run into it is refused at once),
    and temporary directories of `final` that dead processes left are removed first. On any exception
    the temporary directory is removed, so a failed run leaves nothing behind; a full disk becomes a
    DiskFullError (exit 2) saying how much was written. An existing `final` is refused unless
    `overwrite` (then it is replaced only after success). The result gets the permissions the umask
    gives (mkdtemp makes 0700, which other users of a shared file system could not read).
    """
    final = Path(final)
    if final.exists() and not overwrite:
        raise InputError(f"{final}: output directory already exists; pass --overwrite to replace it")
    final.parent.mkdir(parents=True, exist_ok=True)
    with OutputLock(final):
        clean_stale_temps(final)
        tag = f"{hostname()}-{os.getpid()}"
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-{tag}-", dir=final.parent))
        try:
            yield tmp
            os.chmod(tmp, 0o777 & ~umask())
        except BaseException as e:
            # Before cleaning up: the disk is full *now* (what was written still occupies it).
            where = _filename(e) or tmp
            reason = disk_full_reason(e, where) if isinstance(e, Exception) else None
            written = tree_bytes(tmp) if reason else 0
            shutil.rmtree(tmp, ignore_errors=True)
            if reason and not isinstance(e, DiskFullError):
                same_disk = where == tmp or _same_device(where, final.parent)
                raise disk_full_error(final if same_disk else where, reason,
                                      f"more than {megabytes(written)}" if same_disk and written else "unknown MB",
                                      "nothing was written; free some space or choose another output directory, "
                                      "then run again") from e
            raise
        if final.exists():
            old = final.with_name(f".{final.name}.old-{tag}")
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)


def _same_device(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    def dev(p: Path) -> int | None:
        p = p.absolute()
        while not p.exists() and p != p.parent:
            p = p.parent
        try:
            return p.stat().st_dev
        except OSError:
            return None
    return dev(Path(a)) == dev(Path(b))


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write a file under a temporary name and rename it, so readers never see half a file (several writers of
    one path each rename their own complete copy); a full disk is a DiskFullError naming `path`, and the old
    file (if any) is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~umask())  # mkstemp makes 0600
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        reason = disk_full_reason(e) if isinstance(e, OSError) else None
        if reason:
            raise disk_full_error(path, reason, megabytes(len(data)),
                                  "the file was not written; free some space, then run again") from e
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """atomic_write_bytes of UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


@contextlib.contextmanager
def open_text(path: Path) -> Iterator[io.TextIOBase]:
    """The file as text; a binary, non-UTF-8 or broken .gz file is an InputError naming it, not a traceback."""
    try:
        with (io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="") if path.suffix == ".gz"
              else open(path, encoding="utf-8", newline="")) as f:
            yield f
    except (UnicodeDecodeError, EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise InputError(f"{path}: cannot read as UTF-8 text{' (gzip)' if path.suffix == '.gz' else ''} "
                         f"({type(e).__name__}: {e}); is it the right file, complete and not corrupt?") from e


def _filename(exc: BaseException) -> str | None:
    e: BaseException | None = exc
    while e is not None:
        if isinstance(e, OSError) and e.filename:
            return str(e.filename)
        e = e.__cause__ or e.__context__
    return None

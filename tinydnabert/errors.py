"""The one user-facing error type and the diagnosis of a full disk.

An `InputError` anywhere is printed by the CLI as `error: ...` and exits 2; its message names the file
and says what to do. A full disk is an `InputError` too (`DiskFullError`), with what was needed and what is free.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path


class InputError(Exception):
    """Bad user input (a path, a file's content, a config value). The CLI prints it and exits 2.

    The message must name the file (and record/line/row where there is one) and say what to do.
    """


class DiskFullError(InputError):
    """A write failed because its file system is full (or the user's quota is spent)."""


def megabytes(n: int | None) -> str:
    return "unknown MB" if n is None else f"{n / 1e6:,.1f} MB"


_FULL = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded"}


_FULL_TEXT = {"No space left on device": _FULL[errno.ENOSPC], "os error 28": _FULL[errno.ENOSPC],
              "Disk quota exceeded": _FULL[errno.EDQUOT], "os error 122": _FULL[errno.EDQUOT]}


def free_bytes(path: str | os.PathLike) -> int | None:
    """Bytes an unprivileged user may still write on the file system holding `path` (or its nearest
    existing parent); None if that cannot be asked."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return shutil.disk_usage(p).free
    except OSError:
        return None


def disk_full_reason(exc: BaseException, path: str | os.PathLike | None = None) -> str | None:
    """'no space left on device' / 'disk quota exceeded' when `exc` (or what caused it) is a full disk.

    Not only OSError(ENOSPC): safetensors raises SafetensorError('... No space left on device (os error
    28)') and torch.save a bare RuntimeError('[enforce fail at inline_container.cc:672] . unexpected pos
    576 vs 534'), both measured on a 2 MB tmpfs. For a RuntimeError or OSError without the errno, the
    disk itself is asked: under 1 MiB free where `path` lives counts as full."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in _FULL:
            return _FULL[e.errno]
        text = str(e)
        for pattern, reason in _FULL_TEXT.items():
            if pattern in text:
                return reason
        e = e.__cause__ or e.__context__
    if path is not None and isinstance(exc, (OSError, RuntimeError)):
        free = free_bytes(path)
        if free is not None and free < 1 << 20:
            return _FULL[errno.ENOSPC]
    return None


def disk_full_error(path: str | os.PathLike, reason: str, needed: str, advice: str) -> DiskFullError:
    """`PATH: no space left on device (N MB needed, M MB free); ADVICE`; `needed` is a phrase such as
    '12.0 MB', 'more than 3.1 MB' or 'unknown MB'. Free space is measured now (after any cleanup)."""
    return DiskFullError(f"{path}: {reason} ({needed} needed, {megabytes(free_bytes(path))} free); {advice}")

"""Small helpers every stage shares: errors, atomic outputs, hashing, rank-0 printing, data paths."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import shutil
import sys
import tempfile
import zlib
from pathlib import Path
from typing import Any, Iterator


class InputError(Exception):
    """Bad user input (a path, a file's content, a config value). The CLI prints it and exits 2.

    The message must name the file (and record/line/row where there is one) and say what to do.
    """


def data_dir() -> Path:
    """The real-data directory: $TINYDNABERT_DATA, else ../shared/data beside the repository."""
    env = os.environ.get("TINYDNABERT_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[1].parent / "shared" / "data"


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def atomic_output_dir(final: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Build a directory under a temporary name beside `final`, rename it into place on success.

    On any exception the temporary directory is removed, so a failed run leaves nothing behind.
    An existing `final` is refused unless `overwrite` (then it is replaced only after success).
    """
    final = Path(final)
    if final.exists() and not overwrite:
        raise InputError(f"{final}: output directory already exists; pass --overwrite to replace it")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write a file under a temporary name and rename it, so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def rank() -> int:
    """Global rank from the launcher's environment (0 when not launched distributed)."""
    return int(os.environ.get("RANK", "0"))


def is_rank0() -> bool:
    return rank() == 0


def print0(*args: Any, **kwargs: Any) -> None:
    """print() on global rank 0 only, flushed, so a multi-rank console shows each line once."""
    if is_rank0():
        kwargs.setdefault("flush", True)
        print(*args, **kwargs)


def eprint(*args: Any) -> None:
    print(*args, file=sys.stderr, flush=True)


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

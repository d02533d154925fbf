"""Printing under a launcher: rank 0 speaks for the run, errors go to stderr."""

from __future__ import annotations

import os
import sys
from typing import Any


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

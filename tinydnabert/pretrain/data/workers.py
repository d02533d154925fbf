"""What crosses the DataLoader worker boundary: the batch a worker sends, the batch the trainer gets, errors.

Workers send compact int32 arrays and, instead of raising, an InputError as a batch of its own, so that the
main process re-raises it with its own message (torch would wrap it in a worker traceback, and a worker that
died on a bad shard would leave the trainer waiting). Its own module because the train and the val streams
share it, and it is the only part of the package that knows about worker processes.
"""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import get_worker_info

from tinydnabert.errors import InputError


def worker_batch(input_ids: np.ndarray, labels: np.ndarray, source: np.ndarray | None = None
                 ) -> dict[str, torch.Tensor]:
    """What a worker sends: int32, 2 x 256 KiB for 128 x 512 (int64 + attention_mask would be 3x); for a
    mixture also each row's source (its index in --data), for --log-rows."""
    out = {"input_ids": torch.from_numpy(np.ascontiguousarray(input_ids)),
           "labels": torch.from_numpy(np.ascontiguousarray(labels))}
    if source is not None:
        out["source"] = torch.from_numpy(source.astype(np.int64))
    return out


def finish_batch(batch: Any, pin_memory: bool) -> dict[str, torch.Tensor]:
    """In the training process: int64 as the model's embedding and loss expect, and the attention
    mask, all ones because rows are packed (every position is a real token)."""
    if isinstance(batch, _Failure):
        raise InputError(batch.message)
    out = {"input_ids": batch["input_ids"].long(), "labels": batch["labels"].long()}
    out["attention_mask"] = torch.ones_like(out["input_ids"])
    if pin_memory:  # page-locked, so .to("cuda", non_blocking=True) overlaps the copy
        out = {k: v.pin_memory() for k, v in out.items()}
    if "source" in batch:  # stays on the host
        out["source"] = batch["source"]
    return out


class _Failure:
    """An InputError raised in a DataLoader worker, sent to the main process as a batch so that it
    is re-raised there with its own message (torch would wrap it in a worker traceback)."""

    def __init__(self, message: str) -> None:
        self.message = message


def forward_errors(batches: Iterator[Any]) -> Iterator[Any]:
    """Pass batches on; in a DataLoader worker, turn an InputError into a _Failure batch."""
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except InputError as e:
            if get_worker_info() is None:
                raise
            yield _Failure(str(e))
            return
        yield batch  # outside the try: closing the generator here must not run the except clause


def this_worker() -> tuple[int, int]:
    """(worker id, number of workers) of the DataLoader worker running this; (0, 1) in the main process."""
    info = get_worker_info()
    return (0, 1) if info is None else (info.id, info.num_workers)

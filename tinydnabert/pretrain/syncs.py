"""Counting host-device syncs: what would stall a GPU's queue, measured on any device (a CPU included).

A GPU step of the reference model (128 x 512 tokens at 40 % MFU) takes ~23 ms; the host stays ahead of
the GPU only while nothing makes it wait for a device value. One wait per micro-step drains the queue,
and the next kernels start only after the host has launched them again (DeepSpeed's step is ~10 ms of
host time on a slow CPU, benchmarks/throughput.py --overhead). So the training step must never read the
device, and this module counts every place that would:

    with SyncCounter() as syncs:
        train_step(...)
    assert not syncs.events, syncs.report()

Two PyTorch hooks, so that library code (DeepSpeed's engine and optimizers) is seen too, not just ours:
  * a TorchDispatchMode sees every op that reads a device value to the host: `_local_scalar_dense`
    (what `.item()`, `bool(t)`, `if t:`, `float(t)`, `int(t)`, `f"{t:.2f}"` become), `nonzero` (the output
    size depends on the data), `masked_select`, `unique`, boolean-mask indexing, `equal`, ...;
  * a TorchFunctionMode sees the Python-level calls that leave no op behind on a CPU run: `.tolist()`,
    `.numpy()`, `.cpu()`, and `.to(...)` whose call-site line names the host (`"cpu"`). A bare
    `.to(device)` cannot be told apart on a CPU run (DeepSpeed's accelerator device *is* "cpu" there),
    which is what the GPU variant (torch.cuda.set_sync_debug_mode("error"), tests marked `gpu`) is for;
  * plus explicit device synchronisation: DeepSpeed's `get_accelerator().synchronize()` and
    `torch.cuda.synchronize()` (a CPU accelerator's synchronize is a no-op, but the call is counted).

Host inputs (a loader's batches) are not device values: `host(tensor)` registers one, so that its
`.to(device)` (a host-to-device copy, asynchronous from pinned memory) is not counted, and `paused()`
stops counting while the loader makes the next batch on the host.
"""

from __future__ import annotations

import contextlib
import linecache
import re
import sys
from collections import Counter
from dataclasses import dataclass
from typing import Iterator

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten

# Ops whose result (or output shape) needs a device value on the host.
_SYNC_OPS = {aten._local_scalar_dense.default, aten.nonzero.default, aten.masked_select.default,
             aten._unique2.default, aten.unique_dim.default, aten.unique_consecutive.default,
             aten.repeat_interleave.Tensor, aten.is_nonzero.default, aten.equal.default}
# Boolean-mask indexing (x[mask], x[mask] = v) runs nonzero inside the kernel.
_MASK_INDEX_OPS = {aten.index.Tensor, aten.index_put.default, aten.index_put_.default}
_HOST_READS = {"tolist", "numpy", "cpu"}
_NAMES_HOST = re.compile(r"""["']cpu["']|\.cpu\(""")  # a call-site line that asks for the host by name
_HERE = __file__.removesuffix("c")  # .py, also when imported from a .pyc


@dataclass
class SyncEvent:
    what: str    # e.g. "aten._local_scalar_dense.default", "Tensor.tolist", "accelerator.synchronize"
    where: str   # "path/to/file.py:123 in function" of the first frame outside torch and this module

    def __str__(self) -> str:
        return f"{self.what} at {self.where}"


def _caller() -> tuple[str, str]:
    """("file:line in fn <- file:line in its caller", source line) of the innermost frame outside torch's own
    Python code and this module; the caller tells apart two uses of one helper."""
    torch_dir = torch.__file__.rsplit("/", 1)[0]

    def outside(f):
        while f is not None and (f.f_code.co_filename == _HERE or f.f_code.co_filename.startswith(torch_dir)):
            f = f.f_back
        return f

    f = outside(sys._getframe(1))
    if f is None:
        return "?", ""
    where = f"{f.f_code.co_filename}:{f.f_lineno} in {f.f_code.co_name}"
    b = outside(f.f_back)
    if b is not None:
        where += f" <- {b.f_code.co_filename}:{b.f_lineno} in {b.f_code.co_name}"
    return where, linecache.getline(f.f_code.co_filename, f.f_lineno).strip()


class SyncCounter:
    """Context manager recording every host-device sync in its body (see the module docstring)."""

    def __init__(self) -> None:
        self.events: list[SyncEvent] = []
        self._host: dict[int, torch.Tensor] = {}  # id -> tensor (kept alive so that ids stay unique)
        self._paused = 0
        self._modes: list = []
        self._patched: list[tuple[object, str, object]] = []

    # ----------------------------------------------------------------------------------------------
    def host(self, t: torch.Tensor) -> torch.Tensor:
        """Register a host input (e.g. a loader's batch tensor); returns it."""
        self._host[id(t)] = t
        return t

    def host_batches(self, batches: Iterator[dict[str, torch.Tensor]]) -> Iterator[dict[str, torch.Tensor]]:
        """The loader's batches, made with counting paused and registered as host tensors."""
        it = iter(batches)
        while True:
            with self.paused():
                try:
                    batch = next(it)
                except StopIteration:
                    return
                for v in batch.values():
                    if isinstance(v, torch.Tensor):
                        self.host(v)
            yield batch

    @contextlib.contextmanager
    def paused(self):
        self._paused += 1
        try:
            yield
        finally:
            self._paused -= 1

    def record(self, what: str) -> None:
        if not self._paused:
            self.events.append(SyncEvent(what, _caller()[0]))

    def counts(self) -> Counter:
        return Counter(str(e) for e in self.events)

    def report(self) -> str:
        if not self.events:
            return "no host-device syncs"
        return f"{len(self.events)} host-device syncs:\n" + "\n".join(
            f"  {n} x {e}" for e, n in self.counts().most_common())

    # ----------------------------------------------------------------------------------------------
    def __enter__(self) -> "SyncCounter":
        self._patch_synchronize()
        self._modes = [_FunctionCounter(self), _DispatchCounter(self)]
        for m in self._modes:
            m.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        for m in reversed(self._modes):
            m.__exit__(*exc)
        for obj, name, old in reversed(self._patched):
            setattr(obj, name, old)
        self._patched.clear()

    def _patch_synchronize(self) -> None:
        targets = [(torch.cuda, "synchronize", "torch.cuda.synchronize")]
        if "deepspeed" in sys.modules:  # never import DeepSpeed here (the model side counts without it)
            from deepspeed.accelerator import get_accelerator

            targets.append((get_accelerator(), "synchronize", "accelerator.synchronize"))
        for obj, name, label in targets:
            old = getattr(obj, name)

            def counted(*a, _old=old, _label=label, **k):
                self.record(_label)
                return _old(*a, **k)

            self._patched.append((obj, name, old))
            setattr(obj, name, counted)


class _DispatchCounter(TorchDispatchMode):
    def __init__(self, counter: SyncCounter) -> None:
        super().__init__()
        self.counter = counter

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _SYNC_OPS:
            if not (func is aten.repeat_interleave.Tensor and kwargs.get("output_size") is not None):
                self.counter.record(str(func))
        elif func in _MASK_INDEX_OPS:
            indices = args[1] if len(args) > 1 else kwargs.get("indices", ())
            if any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in indices or ()):
                self.counter.record(f"{func} (boolean mask)")
        return func(*args, **kwargs)


class _FunctionCounter(TorchFunctionMode):
    def __init__(self, counter: SyncCounter) -> None:
        super().__init__()
        self.counter = counter

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name in _HOST_READS or name == "to":
            c = self.counter
            self_t = args[0] if args and isinstance(args[0], torch.Tensor) else None
            if self_t is not None and id(self_t) not in c._host and not c._paused:
                if name in _HOST_READS:
                    c.record(f"Tensor.{name}")
                elif _NAMES_HOST.search(_caller()[1]):  # .to("cpu"), .to(torch.device("cpu")), ...
                    c.record("Tensor.to (host)")
        return func(*args, **kwargs)

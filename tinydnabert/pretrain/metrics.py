"""What the training loop measures: the interval meter, the rank-0 TensorBoard writer, peak FLOP/s,
memory, and the finite-loss check.

The meter keeps its sums on the device, so the steps between two log lines never wait on it; `read`
at the log interval is the loop's one host-device sync (nanoGPT's rule).
"""

from __future__ import annotations

import math
import resource
import time
from typing import Any

import torch

from tinydnabert.errors import InputError

# Peak dense bf16 tensor-core FLOP/s per device, for MFU when --peak-tflops is 0 (vendor datasheets).
# First match wins, so longer names come first.
GPU_PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "GH200": 989.0, "A100": 312.0, "A10G": 70.0, "A10": 125.0,
                   "L40S": 362.0, "L4": 121.0, "V100": 125.0, "4090": 165.0, "3090": 71.0}


class IntervalMeter:
    """Sums of (loss, n_correct, n_masked) over one log interval, on the device, plus its host clock."""

    def __init__(self, device: torch.device) -> None:
        self.acc = torch.zeros(3, dtype=torch.float64, device=device)  # [loss sum, n_correct, n_masked]
        self.restart()

    def restart(self) -> None:
        self.acc.zero_()
        self.steps, self.data_wait, self.t0 = 0, 0.0, time.perf_counter()

    def pause_clock(self) -> None:
        """Evaluation and checkpoint time is not training throughput."""
        self.t0 = time.perf_counter()

    def read(self, all_reduce) -> tuple[float, float, float, float]:
        """(loss sum, n_correct, n_masked over all ranks, seconds) of the interval; syncs."""
        all_reduce(self.acc)
        loss_sum, correct, masked = self.acc.tolist()  # sync: once per log interval
        return loss_sum, correct, masked, time.perf_counter() - self.t0


class RankZeroWriter:
    """TensorBoard scalars through the engine's own SummaryWriter (rank 0 only; None elsewhere)."""

    def __init__(self, summary_writer: Any | None):
        self.w = summary_writer

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if self.w is None:
            return
        for k, v in values.items():
            self.w.add_scalar(k, v, step)
        self.w.flush()

    def close(self) -> None:
        if self.w is not None:
            self.w.flush()


def peak_flops_per_device(peak_tflops: float, device: torch.device) -> tuple[float, str]:
    """Peak FLOP/s per device and where the number came from (`peak_tflops` > 0 overrides)."""
    if peak_tflops > 0:
        return peak_tflops * 1e12, "--peak-tflops"
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, tflops in GPU_PEAK_TFLOPS.items():
            if key in name:
                return tflops * 1e12, f"bf16 datasheet ({name})"
        return float("nan"), f"unknown GPU {name}: pass --peak-tflops"
    # CPU: no datasheet; measure a 1024^3 fp32 matmul on this rank's threads: the best of six 50-ms
    # windows, since other jobs on the machine can only make a window slower. Its random operands come
    # from a private generator: drawing from the global one would shift dropout masks.
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(1024, 1024, generator=g), torch.randn(1024, 1024, generator=g)
    a @ b
    best = 0.0
    for _ in range(6):
        t0, n = time.perf_counter(), 0
        while time.perf_counter() - t0 < 0.05:
            a @ b
            n += 1
        best = max(best, 2 * 1024**3 * n / (time.perf_counter() - t0))
    return best, f"measured fp32 matmul, {torch.get_num_threads()} thread(s)"


def memory_stats(device: torch.device) -> dict[str, float]:
    if device.type == "cuda":
        return {"mem/max_allocated_gib": torch.cuda.max_memory_allocated(device) / 2**30,
                "mem/max_reserved_gib": torch.cuda.max_memory_reserved(device) / 2**30}
    # ru_maxrss is KiB on Linux
    return {"mem/max_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


class NonFiniteLoss(InputError):
    pass


def check_finite(loss: float, step: int, latest_file: str) -> None:
    """Stop (on every rank: the value is all-reduced, so all agree) instead of training on NaN weights."""
    if not math.isfinite(loss):
        raise NonFiniteLoss(
            f"non-finite training loss ({loss}) at step {step}; the weights after this point are not saved. "
            f"Resume from the last complete checkpoint ({latest_file}) with a lower "
            "learning rate or stronger gradient_clipping in the DeepSpeed config "
            "(`--resume` continues from it), or check the shards for corrupt samples.")

"""Warmup-stable-decay (WSD), the one LR schedule DeepSpeed cannot build from its JSON.

    "scheduler": {"type": "WarmupStableDecayLR", "params": {"warmup_min_lr": 0.0, "warmup_max_lr": 1e-4,
                  "warmup_num_steps": 20000, "total_num_steps": 200000, "decay_fraction": 0.2}}

The schedule stays in the DeepSpeed JSON like every other (one source of truth, ds_config.py checks it);
train.py takes this block out of the dict it hands DeepSpeed and passes `build` as deepspeed.initialize's
lr_scheduler= instead. The class is DeepSpeed's own WarmupLR with another gamma, not a torch LambdaLR, so
that it keeps WarmupDecayLR's clock exactly: `last_batch_iteration` counts engine.step() calls, its
state_dict is that one integer (DeepSpeed saves and restores a client scheduler's state_dict in its
checkpoint like its own), `total_num_steps` is what --max-steps defaults to, and get_lr() is what
checkpoint.load re-applies after a resume. Swapping linear for WSD changes gamma and nothing else.
"""

from __future__ import annotations

from typing import Any

from deepspeed.runtime.lr_schedules import WARMUP_LINEAR_RATE, WarmupLR


def wsd_bounds(warmup_num_steps: int, total_num_steps: int, decay_fraction: float) -> tuple[int, int]:
    """(warmup steps as WarmupLR counts them (at least 2), first step of the decay)."""
    return max(2, warmup_num_steps), total_num_steps - round(decay_fraction * total_num_steps)


def wsd_lr(step: int, *, warmup_min_lr: float, warmup_max_lr: float, warmup_num_steps: int, total_num_steps: int,
           decay_fraction: float, decay_min_lr: float | None = None, **_: Any) -> float:
    """The closed form at scheduler iteration `step` (DeepSpeed's last_batch_iteration: the LR of optimizer
    step step + 1): linear warmup from warmup_min_lr over warmup_num_steps, warmup_max_lr until the last
    round(decay_fraction x total_num_steps) steps, then linear to decay_min_lr (default warmup_min_lr) at
    total_num_steps."""
    warm, start = wsd_bounds(warmup_num_steps, total_num_steps, decay_fraction)
    floor = warmup_min_lr if decay_min_lr is None else decay_min_lr
    if step < warm:
        return warmup_min_lr + (warmup_max_lr - warmup_min_lr) * step / warm
    if step < start:
        return warmup_max_lr
    return floor + (warmup_max_lr - floor) * max(0.0, (total_num_steps - step) / (total_num_steps - start))


class WarmupStableDecayLR(WarmupLR):
    """WarmupLR (linear warmup) + a stable phase + a linear decay over the last decay_fraction of the steps."""

    def __init__(self, optimizer: Any, total_num_steps: int, decay_fraction: float, warmup_min_lr: float = 0.0,
                 warmup_max_lr: float = 1e-3, warmup_num_steps: int = 1000, warmup_type: str = WARMUP_LINEAR_RATE,
                 decay_min_lr: float | None = None, last_batch_iteration: int = -1):
        self.total_num_steps = total_num_steps
        self.decay_fraction = decay_fraction
        self.decay_min_lr = warmup_min_lr if decay_min_lr is None else decay_min_lr
        self.decay_start = wsd_bounds(warmup_num_steps, total_num_steps, decay_fraction)[1]
        super().__init__(optimizer, warmup_min_lr, warmup_max_lr, warmup_num_steps, warmup_type, last_batch_iteration)

    def get_lr(self) -> list[float]:
        s = self.last_batch_iteration
        if s < self.decay_start:
            return super().get_lr()  # warmup (gamma s / W) and the stable phase (gamma 1), as WarmupLR
        frac = max(0.0, (self.total_num_steps - s) / (self.total_num_steps - self.decay_start))
        return [self.decay_min_lr + (top - self.decay_min_lr) * frac for top in self.max_lrs]


def build(params: dict[str, Any]):
    """deepspeed.initialize(lr_scheduler=build(params)): DeepSpeed calls it with the optimizer."""
    return lambda optimizer: WarmupStableDecayLR(optimizer, **params)

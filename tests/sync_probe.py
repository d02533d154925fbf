"""Count the host-device syncs of the real training loop: tinydnabert.pretrain.train.setup + fit with a real DeepSpeed
engine (world size 1, in this process), a tiny model and real shards; DeepSpeed's internals are counted too.

    python tests/sync_probe.py --data SHARDS --out DIR [--variant NAME ...] [--cuda-debug]

Log, eval and save steps may sync (that is where the loop reads its numbers); they and the loader's
making of the next host batch are not counted. Prints one JSON line per variant (VARIANTS): the optimizer,
the optimizer steps, the micro-steps and every counted sync with its call site. The tests run it in its own
process (`probe` below): the engine initialises torch.distributed, which must not leak into the test process.

--cuda-debug (GPU only) also turns on torch.cuda.set_sync_debug_mode("warn") while counting and reports
the CUDA driver's own warnings, the ground truth that the CPU-side counter approximates.
"""

from __future__ import annotations

import argparse
import functools
import json
import subprocess
import sys
import warnings
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
# DeepSpeed 0.19.8 stage_1_and_2.unscale_and_clip_grads: `if is_invalid_grad_norm(clip_norm)` is a bool() of
# a device tensor whenever gradient_clipping > 0 (once per optimizer step; see BENCHMARKS.md "Host-device syncs")
CLIPPING_SYNC = "in is_invalid_grad_norm <- "
CLIPPING_CALLER = "in unscale_and_clip_grads"


# name -> (config, head, changes to the JSON); the head: "fixed" = --masked-per-row (no sync), "full" = the
# head on every position (the accelerator default), "nonzero" = on the masked rows found by nonzero() (CPU default)
VARIANTS = {
    "shipped": ("zero1.json", "fixed", {}),
    "full-head": ("zero1.json", "full", {}),
    "nonzero-head": ("zero1.json", "nonzero", {}),
    "no-clipping": ("zero1.json", "fixed", {"gradient_clipping": 0.0}),
    # what zero1.json switches off: DeepSpeed's defaults for its throughput timer and bf16 overflow check
    "deepspeed-defaults": ("zero1.json", "fixed", {"timers": None, "bf16": {"enabled": True}}),
    "cpu-fp32": ("zero1-cpu-fp32.json", "fixed", {}),
}


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--variant", action="append", choices=sorted(VARIANTS), help="default: all")
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--cuda-debug", action="store_true")
    a = p.parse_args()
    from tinydnabert.pretrain import train

    counter = Probe(cuda_debug=a.cuda_debug and torch.cuda.is_available())
    counter.install(train)
    for name in a.variant or list(VARIANTS):
        print(json.dumps({"variant": name, **counter.run(train, name, a.data, Path(a.out) / name, a.steps)}))
        sys.stdout.flush()
    return 0


class Probe:
    """One SyncCounter over the real loop; log, eval and save (and the loader) uncounted."""

    def __init__(self, cuda_debug: bool) -> None:
        from tinydnabert.pretrain.syncs import SyncCounter

        self.counter = SyncCounter()
        self.cuda_debug = cuda_debug
        self.micro = 0

    def debug(self, on: bool) -> None:
        if self.cuda_debug:
            torch.cuda.set_sync_debug_mode("warn" if on else "default")

    def uncounted(self, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kw):
            self.debug(False)
            try:
                with self.counter.paused():
                    return fn(*args, **kw)
            finally:
                self.debug(True)
        return wrapper

    def install(self, train) -> None:
        # Where the loop is allowed to sync: the log interval, evaluation, checkpoints.
        for name in ("log_interval", "run_eval", "save"):
            setattr(train, name, self.uncounted(getattr(train, name)))
        real_step = train.train_step

        def counting_step(engine, batches, gas, device, acc, seed_dropout=None):
            self.micro += gas
            return real_step(engine, batches, gas, device, acc, seed_dropout)

        train.train_step = counting_step

    def run(self, train, name: str, data: str, out: Path, steps: int) -> dict:
        from tinydnabert.pretrain import ds_config
        from tinydnabert.pretrain.data import DataConfig
        from tinydnabert.pretrain.model import ModelConfig

        config, head, changes = VARIANTS[name]
        out.mkdir(parents=True, exist_ok=True)
        # 2 micro-steps per optimizer step, so that per-micro-step and per-step syncs count differently
        ds = ds_config.derive(ds_config.shipped(config), batch=4, micro=2, warmup=2, steps=100)
        for k, v in changes.items():
            if v is None:
                ds.pop(k, None)
            else:
                ds[k] = v
        ds_path = out / "ds_config.json"
        ds_path.write_text(json.dumps(ds, indent=2))
        cfg = train.PretrainConfig(data=data, out=str(out / "run"), max_steps=steps, log_interval=3,
                                   eval_interval=3, save_interval=steps, peak_tflops=1.0, export=False)
        data_cfg = DataConfig(seq_len=64, num_workers=0, val_batches=1, masked_per_row=16 if head == "fixed" else 0)
        run = train.setup(cfg, ModelConfig.tiny(hidden_size=32, intermediate_size=64), str(ds_path), data_cfg)
        if head != "fixed":
            run.engine.module.select_masked = head == "nonzero"
        run.train_loader = _HostLoader(run.train_loader, self.counter)
        self.counter.events.clear()
        self.micro = 0
        state = train.TrainState()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with self.counter:
                self.debug(True)
                train.fit(run, state)
                self.debug(False)
        if self.cuda_debug:
            torch.cuda.synchronize()
        return {"optimizer": type(run.engine.optimizer).__name__, "steps": state.step, "micro_steps": self.micro,
                "bf16": run.engine.bfloat16_enabled(), "device": str(run.device),
                "events": [[what, n] for what, n in self.counter.counts().most_common()],
                "cuda_warnings": [f"{w.filename}:{w.lineno}: {str(w.message)[:160]}" for w in caught
                                  if "synchroniz" in str(w.message)]}


class _HostLoader:
    """The train loader, with its batches made uncounted and registered as host tensors."""

    def __init__(self, inner, counter) -> None:
        self._inner, self._counter = inner, counter

    def __iter__(self):
        return self._counter.host_batches(self._inner)

    def __getattr__(self, name):
        return getattr(self._inner, name)


# ------------------------------------------------------------------------------ for the tests


def probe(tmp_path: Path, shards: Path, variants: list[str], cuda_debug: bool = False) -> dict[str, dict]:
    """Run this script in a subprocess on this checkout's tinydnabert; {variant: result}."""
    from tests.helpers import child_env

    # One process on a free port, whatever an earlier in-process test left in os.environ (RANK & co.).
    cmd = [sys.executable, str(REPO / "tests" / "sync_probe.py"), "--data", str(shards), "--out", str(tmp_path)]
    cmd += [a for v in variants for a in ("--variant", v)] + (["--cuda-debug"] if cuda_debug else [])
    r = subprocess.run(cmd, capture_output=True, text=True, env=child_env(one_process=True), timeout=300)
    assert r.returncode == 0, r.stderr[-4000:]
    out = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    return {o["variant"]: o for o in out}


def split_clipping(result: dict) -> tuple[list, list]:
    """(the clipping syncs, every other sync) of a probe result."""
    events = [(w, n) for w, n in result["events"]]
    clip = [(w, n) for w, n in events if CLIPPING_SYNC in w and CLIPPING_CALLER in w]
    return clip, [e for e in events if e not in clip]


if __name__ == "__main__":
    sys.exit(main())

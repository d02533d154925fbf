"""Host overhead of one optimizer step: our DeepSpeed engine vs a plain PyTorch loop (`throughput.py --overhead`).

    python benchmarks/throughput.py --overhead [--rounds 5] [--block 200]

A negligible model (hidden 16, 1 layer, micro-batch 1 x 32 tokens) makes the step's compute ~nothing, so
what is left is what each loop costs the host per optimizer step. Configurations, in one process, in
interleaved blocks (--rounds x --block steps, the first step of each block dropped):

  plain        the same MaskedLMObjective (--masked-per-row head), torch.optim.AdamW (foreach), clip_grad_norm_
               1.0, a LambdaLR warmup, zero_grad(set_to_none) -- what DeepSpeed's engine does, written by hand
  ours bf16    tinydnabert.pretrain.train.train_step on the engine from ds_configs/zero1.json (bf16, ZeRO-1, FusedAdam,
               clipping, TensorBoard on: what a GPU run executes), batch = micro = 1
  ours fp32    the same from zero1-cpu-fp32.json
  ours bf16, TensorBoard off: what DeepSpeed's own per-step TensorBoard event costs

All take the same pre-made batches from a list, so the loader is not in the step; its hand-off (next() on
the real TrainLoader with one worker process) is timed separately. Then each loop runs under cProfile for
--block steps and its host time is grouped by top-level module (deepspeed/runtime/zero, torch/optim, ...).
"""

from __future__ import annotations

import cProfile
import json
import os
import pstats
import shutil
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch

SEQ = 32


def _model_cfg(shards: Path):
    from tinydnabert.prep.tokenizer import load_tokenizer
    from tinydnabert.pretrain.model import ModelConfig

    return ModelConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=1, intermediate_size=32,
                       max_position_embeddings=SEQ + 2).with_tokenizer(load_tokenizer(shards))


def _objective(mcfg):
    from tinydnabert.pretrain.model import MaskedLMObjective, build_model

    torch.manual_seed(0)
    return MaskedLMObjective(build_model(mcfg), masked_per_row=8)


class Plain:
    name = "plain PyTorch loop (AdamW, clip_grad_norm_, LambdaLR)"

    def __init__(self, mcfg, batches) -> None:
        self.model = _objective(mcfg).train()
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-4, betas=(0.9, 0.999), eps=1e-8,
                                     weight_decay=1e-5)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: min(1.0, (s + 1) / 20000))
        self.acc = torch.zeros(3, dtype=torch.float64)
        self.batches, self.i = batches, 0

    def step(self) -> None:
        batch = self.batches[self.i % len(self.batches)]
        self.i += 1
        loss, n_correct, n_masked = self.model(batch["input_ids"].to("cpu", non_blocking=True),
                                               batch["labels"].to("cpu", non_blocking=True))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        self.sched.step()
        self.opt.zero_grad(set_to_none=True)
        self.acc += torch.stack([loss.detach().double(), n_correct.double(), n_masked.double()])


class Ours:
    def __init__(self, mcfg, batches, config: str, tb_dir: Path | None) -> None:
        import deepspeed

        from tinydnabert.pretrain import ds_config

        self.name = f"ours: train_step, engine from {config}" + (", TensorBoard off" if tb_dir is None else "")
        ds = ds_config.derive(ds_config.shipped(config), batch=1, micro=1)
        if tb_dir is None:  # what DeepSpeed's per-step TensorBoard event (Train/Samples/lr) costs
            ds["tensorboard"] = {"enabled": False}
        else:
            ds["tensorboard"]["output_path"] = str(tb_dir)  # as train.setup does: a real run logs every step
        model = _objective(mcfg)
        self.engine, *_ = deepspeed.initialize(model=model, model_parameters=model.parameters(), config=ds)
        self.engine.train()
        self.acc = torch.zeros(3, dtype=torch.float64, device=self.engine.device)
        self.batches, self.i = batches, 0

    def _next(self):
        while True:
            yield self.batches[self.i % len(self.batches)]
            self.i += 1

    def step(self) -> None:
        from tinydnabert.pretrain.train import train_step

        if not hasattr(self, "_it"):
            self._it = self._next()
        train_step(self.engine, self._it, 1, self.engine.device, self.acc)


def _group(path: str) -> str:
    """A profile entry's file as a short module group: deepspeed/runtime/zero, torch/optim, tinydnabert, ..."""
    parts = Path(path).parts
    for root, depth in (("deepspeed", 2), ("torch", 1), ("transformers", 1), ("tinydnabert", 0)):
        if root in parts:
            rest = [x.removesuffix(".py") for x in parts[len(parts) - 1 - parts[::-1].index(root) + 1:]]
            return "/".join([root, *rest[:min(depth, len(rest) - 1) or (1 if depth else 0)]])
    return "benchmark loop / stdlib"


def _profile(cfg, n: int) -> dict[str, float]:
    """ms per step by module group: each function's own time (tottime), and a C function's (an op, a builtin)
    charged to the Python code that called it, so "deepspeed/runtime/zero" includes the ops it launches."""
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(n):
        cfg.step()
    prof.disable()
    stats = pstats.Stats(prof).stats
    groups: dict[str, float] = defaultdict(float)

    def group_of(func, seen=()) -> list[tuple[str, float]]:
        """[(group, share)] for a function: its file's group, or for a C function its callers' groups."""
        path = func[0]
        if not (path.startswith("~") or path.startswith("<")):
            return [(_group(path), 1.0)]
        callers = stats[func][4]
        total = sum(v[2] for v in callers.values()) or 1.0
        out = []
        for caller, v in callers.items():
            if caller in seen or caller not in stats:
                continue
            out += [(g, share * v[2] / total) for g, share in group_of(caller, (*seen, func))]
        return out or [("C code (no Python caller)", 1.0)]

    for func, (_, _, tottime, _, _) in stats.items():
        for g, share in group_of(func):
            groups[g] += tottime * share
    return {k: 1000 * v / n for k, v in sorted(groups.items(), key=lambda kv: -kv[1])}


def _loader_handoff(shards: Path, n: int) -> float:
    """Median ms of next() on the real train loader (one worker process, micro-batch 1 x SEQ)."""
    from tinydnabert.pretrain.data import DataConfig, build_train_loader

    it = iter(build_train_loader(shards, DataConfig(seq_len=SEQ, num_workers=1), 1))
    for _ in range(20):  # the worker's start and first group of shards
        next(it)
    times = []
    for _ in range(n):
        t = time.perf_counter()
        next(it)
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def overhead_main(a, make_shards) -> int:
    from tinydnabert.pretrain import distributed
    from tinydnabert.pretrain.data import DataConfig, build_train_loader

    torch.set_num_threads(1)  # a negligible model gains nothing from threads; they only add noise here
    tmp = Path(tempfile.mkdtemp(prefix="tdb-overhead-"))
    try:
        shards = Path(a.data) if a.data else make_shards(tmp)
        mcfg = _model_cfg(shards)
        loader = iter(build_train_loader(shards, DataConfig(seq_len=SEQ, num_workers=0), 1))
        batches = [next(loader) for _ in range(64)]
        if "MASTER_PORT" not in os.environ:  # world size 1 in this process; 29500 may be taken by another run
            import socket

            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                os.environ["MASTER_PORT"] = str(sock.getsockname()[1])
        distributed.bootstrap_env()
        import deepspeed

        deepspeed.init_distributed()
        cfgs = [Plain(mcfg, batches), Ours(mcfg, batches, "zero1.json", tmp / "tb-bf16"),
                Ours(mcfg, batches, "zero1-cpu-fp32.json", tmp / "tb-fp32"),
                Ours(mcfg, batches, "zero1.json", None)]
        for c in cfgs:  # warm-up: first steps allocate optimizer state, JIT ops load
            for _ in range(10):
                c.step()
        times: dict[str, list[float]] = {c.name: [] for c in cfgs}
        load = [os.getloadavg()[0]]
        for _ in range(a.rounds):
            for c in cfgs:
                for i in range(a.block + 1):
                    t = time.perf_counter()
                    c.step()
                    dt = time.perf_counter() - t
                    if i:
                        times[c.name].append(dt)
            load.append(os.getloadavg()[0])
        profiles = {c.name: _profile(c, a.block) for c in cfgs}
        handoff = _loader_handoff(shards, a.block)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    plain = statistics.median(times[cfgs[0].name]) * 1000
    results = []
    for c in cfgs:
        ms = statistics.median(times[c.name]) * 1000
        q = statistics.quantiles([1000 * t for t in times[c.name]], n=4)
        results.append({"name": c.name, "median_ms": ms, "p25_ms": q[0], "p75_ms": q[2], "steps": len(times[c.name]),
                        "over_plain_ms": ms - plain, "ratio_to_plain": ms / plain, "profile_ms": profiles[c.name]})
    setup = {"machine": f"CPU ({os.cpu_count()} cores)", "torch": torch.__version__,
             "deepspeed": deepspeed.__version__, "model": "L1-H16-A1, micro-batch 1 x 32 tokens",
             "rounds": a.rounds, "block": a.block, "load_average_1min": load, "threads": 1,
             "loader_handoff_ms": handoff, "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    print(f"\nhost time per optimizer step, medians of {a.rounds} x {a.block} interleaved steps "
          f"(load {min(load):.1f}-{max(load):.1f})\n")
    print(f"| {'configuration':<62} | median ms | p25-p75 ms | over plain | ratio |")
    print(f"|{'-' * 64}|-----------|------------|------------|-------|")
    for r in results:
        print(f"| {r['name']:<62} | {r['median_ms']:9.2f} | {r['p25_ms']:4.2f}-{r['p75_ms']:<5.2f} | "
              f"{r['over_plain_ms']:+9.2f}  | {r['ratio_to_plain']:5.2f} |")
    print(f"\nloader hand-off (next() from one worker process): {handoff:.3f} ms per micro-batch")
    names = [r["name"] for r in results]
    groups = sorted({g for r in results for g in r["profile_ms"]},
                    key=lambda g: -max(r["profile_ms"].get(g, 0) for r in results))
    print("\nwhere the host time goes, ms per step under cProfile (which inflates Python-heavy code):\n")
    print("(columns: the configurations above, in order)\n")
    print(f"| {'module group':<40} | " + " | ".join(f"{n.split(':')[0][:6]:>6}{i}" for i, n in enumerate(names)) + " |")
    for g in groups[:16]:
        print(f"| {g:<40} | " + " | ".join(f"{r['profile_ms'].get(g, 0):7.3f}" for r in results) + " |")
    print("| total (profiled)                         | " + " | ".join(
        f"{sum(r['profile_ms'].values()):7.3f}" for r in results) + " |")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"setup": setup, "results": results}, indent=2) + "\n")
    print(f"\nwrote {out}")
    sys.stdout.flush()
    return 0

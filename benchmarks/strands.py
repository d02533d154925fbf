"""Does reading both strands help? --strands both against --strands forward, paired by seed, probe and fine-tuning.

    python benchmarks/strands.py --model RUN/export                      # the CPU-sized default (the lead runs it)
    python benchmarks/strands.py --model RUN/export --tasks gue/prom_core_all --seeds 2 --steps 5 \
        --max-train-samples 200 --work /tmp/strands --json /tmp/strands.json    # an end-to-end check, ~1 min

The GUE tasks are read from $TINYDNABERT_DATA/benchmark/GUE (default ../shared/data beside the checkout).

For each task and protocol, two runs through the project's own entry points (tinydnabert.eval.probe.run_probe,
tinydnabert.eval.finetune.run_finetune) that differ in --strands alone:
  forward  each sequence as given (what every earlier result measured);
  both     probe: the mean of the sequence's and its reverse complement's embeddings as the feature;
           finetune: each training example on a random strand (its own seeded stream, so the batches are the
           forward run's), the mean of the two strands' logits at validation and test.
Seed s is the same experiment in both arms (the same carve, head initialisation and batches), so the per-seed
difference both - forward removes what the seed does to both; its mean gets the Student-t interval of
tinydnabert/eval/stats.py (an interval spanning 0: no detectable difference at this many seeds).
The default budget (200 steps x 32, 4,000 training rows, 3 seeds, two GUE tasks) is CPU-sized: about the
probe's seconds plus 2 x 3 x 200 fine-tuning steps per task. Finished runs under --work are reused (run with
the same settings again to resume). Prints a table and writes --json (default benchmarks/results/strands.json).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from tinydnabert.eval.common import STRANDS, finished
from tinydnabert.eval.stats import fmt_interval, paired_interval
from tinydnabert.io import atomic_write_json

REPO = Path(__file__).resolve().parents[1]
PROTOCOLS = ("probe", "finetune")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="the pretrained HF export (RUN/export) to measure")
    p.add_argument("--tasks", default="gue/prom_core_all,gue/prom_300_tata",
                   help="comma-separated tasks (`tinydnabert finetune --list-tasks`)")
    p.add_argument("--protocols", default="probe,finetune", help="probe, finetune or both (comma-separated)")
    p.add_argument("--seeds", type=int, default=3, help="paired seeds (seed, seed+1, ...)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=200, help="fine-tuning optimizer steps per seed")
    p.add_argument("--batch-size", type=int, default=32, help="fine-tuning sequences per step")
    p.add_argument("--warmup-steps", type=int, default=-1, help="fine-tuning warmup (-1 = 10%% of --steps)")
    p.add_argument("--eval-every", type=int, default=0, help="fine-tuning validation interval (0 = --steps / 4)")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--max-train-samples", type=int, default=4000, help="seeded, stratified training subset (0 = all)")
    p.add_argument("--c-grid", default="0.001,0.01,0.1,1,10", help="the probe's inverse L2 strengths")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--work", default=str(REPO / "runs" / "strands"), help="run directories (reused when finished)")
    p.add_argument("--json", default=str(REPO / "benchmarks" / "results" / "strands.json"))
    return p.parse_args(argv)


def arm_config(a: argparse.Namespace, task: str, protocol: str, strands: str):
    """The config of one run: everything from the command line, the arm's --strands, its own run directory."""
    from tinydnabert.eval.finetune import FinetuneConfig
    from tinydnabert.eval.probe import ProbeConfig

    shared = dict(model=a.model, task=task, seed=a.seed, seeds=a.seeds, max_train_samples=a.max_train_samples,
                  strands=strands, device=a.device, overwrite=True,
                  out=str(Path(a.work) / task.replace("/", "__") / f"{protocol}-{strands}"))
    if protocol == "probe":
        return ProbeConfig(c_grid=a.c_grid, **shared)
    warmup = a.warmup_steps if a.warmup_steps >= 0 else a.steps // 10
    every = a.eval_every or max(1, a.steps // 4)
    return FinetuneConfig(steps=a.steps, batch_size=a.batch_size, lr=a.lr, warmup_steps=warmup, eval_every=every,
                          log_every=every, **shared)


def run_arm(a: argparse.Namespace, task: str, protocol: str, strands: str) -> dict:
    from tinydnabert.eval.finetune import run_finetune
    from tinydnabert.eval.probe import run_probe

    cfg = arm_config(a, task, protocol, strands)
    done = finished(cfg.out, cfg)
    if done is not None:
        print(f"[skip] {task} {protocol} {strands}: already done ({cfg.out})", flush=True)
        return done
    print(f"[run ] {task} {protocol} {strands} -> {cfg.out}", flush=True)
    t0 = time.perf_counter()
    res = run_probe(cfg) if protocol == "probe" else run_finetune(cfg)
    return {**res, "wall_seconds": round(time.perf_counter() - t0, 1)}


def verdict(p: dict) -> str:
    if p["n"] < 2:
        return "one seed: no interval"
    return "both ahead" if p["low"] > 0 else "forward ahead" if p["high"] < 0 else "no detectable difference"


def compare(task: str, protocol: str, res: dict[str, dict]) -> dict:
    """One row: each arm's per-seed test MCC (by seed), the paired difference both - forward."""
    by_seed = {k: {s["seed"]: s["test_mcc"] for s in r["seeds"]} for k, r in res.items()}
    seeds = sorted(by_seed["forward"])
    if sorted(by_seed["both"]) != seeds:
        raise SystemExit(f"error: {task} {protocol}: the arms ran different seeds ({sorted(by_seed['both'])} vs "
                         f"{seeds}); delete one run directory under --work and rerun")
    mcc = {k: [by_seed[k][s] for s in seeds] for k in STRANDS}
    diff = paired_interval(by_seed["both"], by_seed["forward"], names=("both", "forward"))
    return {"task": task, "protocol": protocol, "seeds": seeds, "test_mcc": mcc,
            "mean": {k: res[k]["test_mcc_mean"] for k in STRANDS}, "sd": {k: res[k]["test_mcc_sd"] for k in STRANDS},
            "both_minus_forward": {**diff, "verdict": verdict(diff)},
            "seconds": {k: res[k].get("wall_seconds") for k in STRANDS}, "device": res["both"]["device"],
            "counts": res["both"]["counts"]}


def table(rows: list[dict]) -> str:
    lines = ["| task | protocol | forward MCC | both MCC | both - forward [95% CI] | verdict |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        m, s = r["mean"], r["sd"]
        lines.append(f"| {r['task']} | {r['protocol']} | {m['forward']:.3f} ± {s['forward']:.3f} | "
                     f"{m['both']:.3f} ± {s['both']:.3f} | {fmt_interval(r['both_minus_forward'])} | "
                     f"{r['both_minus_forward']['verdict']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    if not (Path(a.model) / "config.json").is_file():
        sys.exit(f"error: {a.model}: not an HF export (no config.json); pass RUN/export")
    protocols = [p.strip() for p in a.protocols.split(",") if p.strip()]
    if not protocols or set(protocols) - set(PROTOCOLS):
        sys.exit(f"error: --protocols {a.protocols!r}: use probe, finetune or probe,finetune")
    t0 = time.perf_counter()
    rows = []
    for task in [t.strip() for t in a.tasks.split(",") if t.strip()]:
        for protocol in protocols:
            rows.append(compare(task, protocol, {k: run_arm(a, task, protocol, k) for k in STRANDS}))
    md = table(rows)
    cfg = arm_config(a, rows[0]["task"], "finetune", "forward")
    setup = {"model": str(Path(a.model).resolve()), "tasks": a.tasks, "protocols": protocols, "seeds": a.seeds,
             "seed": a.seed, "max_train_samples": a.max_train_samples, "c_grid": a.c_grid,
             "finetune": {"steps": cfg.steps, "batch_size": cfg.batch_size, "lr": cfg.lr,
                          "warmup_steps": cfg.warmup_steps, "eval_every": cfg.eval_every},
             "device": rows[0]["device"], "wall_seconds_this_invocation": round(time.perf_counter() - t0, 1),
             "work": a.work}
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip() or "unknown"
    setup.update(commit=commit, date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                 machine=platform.platform(), cpus=os.cpu_count())
    atomic_write_json(Path(a.json), {"setup": setup, "rows": rows, "table_md": md})
    print(f"\n--strands both vs forward, test MCC, paired by seed ({a.seeds} seeds; fine-tuning {cfg.steps} steps x "
          f"{cfg.batch_size}, {a.max_train_samples or 'all'} training rows)\n\n{md}\n\nwrote {a.json}", flush=True)
    return 0


if __name__ == "__main__":
    from tinydnabert.errors import InputError

    try:
        sys.exit(main())
    except InputError as e:  # a task's data not found, a bad setting: say what to do, no traceback
        sys.exit(f"error: {e}")

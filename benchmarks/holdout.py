"""Pretraining that holds a benchmark out: the CPU quickstart's pipeline twice, with and without
`preprocess --exclude-from TASK ...`, then the benchmark of both exports on those tasks, paired by seed.

    python benchmarks/holdout.py                                   # chr20, gue/prom_core_all + gue/prom_300_tata
    python benchmarks/holdout.py --work runs/holdout --tasks gue/prom_core_all --seeds 3

Each arm runs the quickstart's own stage commands (tinydnabert.app.quickstart: the cpu preset's preprocess,
DeepSpeed pretraining, export and benchmark), so "seen" is exactly `make demo`'s model and "held out" differs
only in --exclude-from (the excluded segments are dropped before the tokenizer sample and the shards, so the
held-out arm also trains its own tokenizer). Both benchmarks use the same seeds: seed s has the same carve,
batches and head initialisation in every arm, so per task and protocol the per-seed difference
held-out - seen (pretrained arms) gets the paired interval of tinydnabert/eval/stats.py; each arm's own gain
over its scratch arm is in its table. Also recorded: what --exclude-from removed (from the manifest) and the
overlap of each task's test split with each arm's shards (the held-out arm's must be 0 by construction).
Finished stages are reused (rerun to resume). Writes --json (default benchmarks/results/holdout.json).
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import subprocess
import sys
from pathlib import Path

from tinydnabert.app.quickstart import Quickstart, QuickstartConfig, free_port
from tinydnabert.eval.stats import fmt_interval, paired_interval
from tinydnabert.io import atomic_write_json, data_dir

REPO = Path(__file__).resolve().parents[1]
ARMS = ("seen", "held_out")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", default="gue/prom_core_all,gue/prom_300_tata", help="the held-out (and scored) tasks")
    p.add_argument("--work", default="runs/holdout", help="one quickstart directory per arm (reused when finished)")
    p.add_argument("--seen-from", default="", help="an existing quickstart --out to use as the 'seen' arm's "
                                                    "shards and pretraining (e.g. runs/quickstart)")
    p.add_argument("--json", default=str(REPO / "benchmarks" / "results" / "holdout.json"))
    return p.parse_args(argv)


def run(cmd: list[str], log: Path, env: dict[str, str]) -> None:
    print("$ " + " ".join(cmd), flush=True)
    with log.open("a") as f:
        rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env).returncode
    if rc:
        sys.exit(f"error: `{' '.join(cmd)}` exited with {rc}; its output is in {log}")


def arm(name: str, out: Path, tasks: str, exclude: list[str], seen_from: str) -> dict:
    """Run (or reuse) one arm's preprocess -> pretrain -> export -> benchmark; its figures."""
    base = Path(seen_from) if (name == "seen" and seen_from) else out
    q = Quickstart(QuickstartConfig(out=str(base), tasks=tasks), log=lambda m: None)
    q.fasta = data_dir() / "genome" / "grch37_chr20.fa.gz"
    out.mkdir(parents=True, exist_ok=True)
    log = out / "log.txt"
    if not (q.shards / "manifest.json").is_file():
        run(q.cmd_preprocess() + (["--exclude-from", *exclude] if exclude else []), log, q.env)
    if not (q.export_dir / "config.json").is_file():
        q.write_ds_config()
        run(q.cmd_pretrain(free_port()), log, q.env)
        run(q.cmd_export(), log, q.env)
    bench = out / "benchmark"
    if not (bench / "nt_benchmark.json").is_file():
        cmd = q.cmd_finetune()
        cmd[cmd.index("--out") + 1] = str(bench)
        run(cmd + ["--pretraining-shards", str(q.shards)], log, q.env)
    manifest = json.loads((q.shards / "manifest.json").read_text())
    return {"dir": str(base), "shards": str(q.shards), "export": str(q.export_dir),
            "excluded": manifest.get("exclusions"), "train_bases": manifest["splits"]["train"]["bases"],
            "benchmark": json.loads((bench / "nt_benchmark.json").read_text())}


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    tasks = [t.strip() for t in a.tasks.split(",") if t.strip()]
    work = Path(a.work)
    res = {arm_name: arm(arm_name, work / arm_name, a.tasks, tasks if arm_name == "held_out" else [], a.seen_from)
           for arm_name in ARMS}
    rows = []
    by = {k: {(r["task"], r["protocol"]): r for r in v["benchmark"]["tasks"] if r["status"] == "done"}
          for k, v in res.items()}
    print(f"{'task':<20} {'protocol':<9} {'seen: gain':>22} {'held out: gain':>22} {'held out - seen':>24} "
          f"{'seen test rows':>15}")
    for key in sorted(set(by["seen"]) & set(by["held_out"])):
        s, h = by["seen"][key], by["held_out"][key]
        diff = paired_interval(h["ours_runs"], s["ours_runs"], names=("held out", "seen"))  # by seed id
        rows.append({"task": key[0], "protocol": key[1], "seen_mcc": s["ours_mcc"], "held_out_mcc": h["ours_mcc"],
                     "seen_gain": s["paired"], "held_out_gain": h["paired"], "held_out_minus_seen": diff,
                     "seen_test_kmer_pct": s.get("seen_kmer_pct"), "held_out_test_kmer_pct": h.get("seen_kmer_pct")})
        print(f"{key[0]:<20} {key[1]:<9} {fmt_interval(s['paired']):>22} {fmt_interval(h['paired']):>22} "
              f"{fmt_interval(diff):>24} {s.get('seen_kmer_pct', float('nan')):>14.1f}%")
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    out = {"tasks": tasks, "rows": rows, "arms": res, "commit": commit, "machine": platform.platform(),
           "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "note": "each arm's gain is pretrained - its own scratch (its own tokenizer); held_out_minus_seen pairs "
                   "the two pretrained arms by seed"}
    atomic_write_json(Path(a.json), out)
    print(f"wrote {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

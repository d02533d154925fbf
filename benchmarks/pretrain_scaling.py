"""What pretraining buys per token: one model shape, a range of pretraining budgets, probe and fine-tuning.

    python benchmarks/pretrain_scaling.py                                  # the recorded run (work in runs/)
    python benchmarks/pretrain_scaling.py --budgets 125,500,2000,8000      # add a longer point: resumes the run

One pretraining run on real human chr20 (our engine, `launch/pretrain.py`) with a warmup-then-constant LR
(ds_config.derive(constant=True)), checkpointed at every budget: with no decay, the checkpoint at step k is
a fair point for a budget of k steps, and a longer budget just resumes the run. Each budget's checkpoint
is exported and evaluated exactly like the scratch baseline (the same architecture, random weights):
  * probe: frozen encoder, mean-pooled embeddings, logistic regression (tinydnabert.eval.probe), 3 seeds;
  * finetune: the whole model, tinydnabert.eval.finetune's protocol, 3 seeds;
on each task, and the gain is pretrained minus scratch paired by seed with a 95% t-interval
(tinydnabert.eval.stats). Everything is resumable: finished pretraining steps, exports and evaluations are reused.

Writes OUT/pretrain_scaling.{json,md,png} (benchmarks/results/) and prints the table; shards, checkpoints,
exports and evaluation runs go under --work (runs/pretrain_scaling, not committed).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tinydnabert.eval.common import run_scores
from tinydnabert.eval.stats import fmt_interval, paired_interval
from tinydnabert.io import atomic_write_json, atomic_write_text, data_dir
from tinydnabert.pretrain import ds_config

REPO = Path(__file__).resolve().parents[1]
TASKS = "gue/prom_core_all,gue/mouse_0,gue/prom_300_tata"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results"), help="where the JSON/MD/PNG go")
    p.add_argument("--work", default=str(REPO / "runs" / "pretrain_scaling"), help="shards, runs, exports")
    p.add_argument("--shards", default="", help="shards dir (default: preprocess chr20 into OUT/shards)")
    p.add_argument("--budgets", default="125,500,2000", help="pretraining steps at which to evaluate")
    p.add_argument("--batch", type=int, default=32, help="sequences per step")
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--lr", type=float, default=1e-3, help="peak pretraining LR (held after warmup)")
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--tasks", default=TASKS)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--protocols", default="probe,finetune")
    p.add_argument("--ft-steps", type=int, default=300)
    p.add_argument("--ft-batch", type=int, default=32)
    p.add_argument("--ft-lr", type=float, default=5e-4)
    p.add_argument("--max-train", type=int, default=8000, help="train rows per task (a seeded stratified subset)")
    p.add_argument("--finetune-tasks", default="", help="tasks of the finetune protocol (default: --tasks)")
    p.add_argument("--extend-from", type=int, default=0, help=(
        "budgets above this step continue from its export with --init-from, data seed 1: a weights-only restart "
        "(fresh AdamW moments, a new warmup), for when the first run's checkpoints are gone"))
    p.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS for pretraining and evaluation")
    return p.parse_args()


def ensure_shards(a: argparse.Namespace, out: Path) -> Path:
    if a.shards:
        return Path(a.shards)
    shards = out / "shards"
    if not (shards / "manifest.json").is_file():
        subprocess.run(["tinydnabert", "preprocess", "--fasta", str(data_dir() / "genome" / "grch37_chr20.fa.gz"),
                        "--out", str(shards), "--vocab-size", "1024", "--min-frequency", "4", "--val-fraction",
                        "0.01", "--samples-per-shard", "2048", "--seed", "0", "--no-progress"], check=True)
    return shards


def pretrain(a: argparse.Namespace, shards: Path, run: Path, steps: int, budgets: list[int],
             init_from: Path | None = None) -> float:
    """Pretrain (or resume) to `steps`; a checkpoint at every budget. Returns the wall seconds spent now."""
    from tinydnabert.pretrain import checkpoint

    done = checkpoint.latest(run / "checkpoints") if (run / "checkpoints").is_dir() else None
    if done is not None and checkpoint.Marker.read(done).step >= steps:
        return 0.0
    cfg_path = run.parent / "ds_config.json"
    ds = ds_config.derive(ds_config.shipped(ds_config.CPU_CONFIG), batch=a.batch, micro=a.batch, lr=a.lr,
                          warmup=a.warmup, constant=True)
    atomic_write_json(cfg_path, ds)
    gcd = budgets[0]
    for b in budgets[1:]:
        while b % gcd:
            gcd, b = b % gcd, gcd
    cmd = [sys.executable, str(REPO / "launch" / "pretrain.py"), "--deepspeed_config", str(cfg_path),
           "--data", str(shards), "--out", str(run), "--max-steps", str(steps), "--save-interval", str(gcd),
           "--keep-checkpoints", "1000", "--log-interval", "25", "--eval-interval", str(gcd), "--val-batches", "16",
           "--seq-len", str(a.seq_len), "--hidden-size", str(a.hidden), "--num-hidden-layers", str(a.layers),
           "--num-attention-heads", str(a.heads), "--intermediate-size", str(4 * a.hidden), "--num-workers", "1",
           "--no-export", *(["--resume"] if done is not None else []),
           *(["--init-from", str(init_from), "--seed", "1"] if init_from else [])]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": str(a.threads)})
    return time.perf_counter() - t0


def export(run: Path, step: int, out: Path) -> Path:
    if not (out / "config.json").is_file():
        from tinydnabert.pretrain.export import export_checkpoint

        export_checkpoint(run / "checkpoints" / f"step{step:08d}", out, overwrite=True)
    return out


def evaluate(a: argparse.Namespace, model: str, scratch_from: Path, task: str, protocol: str,
             out: Path) -> dict[str, Any]:
    """results.json of one arm (reused when already there)."""
    if (out / "results.json").is_file():
        return json.loads((out / "results.json").read_text())
    kind = {"model": "scratch", "scratch_from": str(scratch_from)} if model == "scratch" else {"model": model}
    if protocol == "probe":
        from tinydnabert.eval.probe import ProbeConfig, run_probe

        return run_probe(ProbeConfig(task=task, out=str(out), seeds=a.seeds, max_train_samples=a.max_train,
                                     overwrite=True, **kind))
    from tinydnabert.eval.finetune import FinetuneConfig, run_finetune

    return run_finetune(FinetuneConfig(task=task, out=str(out), seeds=a.seeds, steps=a.ft_steps, batch_size=a.ft_batch,
                                       lr=a.ft_lr, warmup_steps=a.ft_steps // 10, eval_every=a.ft_steps // 3,
                                       log_every=a.ft_steps, max_train_samples=a.max_train, overwrite=True, **kind))


def chart(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    protocols = sorted({r["protocol"] for r in rows}, reverse=True)
    fig, axes = plt.subplots(1, len(protocols), figsize=(5.5 * len(protocols), 4.2), dpi=120, squeeze=False)
    for ax, protocol in zip(axes[0], protocols):
        for i, task in enumerate(sorted({r["task"] for r in rows})):
            pts = sorted((r["tokens"], r["paired"]) for r in rows if r["task"] == task and r["protocol"] == protocol)
            x = [t * (1 + 0.04 * (i - 1)) for t, _ in pts]  # a little apart, so the whiskers do not overlap
            y = [p["mean_diff"] for _, p in pts]
            err = [[p["mean_diff"] - p["low"] for _, p in pts], [p["high"] - p["mean_diff"] for _, p in pts]]
            ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=task)
        ax.axhline(0, color="black", lw=0.7)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # 3x10^6 4x10^6 ... overlapped
        ax.set_xlabel("pretraining tokens (chr20)")
        ax.set_ylabel("test MCC gain over scratch (paired, 95% CI)")
        ax.set_title(protocol, fontsize=10)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    save_figure(fig, path)


def save_figure(fig, path: Path) -> None:
    """Lay out and write `fig` to `path` whole or not at all (a temporary file renamed over it), then close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)


def main() -> int:
    a = parse_args()
    out, work = Path(a.out), Path(a.work)
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    budgets = sorted(int(b) for b in a.budgets.split(","))
    protocols = [p.strip() for p in a.protocols.split(",") if p.strip()]
    tasks = [t.strip() for t in a.tasks.split(",") if t.strip()]
    ft_tasks = [t.strip() for t in (a.finetune_tasks or a.tasks).split(",") if t.strip()]
    shards = ensure_shards(a, work)
    from tinydnabert.app.plots import read_scalars

    # Segments of pretraining: (run dir, first step, budgets); a continuation's step k is budget first + k.
    first = [b for b in budgets if not a.extend_from or b <= a.extend_from]
    segments = [(work / "pretrain", 0, first, None)]
    if a.extend_from:
        if a.extend_from not in first:
            raise SystemExit(f"error: --extend-from {a.extend_from} must be one of --budgets")
        segments.append((work / f"pretrain-from{a.extend_from:06d}", a.extend_from,
                         [b for b in budgets if b > a.extend_from], work / "exports" / f"step{a.extend_from:06d}"))
    tokens_per_step = a.batch * a.seq_len
    t_pre, exports, val_loss = 0.0, {}, {}
    for run, start, seg, init_from in segments:
        outs = {b: work / "exports" / f"step{b:06d}" for b in seg}
        if not all((o / "config.json").is_file() for o in outs.values()):
            t_pre += pretrain(a, shards, run, seg[-1] - start, [b - start for b in seg], init_from)
        exports.update({b: export(run, b - start, o) for b, o in outs.items()})
        val_steps, val_losses = read_scalars(run).get("val/loss", ([], [])) if run.is_dir() else ([], [])
        val_loss.update({start + s: v for s, v in zip(val_steps, val_losses) if start + s in seg})
    rows: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    for task in tasks:
        for protocol in protocols:
            if protocol == "finetune" and task not in ft_tasks:
                continue
            base = work / "eval" / task.replace("/", "__") / protocol
            scratch = evaluate(a, "scratch", exports[budgets[0]], task, protocol, base / "scratch")
            s_seeds = [r["test_mcc"] for r in scratch["seeds"]]
            for b in budgets:
                pre = evaluate(a, str(exports[b]), exports[b], task, protocol, base / f"step{b:06d}")
                p_seeds = [r["test_mcc"] for r in pre["seeds"]]
                rows.append({"task": task, "protocol": protocol, "steps": b, "tokens": b * tokens_per_step,
                             "scratch_mcc": scratch["test_mcc_mean"], "pretrained_mcc": pre["test_mcc_mean"],
                             "scratch_seeds": s_seeds, "pretrained_seeds": p_seeds,
                             "paired": paired_interval(run_scores(pre), run_scores(scratch),
                                                       names=("pretrained", "scratch")),
                             "test_rows": pre["counts"]["test"],
                             "val_mlm_loss": val_loss.get(b)})
    lines = [f"Pretraining budget curve: {a.layers} layers x {a.hidden} hidden, seq {a.seq_len}, batch {a.batch}, "
             f"LR {a.lr:g} held after {a.warmup} warmup steps; {a.seeds} seeds; gain = pretrained - scratch "
             "paired by seed, [95% CI].", "",
             "| task | protocol | tokens | val MLM loss | scratch | pretrained | gain [95% CI] | verdict |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        vl = f"{r['val_mlm_loss']:.3f}" if r["val_mlm_loss"] is not None else "–"
        lines.append(f"| {r['task']} | {r['protocol']} | {r['tokens'] / 1e6:.2f}M | {vl} | {r['scratch_mcc']:.3f} | "
                     f"{r['pretrained_mcc']:.3f} | {fmt_interval(r['paired'])} | {r['paired']['verdict']} |")
    md = "\n".join(lines) + "\n"
    result = {"setup": {**vars(a), "tokens_per_step": tokens_per_step, "cores": os.cpu_count(),
                        "pretrain_seconds_this_invocation": round(t_pre, 1),
                        "eval_seconds_this_invocation": round(time.perf_counter() - t0, 1),
                        "git": subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                                              capture_output=True, text=True).stdout.strip(),
                        "date": time.strftime("%Y-%m-%d")}, "rows": rows}
    atomic_write_json(out / "pretrain_scaling.json", result)
    atomic_write_text(out / "pretrain_scaling.md", md)
    chart(rows, out / "pretrain_scaling.png", f"{a.layers}x{a.hidden} on chr20, {a.seeds} seeds")
    print(md)
    print(f"wrote {out}/pretrain_scaling.{{json,md,png}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

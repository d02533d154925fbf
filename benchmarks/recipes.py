"""More model per FLOP: pretraining recipes compared at equal compute, by the paired probe/fine-tuning protocol.

    python benchmarks/recipes.py                                    # the recorded run (work in runs/recipes)
    python benchmarks/recipes.py --arms reference,modernbert+mask30 # more arms later: finished work is reused
    python benchmarks/recipes.py --confirm modernbert+mask30        # the chosen arm on tasks not used to choose

Every arm pretrains the same 1M-parameter-class shape (4 layers x 128 wide, 128-token rows, 32 rows a step,
LR 1e-3 held after 50 warmup steps: benchmarks/pretrain_scaling.py's setup, whose reference curve gives the
target) on real human chr20 with our engine, changing one recipe knob or a combination of them (ARMS). Budgets
are compute, not steps: --budgets are in reference-recipe steps, and each arm runs as many steps as that
many FLOPs buy it (model.flops_per_token of its own architecture and vocabulary; a tokenizer with more bp per
token sees more genome for the same FLOPs, and the table shows the bp too). Because the LR is held, the
checkpoint at budget k is a fair point for k and a larger budget resumes the run (resumable like
pretrain_scaling.py: pretraining, exports and evaluations already done are reused).

Each budget's export is evaluated against the shared scratch arm of its own shape (the same architecture
and tokenizer with random weights; masking does not change the shape) by probe and fine-tuning on the
selection tasks, 3 paired seeds, gain = pretrained - scratch with a 95% t-interval (tinydnabert.eval.stats).
The headline is the FLOPs each arm needs to reach the probe gain the reference recipe reaches at 16.4M tokens
on gue/prom_core_all (read from pretrain_scaling.json), interpolated in log FLOPs between the budgets that
bracket it; null when no budget reaches it. --confirm ARM then evaluates that arm and the reference at the
largest budget on --confirm-tasks, which no choice looked at.

Writes OUT/recipes.{json,md,png} (benchmarks/results/) and the arms' validation-loss curves; work goes under
--work (runs/recipes, not committed).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

# The same export and evaluation as the budget curve (a script's own folder is on sys.path: run it as a script).
from pretrain_scaling import evaluate, export, save_figure

from tinydnabert.eval.common import run_scores
from tinydnabert.eval.stats import fmt_interval, paired_interval
from tinydnabert.io import atomic_write_json, atomic_write_text, data_dir
from tinydnabert.pretrain import ds_config
from tinydnabert.pretrain.model import ModelConfig, flops_per_token

REPO = Path(__file__).resolve().parents[1]
SELECTION = "gue/prom_core_all,gue/prom_300_tata,gue/mouse_0"
CONFIRMATION = "gue/H3,gue/H3K4me3,gue/splice_reconstructed"  # in ../shared/data; none used for any choice
TARGET = ("gue/prom_core_all", "probe", 4000)  # pretrain_scaling.json's reference point: 16.4M tokens

# Tokenizers: preprocess flags. bpe1024 is the reference (and the quickstart's shards can be passed as --shards).
TOKENIZERS = {"bpe1024": ["--vocab-size", "1024", "--min-frequency", "4"],
              "kmer6": ["--tokenizer-kind", "kmer", "--kmer-k", "6"],
              "char": ["--tokenizer-kind", "char"]}
REFERENCE = {"arch": "roberta", "intermediate": 512, "mlm": 0.15, "tokenizer": "bpe1024"}
# ModernBERT's GeGLU at 2/3 of RoBERTa's width: the same layer parameters (tests/unit/test_model.py).
MODERNBERT = {"arch": "modernbert", "intermediate": 344}
ARMS: dict[str, dict[str, Any]] = {
    "reference": {},
    "modernbert": MODERNBERT,
    "mask30": {"mlm": 0.30},
    "mask40": {"mlm": 0.40},
    "kmer6": {"tokenizer": "kmer6"},
    "char": {"tokenizer": "char"},
    "modernbert+mask30": {**MODERNBERT, "mlm": 0.30},
    "modernbert+mask30+kmer6": {**MODERNBERT, "mlm": 0.30, "tokenizer": "kmer6"},
}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results"), help="where the JSON/MD/PNG go")
    p.add_argument("--work", default=str(REPO / "runs" / "recipes"), help="shards, runs, exports, evaluations")
    p.add_argument("--shards", default="", help="bpe1024 shards of chr20 to reuse (default: preprocess them)")
    p.add_argument("--arms", default="reference,modernbert,mask30,kmer6", help=f"arms, from {', '.join(ARMS)}")
    p.add_argument("--budgets", default="500,1000", help="compute budgets, in reference-recipe steps")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--tasks", default=SELECTION, help="selection tasks (probe)")
    p.add_argument("--finetune-tasks", default="gue/prom_core_all,gue/mouse_0", help=(
        "selection tasks also fine-tuned (prom_300_tata's 300 bp rows cost 66 s a seed here, 4x the others)"))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--ft-steps", type=int, default=300)
    p.add_argument("--ft-batch", type=int, default=32)
    p.add_argument("--ft-lr", type=float, default=5e-4)
    p.add_argument("--max-train", type=int, default=8000)
    p.add_argument("--confirm", default="", help=(
        "evaluate this arm against the reference on --confirm-tasks; 'auto' = the selection's choice: the arm with "
        "the highest mean gain over every selection task and protocol at the largest budget"))
    p.add_argument("--confirm-tasks", default=CONFIRMATION)
    p.add_argument("--threads", type=int, default=2)
    return p.parse_args()


def recipe(name: str) -> dict[str, Any]:
    if name not in ARMS:
        raise SystemExit(f"error: unknown arm {name!r}; choose from {', '.join(ARMS)}")
    return {**REFERENCE, **ARMS[name]}


# What every arm's shards must share with the others (and with pretrain_scaling's): the genome, split and seed.
SHARD_SETTINGS = {"val_fraction": 0.01, "seed": 0, "samples_per_shard": 2048, "min_len": 256, "max_len": 1024}


def shards_for(a: argparse.Namespace, work: Path, tokenizer: str) -> Path:
    if tokenizer == "bpe1024" and a.shards:
        conf = json.loads((Path(a.shards) / "manifest.json").read_text())
        got = {k: conf["config"].get(k) for k in SHARD_SETTINGS}
        fasta = [Path(f).name for f in conf["config"]["fasta"]]
        bpe = (conf["config"].get("vocab_size"), conf["config"].get("min_frequency"))
        if got != SHARD_SETTINGS or fasta != ["grch37_chr20.fa.gz"] or bpe != (1024, 4):
            raise SystemExit(f"error: --shards {a.shards}: made with {got}, {fasta}, BPE {bpe}; the arms need chr20 "
                             f"with {SHARD_SETTINGS} and BPE (1024, 4), like the shards they preprocess here: "
                             "drop --shards to make them")
        return Path(a.shards)
    out = work / f"shards-{tokenizer}"
    if not (out / "manifest.json").is_file():
        subprocess.run(["tinydnabert", "preprocess", "--fasta", str(data_dir() / "genome" / "grch37_chr20.fa.gz"),
                        "--out", str(out), *TOKENIZERS[tokenizer], "--val-fraction", "0.01", "--samples-per-shard",
                        "2048", "--seed", "0", "--min-len", "256", "--max-len", "1024", "--no-progress"], check=True)
    return out


def model_config(a: argparse.Namespace, r: dict[str, Any], vocab: int) -> ModelConfig:
    return ModelConfig(arch=r["arch"], hidden_size=a.hidden, num_hidden_layers=a.layers, num_attention_heads=a.heads,
                       intermediate_size=r["intermediate"], vocab_size=vocab)


def pretrain(a: argparse.Namespace, r: dict[str, Any], shards: Path, run: Path, steps: int) -> float:
    """Pretrain (or resume) to `steps`, ending on a checkpoint. Returns the wall seconds spent now."""
    from tinydnabert.pretrain import checkpoint

    done = checkpoint.latest(run / "checkpoints") if (run / "checkpoints").is_dir() else None
    if done is not None and checkpoint.Marker.read(done).step >= steps:
        return 0.0
    cfg_path = run.parent / f"{run.name}.ds_config.json"
    atomic_write_json(cfg_path, ds_config.derive(ds_config.shipped(ds_config.CPU_CONFIG), batch=a.batch,
                                                 micro=a.batch, lr=a.lr, warmup=a.warmup, constant=True))
    cmd = [sys.executable, str(REPO / "launch" / "pretrain.py"), "--deepspeed_config", str(cfg_path),
           "--data", str(shards), "--out", str(run), "--max-steps", str(steps), "--save-interval", "1000000",
           "--keep-checkpoints", "1000", "--log-interval", "50", "--eval-interval", "100", "--val-batches", "16",
           "--seq-len", str(a.seq_len), "--hidden-size", str(a.hidden), "--num-hidden-layers", str(a.layers),
           "--num-attention-heads", str(a.heads), "--intermediate-size", str(r["intermediate"]),
           "--arch", r["arch"], "--mlm-probability", str(r["mlm"]), "--num-workers", "1", "--no-export",
           *(["--resume"] if done is not None else [])]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": str(a.threads)})
    return time.perf_counter() - t0


def flops_to_target(points: list[tuple[float, float]], target: float) -> float | None:
    """FLOPs at which the gain first reaches `target`: the first budget at or above it, interpolated in log FLOPs
    from the budget before it (a budget below the first is not extrapolated); None if none reaches it."""
    points = sorted(points)
    for i, (f, g) in enumerate(points):
        if g >= target:
            if i == 0:
                return f
            f0, g0 = points[i - 1]
            w = (target - g0) / (g - g0)
            return math.exp(math.log(f0) + w * (math.log(f) - math.log(f0)))
    return None


def protocols(a: argparse.Namespace, task: str) -> tuple[str, ...]:
    return ("probe", "finetune") if task in a.finetune_tasks.split(",") else ("probe",)


def scratch_key(r: dict[str, Any]) -> str:
    return f"{r['arch']}-i{r['intermediate']}-{r['tokenizer']}"


def arm_result(a, name, work, budgets, ref_step_flops, tasks, t_pre) -> tuple[dict[str, Any], dict[int, Path]]:
    """Pretrain one arm to every budget (FLOPs-matched steps), export each, evaluate each against its shape's scratch
    arm: (its recipes.json entry, {budget: export})."""
    from tinydnabert.app.plots import read_scalars

    r = recipe(name)
    shards = shards_for(a, work, r["tokenizer"])
    manifest = json.loads((shards / "manifest.json").read_text())
    vocab = manifest["tokenizer"]["vocab_size"]
    bp_per_token = manifest["splits"]["train"]["bp_per_token"]
    cfg = model_config(a, r, vocab)
    step_flops = flops_per_token(cfg, a.seq_len) * a.batch * a.seq_len
    run = work / "runs" / name
    exports, rows = {}, []
    for b in budgets:
        steps = max(1, round(b * ref_step_flops / step_flops))
        out = work / "exports" / name / f"budget{b:06d}"
        if not (out / "config.json").is_file():
            t_pre[name] = t_pre.get(name, 0.0) + pretrain(a, r, shards, run, steps)
            export(run, steps, out)
        exports[b] = out
        rows.append({"budget": b, "steps": steps, "flops": steps * step_flops, "tokens": steps * a.batch * a.seq_len,
                     "bp": round(steps * a.batch * a.seq_len * bp_per_token)})
    scalars = read_scalars(run) if run.is_dir() else {}
    vs, vl = scalars.get("val/loss", ([], []))
    tps = sorted(scalars.get("perf/tokens_per_sec", ([], []))[1])  # this CPU's speed for the arm (time != FLOPs)
    curve = [{"step": s, "tokens": s * a.batch * a.seq_len, "flops": s * step_flops, "val_loss": v}
             for s, v in zip(vs, vl)]
    for row in rows:
        row["val_loss"] = next((c["val_loss"] for c in curve if c["step"] == row["steps"]), None)
    scratch_dir = work / "eval" / "scratch" / scratch_key(r)
    for row in rows:
        row["gains"] = {}
        for task in tasks:
            for protocol in protocols(a, task):
                key = f"{task}/{protocol}"
                base = task.replace("/", "__") + "__" + protocol
                scratch = evaluate(a, "scratch", exports[budgets[0]], task, protocol, scratch_dir / base)
                pre = evaluate(a, str(exports[row["budget"]]), exports[row["budget"]], task, protocol,
                               work / "eval" / name / f"budget{row['budget']:06d}" / base)
                row["gains"][key] = {"scratch_mcc": scratch["test_mcc_mean"], "pretrained_mcc": pre["test_mcc_mean"],
                                     "pretrained_seeds": run_scores(pre), "scratch_seeds": run_scores(scratch),
                                     "paired": paired_interval(run_scores(pre), run_scores(scratch),
                                                               names=("pretrained", "scratch"))}
    return {"name": name, "recipe": r, "vocab_size": vocab, "bp_per_token": bp_per_token,
            "flops_per_token": flops_per_token(cfg, a.seq_len), "flops_per_bp": flops_per_token(cfg, a.seq_len)
            / bp_per_token, "tokens_per_s_median": tps[len(tps) // 2] if tps else None, "budgets": rows,
            "val_curve": curve,
            "pretrain_seconds_this_invocation": round(t_pre.get(name, 0.0), 1)}, exports


def chart(arms: list[dict[str, Any]], target: dict[str, Any], tasks: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, axes = plt.subplots(2, len(tasks), figsize=(4.6 * len(tasks), 7.5), dpi=120, squeeze=False)
    for col, task in enumerate(tasks):
        for row, protocol in enumerate(("probe", "finetune")):
            ax = axes[row][col]
            if f"{task}/{protocol}" not in arms[0]["budgets"][0]["gains"]:
                ax.axis("off")
                continue
            for i, arm in enumerate(arms):
                pts = [(b["flops"] * (1 + 0.03 * (i - len(arms) / 2)), b["gains"][f"{task}/{protocol}"]["paired"])
                       for b in arm["budgets"]]
                ax.errorbar([f for f, _ in pts], [p["mean_diff"] for _, p in pts],
                            yerr=[[p["mean_diff"] - p["low"] for _, p in pts],
                                  [p["high"] - p["mean_diff"] for _, p in pts]],
                            marker="o", capsize=3, label=arm["name"])
            if (task, protocol) == (target["task"], target["protocol"]):
                ax.axhline(target["gain"], color="grey", ls="--", lw=0.8)
                ax.plot([target["flops"]], [target["gain"]], "k*", ms=10, label="reference at 16.4M tokens")
            ax.axhline(0, color="black", lw=0.7)
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # 1.2x10^13 1.4x10^13 ... overlapped
            ticks = [b["flops"] for b in arms[0]["budgets"]]
            if (task, protocol) == (target["task"], target["protocol"]):
                ticks.append(target["flops"])
            ax.set_xticks(ticks, [f"{t:.2g}" for t in ticks])
            ax.set_title(f"{task} {protocol}", fontsize=9)
            ax.set_xlabel("pretraining FLOPs")
            ax.set_ylabel("test MCC gain over scratch (95% CI)")
            ax.legend(fontsize=6)
    fig.suptitle("Recipes at equal compute (chr20, paired seeds)", fontsize=10)
    save_figure(fig, path)


def main() -> int:
    a = parse_args()
    out, work = Path(a.out), Path(a.work)
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    budgets = sorted(int(b) for b in a.budgets.split(","))
    names = [n.strip() for n in a.arms.split(",") if n.strip()]
    names = ["reference"] + [n for n in names if n != "reference"]  # first: every arm is compared with it
    tasks = [t.strip() for t in a.tasks.split(",") if t.strip()]
    ref_cfg = model_config(a, REFERENCE, 1024)
    ref_step_flops = flops_per_token(ref_cfg, a.seq_len) * a.batch * a.seq_len

    scaling = json.loads((REPO / "benchmarks" / "results" / "pretrain_scaling.json").read_text())
    same_shape = all(scaling["setup"][k] == getattr(a, k) for k in ("batch", "seq_len", "hidden", "layers", "heads"))
    row = next(r for r in scaling["rows"] if (r["task"], r["protocol"], r["steps"]) == TARGET)
    same_protocol = all(scaling["setup"][k] == getattr(a, k) for k in ("lr", "warmup", "seeds", "max_train"))
    target = {"task": TARGET[0], "protocol": TARGET[1], "gain": row["paired"]["mean_diff"],
              "pretrained_mcc": row["pretrained_mcc"], "scratch_mcc": row["scratch_mcc"], "tokens": row["tokens"],
              "flops": TARGET[2] * ref_step_flops, "source": "benchmarks/results/pretrain_scaling.json",
              "same_shape_as_these_arms": same_shape, "same_protocol_as_these_arms": same_protocol}

    # Finished work is reused by arm and budget name: refuse to mix it with work done under other settings.
    setup = {k: getattr(a, k) for k in ("batch", "seq_len", "hidden", "layers", "heads", "lr", "warmup", "seeds",
                                         "ft_steps", "ft_batch", "ft_lr", "max_train")}
    setup_file = work / "setup.json"
    if setup_file.is_file() and json.loads(setup_file.read_text()) != setup:
        raise SystemExit(f"error: {work} holds runs and evaluations made with {setup_file.read_text().strip()}, "
                         f"not {json.dumps(setup)}; pass another --work or the same settings")
    atomic_write_json(setup_file, setup)

    t_pre: dict[str, float] = {}
    t0 = time.perf_counter()
    arms, exports = [], {}
    for name in names:
        result, exports[name] = arm_result(a, name, work, budgets, ref_step_flops, tasks, t_pre)
        pts = [(b["flops"], b["gains"][f"{TARGET[0]}/{TARGET[1]}"]["paired"]["mean_diff"]) for b in result["budgets"]]
        reached = flops_to_target(pts, target["gain"])
        result["flops_to_target"] = reached
        result["flops_to_target_vs_reference"] = reached / target["flops"] if reached else None
        # The same on the pretrained MCC itself: each arm's gain is over a random encoder of its own shape, so an
        # arm whose random encoder probes worse would look better by gain alone.
        mccs = [(b["flops"], b["gains"][f"{TARGET[0]}/{TARGET[1]}"]["pretrained_mcc"]) for b in result["budgets"]]
        reached_mcc = flops_to_target(mccs, target["pretrained_mcc"])
        result["flops_to_target_mcc"] = reached_mcc
        result["flops_to_target_mcc_vs_reference"] = reached_mcc / target["flops"] if reached_mcc else None
        arms.append(result)
    ref = arms[0]
    for arm in arms[1:]:  # each arm minus the reference at the same budget, paired by seed (the same carves)
        for b, rb in zip(arm["budgets"], ref["budgets"]):
            b["vs_reference"] = {k: paired_interval(g["pretrained_seeds"], rb["gains"][k]["pretrained_seeds"],
                                                    names=(arm["name"], "reference")) for k, g in b["gains"].items()}

    # The choice, made on the selection tasks only and by a rule fixed before the confirmation ran.
    keys = [f"{t}/{p}" for t in tasks for p in protocols(a, t)]
    mean_gain = {arm["name"]: sum(arm["budgets"][-1]["gains"][k]["paired"]["mean_diff"] for k in keys) / len(keys)
                 for arm in arms}
    chosen = max((n for n in mean_gain if n != "reference"), key=mean_gain.get, default=None)
    selection = {"rule": "highest mean gain over every selection task and protocol at the largest budget",
                 "budget": budgets[-1], "cells": keys, "mean_gain": mean_gain, "chosen": chosen}
    if a.confirm == "auto":
        a.confirm = chosen or ""
    confirmation = None
    if a.confirm:
        c_tasks = [t.strip() for t in a.confirm_tasks.split(",") if t.strip()]
        confirmation = {"arm": a.confirm, "budget": budgets[-1], "tasks": {}}
        if a.confirm not in exports:
            _, exports[a.confirm] = arm_result(a, a.confirm, work, budgets, ref_step_flops, [], t_pre)
        for task in c_tasks:
            per = {}
            for name in ("reference", a.confirm):
                r = recipe(name)
                base = task.replace("/", "__") + "__probe"
                scratch = evaluate(a, "scratch", exports[name][budgets[0]], task, "probe",
                                   work / "eval" / "scratch" / scratch_key(r) / base)
                pre = evaluate(a, str(exports[name][budgets[-1]]), exports[name][budgets[-1]], task, "probe",
                               work / "eval" / name / f"budget{budgets[-1]:06d}" / base)
                per[name] = (pre, scratch)
            confirmation["tasks"][task] = {
                name: {"pretrained_mcc": p["test_mcc_mean"], "scratch_mcc": s["test_mcc_mean"],
                       "paired": paired_interval(run_scores(p), run_scores(s), names=("pretrained", "scratch"))}
                for name, (p, s) in per.items()}
            confirmation["tasks"][task]["arm_vs_reference"] = paired_interval(
                run_scores(per[a.confirm][0]), run_scores(per["reference"][0]), names=(a.confirm, "reference"))

    cols = [(t, p) for t in tasks for p in protocols(a, t)]
    lines = [f"Recipes at equal compute: {a.layers} layers x {a.hidden} hidden, {a.seq_len}-token rows, batch "
             f"{a.batch}, LR {a.lr:g} held after {a.warmup} warmup steps, chr20; budgets in reference steps "
             f"{budgets}; {a.seeds} paired seeds; gain = pretrained - scratch of the same shape [95% CI].", "",
             f"Target: the reference recipe's {target['task']} {target['protocol']} gain at "
             f"{target['tokens'] / 1e6:.1f}M tokens = {target['gain']:+.3f} ({target['flops']:.3g} FLOPs, "
             f"{target['source']}; its pretrained MCC {target['pretrained_mcc']:.3f} over a random RoBERTa's "
             f"{target['scratch_mcc']:.3f})." + ("" if same_shape and same_protocol else
                                                  " **Not the same shape/protocol as these arms: indicative.**"), "",
             "| arm | budget | FLOPs | steps | Mbp | val loss | " + " | ".join(
                 f"{t.split('/')[1]} {p}" for t, p in cols) + " |",
             "|---|---|---|---|---|---|" + "---|" * len(cols)]
    for arm in arms:
        for b in arm["budgets"]:
            vl = f"{b['val_loss']:.3f}" if b["val_loss"] is not None else "–"
            cells = [fmt_interval(b["gains"][f"{t}/{p}"]["paired"]) for t, p in cols]
            lines.append(f"| {arm['name']} | {b['budget']} | {b['flops']:.3g} | {b['steps']} | {b['bp'] / 1e6:.1f} | "
                         f"{vl} | " + " | ".join(cells) + " |")
    lines += ["", "| arm | FLOPs/token | bp/token | FLOPs/bp | tokens/s here | scratch MCC (target task) | "
              "FLOPs to the target gain | vs the reference's | FLOPs to the target MCC | vs the reference's |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for arm in arms:
        cells = []
        for ft in (arm["flops_to_target"], arm["flops_to_target_mcc"]):
            cells += ["not reached" if ft is None else f"{ft:.3g}",
                      "–" if ft is None else f"{ft / target['flops']:.2f}x"]
        tps = f"{arm['tokens_per_s_median']:,.0f}" if arm["tokens_per_s_median"] else "–"
        scratch = arm["budgets"][0]["gains"][f"{TARGET[0]}/{TARGET[1]}"]["scratch_mcc"]
        lines.append(f"| {arm['name']} | {arm['flops_per_token']:.3g} | {arm['bp_per_token']:.2f} | "
                     f"{arm['flops_per_bp']:.3g} | {tps} | {scratch:.3f} | " + " | ".join(cells) + " |")
    lines += ["", f"Selection ({selection['rule']}): " + ", ".join(
        f"{n} {g:+.3f}" for n, g in sorted(mean_gain.items(), key=lambda x: -x[1])) + f"; chosen: {chosen}."]
    if confirmation:
        lines += ["", f"Confirmation at budget {budgets[-1]} (probe, tasks not used for any choice):", "",
                  f"| task | reference gain | {a.confirm} gain | {a.confirm} - reference |", "|---|---|---|---|"]
        for task, c in confirmation["tasks"].items():
            lines.append(f"| {task} | {fmt_interval(c['reference']['paired'])} | {fmt_interval(c[a.confirm]['paired'])}"
                         f" | {fmt_interval(c['arm_vs_reference'])} |")
    md = "\n".join(lines) + "\n"
    result = {"setup": {**vars(a), "budgets": budgets, "arms": names, "cores": os.cpu_count(),
                        "reference_step_flops": ref_step_flops,
                        "pretrain_seconds_this_invocation": {k: round(v, 1) for k, v in t_pre.items()},
                        "seconds_this_invocation": round(time.perf_counter() - t0, 1),
                        "git": subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                                              capture_output=True, text=True).stdout.strip(),
                        "date": time.strftime("%Y-%m-%d")},
              "target": target, "arms": arms, "selection": selection, "confirmation": confirmation}
    atomic_write_json(out / "recipes.json", result)
    atomic_write_text(out / "recipes.md", md)
    chart(arms, target, tasks, out / "recipes.png")
    print(md)
    print(f"wrote {out}/recipes.{{json,md,png}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

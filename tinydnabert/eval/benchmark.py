"""NT benchmark: fine-tune the pretrained model AND the same architecture from scratch on each task.

    tinydnabert benchmark --model RUN/export --tasks all --out runs/benchmark
    tinydnabert benchmark --model RUN/export --tasks gue/prom_300_tata,gue/H3 \
        --steps 400 --batch-size 32 --warmup-steps 40 --eval-every 100 --seeds 3

For every task: `scratch` (random weights, the pretrained model's config.json and tokenizer) and
`pretrained` runs, each with `tinydnabert.eval.finetune.run_finetune` under the same protocol and seeds,
so the difference is pretraining alone. Runs already finished under OUT/runs/ are reused
(resumable); a task whose data cannot be loaded (e.g. an NT task with the hub unreachable) is
reported as skipped with the reason, and the rest go on.

Writes OUT/nt_benchmark.{json,csv,md,png}: per task Scratch, Ours (test MCC mean ± sd over seeds),
SOTA (and WHICH SOTA), gain over scratch and % of SOTA, and in the JSON the data it was computed on
(`data_provenance`: hub repository, --hub-revision, commit, sha256 per file); summary means, medians and ratios.
SOTA per task group:
  nt_revised  -> reference_sota_mcc: best model in the NT paper, per the TinyDNABERT reference's result.csv
  nt_original -> nt_ms_2_5b_mcc: NT Multispecies 2.5B (10-fold CV mean)
  local tasks -> the figure of the NT task of the same kind, on OTHER data: indicative only (marked *)
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import statistics
import time
from pathlib import Path
from typing import Any

from tinydnabert.errors import InputError
from tinydnabert.eval.finetune import RESULTS, FinetuneConfig, run_finetune
from tinydnabert.eval.probe import ProbeConfig, run_probe
from tinydnabert.eval.stats import fmt_interval, paired_interval
from tinydnabert.eval.tasks import Task, load_task_data, resolve_tasks
from tinydnabert.eval.tasks.registry import GUE_DIR
from tinydnabert.io import OutputLock, atomic_write_json, atomic_write_text

KINDS = ("scratch", "pretrained")
PROTOCOLS = ("finetune", "probe")
# Settings that must match for a finished run to be reused.
# The model too: a run of another --model under the same --out must not be reused as this model's result.
# The data revision too: runs on two versions of a task are not one benchmark.
PROTOCOL_KEYS = ("model", "scratch_from", "steps", "batch_size", "lr", "warmup_steps", "weight_decay", "eval_every",
                 "seed", "seeds", "val_fraction", "validation", "max_train_samples", "max_length", "hub_revision")


def sota_for(task: Task) -> tuple[float | None, str]:
    """(value, label) of the SOTA column for a task."""
    pub, src = task.published, task.published_for or ""
    if not pub:
        return None, "none published"
    if src.startswith("nt_revised/") and "reference_sota_mcc" in pub:
        value, label = pub["reference_sota_mcc"], f"best in NT paper ({src}, reference result.csv)"
    else:
        value, label = pub.get("nt_ms_2_5b_mcc"), f"NT-MS 2.5B ({src})"
    if not task.comparable:
        label += ", other data: indicative only"
    return value, label


PROBE_KEYS = ("model", "scratch_from", "seed", "seeds", "val_fraction", "validation", "max_train_samples",
              "max_length", "pooling", "layer", "c_grid")


def run_dir(out: Path, task: Task, kind: str, protocol: str = "finetune") -> Path:
    return out / "runs" / task.name.replace("/", "__") / (kind if protocol == "finetune" else f"{protocol}-{kind}")


def task_data_path(args: argparse.Namespace, task: Task) -> str | None:
    """Where a task's files are read from: a GUE task under --data GUE_ROOT (GUE's own layout), else the
    registry's own place (None)."""
    if getattr(args, "data", None) and task.benchmark == "gue" and task.local_path:
        return str(Path(args.data) / task.local_path.removeprefix(f"{GUE_DIR}/"))
    return None


def run_or_reuse(args: argparse.Namespace, task: Task, kind: str, out: Path, protocol: str = "finetune"):
    """The results of one arm under one protocol: a finished run with the same settings, or a new one."""
    if protocol == "probe":
        return probe_or_reuse(args, task, kind, out)
    d = run_dir(out, task, kind)
    cfg = FinetuneConfig(
        model="scratch" if kind == "scratch" else args.model, scratch_from=args.model if kind == "scratch" else None,
        task=task.name, out=str(d), data=task_data_path(args, task), seed=args.seed, seeds=args.seeds,
        steps=args.steps, batch_size=args.batch_size,
        lr=args.lr, warmup_steps=args.warmup_steps, eval_every=args.eval_every, log_every=args.log_every,
        max_train_samples=args.max_train_samples, device=args.device, cache_dir=args.cache_dir,
        hub_revision=args.hub_revision, overwrite=True)
    done = finished(d, "finetune", PROTOCOL_KEYS, cfg, f"{task.name} {kind}")
    return done if done is not None else run_finetune(cfg)


def probe_or_reuse(args: argparse.Namespace, task: Task, kind: str, out: Path) -> dict[str, Any]:
    d = run_dir(out, task, kind, "probe")
    cfg = ProbeConfig(model="scratch" if kind == "scratch" else args.model,
                      scratch_from=args.model if kind == "scratch" else None, task=task.name, out=str(d),
                      data=task_data_path(args, task),
                      seed=args.seed, seeds=args.seeds, max_train_samples=args.max_train_samples,
                      c_grid=args.probe_c_grid, device=args.device, cache_dir=args.cache_dir, overwrite=True)
    done = finished(d, "probe", PROBE_KEYS, cfg, f"{task.name} probe {kind}")
    return done if done is not None else run_probe(cfg)


def finished(d: Path, section: str, keys: tuple[str, ...], cfg: Any, label: str) -> dict[str, Any] | None:
    """The results of a run already finished in `d` under the same settings (`keys` of its config), None if
    there is none; a run finished under other settings is an error, so one table never mixes protocols."""
    if not (d / RESULTS).is_file():
        print(f"[run ] {label} -> {d}", flush=True)
        return None
    done = json.loads((d / "config.json").read_text())[section]
    # a run saved before a key existed ran with its default (hub_revision: earlier runs read "main")
    fields = type(cfg).__dataclass_fields__
    saved = {k: done[k] if k in done else fields[k].default for k in keys}
    diff = {k: (saved[k], getattr(cfg, k)) for k in keys if saved[k] != getattr(cfg, k)}
    if diff:
        raise InputError(f"{d}: finished under other settings {diff} (saved, asked); use another --out "
                         f"or delete that run directory")
    print(f"[skip] {label}: already done ({d / RESULTS})", flush=True)
    return json.loads((d / RESULTS).read_text())


def compare(row: dict[str, Any], s: dict[str, Any], o: dict[str, Any], sota: float | None) -> dict[str, Any]:
    """The table row of one task under one protocol: both arms, their paired difference by seed."""
    scratch_seeds, ours_seeds = [r["test_mcc"] for r in s["seeds"]], [r["test_mcc"] for r in o["seeds"]]
    paired = paired_interval(ours_seeds, scratch_seeds)
    return {**row, "status": "done",
            "scratch_mcc": s["test_mcc_mean"], "scratch_sd": s["test_mcc_sd"],
            "ours_mcc": o["test_mcc_mean"], "ours_sd": o["test_mcc_sd"],
            "scratch_seeds": scratch_seeds, "ours_seeds": ours_seeds,
            "gain_over_scratch": o["test_mcc_mean"] - s["test_mcc_mean"],
            "gain_low": paired["low"], "gain_high": paired["high"], "verdict": paired["verdict"], "paired": paired,
            "pct_of_sota": 100.0 * o["test_mcc_mean"] / sota if sota else None,
            "labels": o["labels"], "counts": o["counts"], "max_length": o.get("max_length")}


def fmt(mean: float | None, sd: float | None = None) -> str:
    if mean is None:
        return "–"
    return f"{mean:.3f}" + (f" ± {sd:.3f}" if sd else "")


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per protocol: means, the median gain, and which tasks fall under which paired verdict."""
    return {p: _summarize([r for r in rows if r.get("protocol", "finetune") == p]) for p in PROTOCOLS
            if any(r.get("protocol", "finetune") == p for r in rows)}


def verdict_sentence(summary: dict[str, Any], seeds: int) -> str:
    """The one honest sentence the table ends with."""
    parts = []
    for protocol, s in summary.items():
        if not s.get("tasks_done"):
            continue
        v = s["verdicts"]
        said = [f"ahead on {', '.join(v['pretrained ahead'])}" if v["pretrained ahead"] else "ahead nowhere"]
        if v["no detectable difference"]:
            said.append(f"not told apart from scratch on {', '.join(v['no detectable difference'])}")
        if v["scratch ahead"]:
            said.append(f"behind scratch on {', '.join(v['scratch ahead'])}")
        parts.append(f"{protocol}: pretrained {'; '.join(said)}")
    if not parts:
        return "No task finished, so nothing can be said about pretraining."
    return ("With paired 95% intervals over " + f"{seeds} seed(s) — " + " | ".join(parts) + "."
            + ("" if seeds >= 3 else " (Fewer than 3 seeds: the intervals are wide or undefined.)"))


def _summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    done = [r for r in rows if r["status"] == "done"]
    if not done:
        return {"tasks_done": 0}
    scratch = [r["scratch_mcc"] for r in done]
    ours = [r["ours_mcc"] for r in done]
    gains = [r["gain_over_scratch"] for r in done]
    s: dict[str, Any] = {
        "tasks_done": len(done),
        "tasks_skipped": len(rows) - len(done),
        "mean_scratch_mcc": statistics.fmean(scratch),
        "mean_ours_mcc": statistics.fmean(ours),
        "median_gain_over_scratch": statistics.median(gains),
        "tasks_where_pretraining_helps": sum(g > 0 for g in gains),
        "verdicts": {v: [r["task"] for r in done if r["verdict"] == v]
                     for v in ("pretrained ahead", "no detectable difference", "scratch ahead")},
    }
    m_s = s["mean_scratch_mcc"]
    s["ours_over_scratch_ratio"] = s["mean_ours_mcc"] / m_s if m_s > 0 else None
    with_sota = [r for r in done if r["sota_mcc"]]
    if with_sota:
        s["mean_pct_of_sota"] = statistics.fmean(r["pct_of_sota"] for r in with_sota)
    return s


def markdown(rows: list[dict[str, Any]], summary: dict[str, Any], meta: dict[str, Any]) -> str:
    protocols = ", ".join(meta["protocols"])
    lines = [
        f"Benchmark: `{meta['model']}`; {protocols}; fine-tuning {meta['steps']} steps × batch {meta['batch_size']}; "
        f"{meta['seeds']} seed(s), test MCC mean ± sd over seeds; gain = pretrained − scratch paired by seed, "
        f"[95% interval]; device {meta['device']}.",
        "",
        "| Task | Protocol | Scratch | Ours | gain [95% CI] | verdict | SOTA | % of SOTA | SOTA is |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        proto = r.get("protocol", "finetune")
        if r["status"] != "done":
            lines.append(f"| {r['task']} | {proto} | – | – | – | – | {fmt(r['sota_mcc'])} | – | "
                         f"{r['status']}: {r['reason'][:80]} |")
            continue
        mark = "" if r["sota_comparable"] else "*"
        pct = f"{r['pct_of_sota']:.1f}%{mark}" if r["pct_of_sota"] is not None else "–"
        lines.append(f"| {r['task']} | {proto} | {fmt(r['scratch_mcc'], r['scratch_sd'])} | "
                     f"{fmt(r['ours_mcc'], r['ours_sd'])} | {fmt_interval(r['paired'])} | {r['verdict']} | "
                     f"{fmt(r['sota_mcc'])}{mark} | {pct} | {r['sota_source']} |")
    for protocol, s in summary.items():
        if not s.get("tasks_done"):
            continue
        ratio = s.get("ours_over_scratch_ratio")
        lines += ["", f"{protocol}: mean over {s['tasks_done']} task(s): scratch {s['mean_scratch_mcc']:.3f}, "
                      f"ours {s['mean_ours_mcc']:.3f}"
                      + (f" ({(ratio - 1) * 100:+.1f}% over scratch)" if ratio else "")
                      + f"; median gain {s['median_gain_over_scratch']:+.3f} MCC; pretraining helps on "
                      f"{s['tasks_where_pretraining_helps']}/{s['tasks_done']}"
                      + (f"; {s['mean_pct_of_sota']:.1f}% of SOTA on average" if "mean_pct_of_sota" in s else "")
                      + "."]
    lines += ["", verdict_sentence(summary, meta["seeds"])]
    if any(not r["sota_comparable"] for r in rows):
        lines += ["", "\\* SOTA measured on a different dataset of the same kind of task (the NT version); "
                      "indicative only, not a like-for-like comparison."]
    return "\n".join(lines) + "\n"


def chart(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in rows if r["status"] == "done"]
    if not done:
        return
    fig, ax = plt.subplots(figsize=(max(5.0, 1.8 * len(done) + 2), 4.6), dpi=120)
    x = list(range(len(done)))
    names = [r["task"] + ("" if r.get("protocol", "finetune") == "finetune" else f" ({r['protocol']})") for r in done]
    w = 0.27
    bars = [
        ("Scratch", -w, [r["scratch_mcc"] for r in done], [r["scratch_sd"] for r in done],
         dict(color="#9e9e9e")),
        ("Ours (pretrained)", 0.0, [r["ours_mcc"] for r in done], [r["ours_sd"] for r in done],
         dict(color="#1f77b4")),
        # a task with no published figure (e.g. gue/mouse_0) gets no bar and an "n/a" label, not a 0.00 bar
        ("SOTA (hatched: other data)", w, [r["sota_mcc"] for r in done], None,
         dict(color="white", edgecolor="#d62728")),
    ]
    for label, dx, values, err, style in bars:
        heights = [0.0 if v is None else v for v in values]
        rects = ax.bar([i + dx for i in x], heights, w, yerr=err, capsize=3, label=label, **style)
        for rect, v, e in zip(rects, values, err or [0.0] * len(values)):
            if v is None:
                rect.set_visible(False)
            # above the error bar, so the number and the whisker do not overlap
            ax.annotate("n/a" if v is None else f"{v:.2f}",
                        (rect.get_x() + rect.get_width() / 2, max(v or 0.0, 0.0) + (e or 0.0)), xytext=(0, 3),
                        textcoords="offset points", ha="center", fontsize=7)
        if dx == w:
            for rect, r in zip(rects, done):
                if not r["sota_comparable"]:
                    rect.set_hatch("//")
    ax.set_xticks(x, names, rotation=15, ha="right", fontsize=8)
    ax.set_ylabel("test MCC (mean ± sd over seeds)")
    lo = min(0.0, *(r["scratch_mcc"] for r in done), *(r["ours_mcc"] for r in done))
    ax.set_ylim(lo - 0.05 if lo < 0 else 0.0, 1.08)
    ax.axhline(0, color="black", lw=0.6)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=3, frameon=False)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)


def run(args: argparse.Namespace) -> dict[str, Any]:
    if not Path(args.model).exists():
        raise InputError(f"{args.model}: model not found; pass the pretrained export directory (RUN/export)")
    asked = [k.strip() for k in args.kinds.split(",") if k.strip()]
    if not asked or set(asked) - set(KINDS):
        raise InputError(f"--kinds {args.kinds!r}: use scratch,pretrained or one of them")
    protocols = list(PROTOCOLS) if args.protocol == "both" else [args.protocol]
    tasks = resolve_tasks(args.tasks)
    out = Path(args.out)
    rows: list[dict[str, Any]] = []
    device = "?"
    hub_error = ""
    t0 = time.perf_counter()
    for task in tasks:
        sota, sota_src = sota_for(task)
        row: dict[str, Any] = {"task": task.name, "benchmark": task.benchmark, "sota_mcc": sota,
                               "sota_source": sota_src, "sota_comparable": task.comparable}
        kinds = [k for k in KINDS if k in asked]
        if not all((run_dir(out, task, k, p) / RESULTS).is_file() for k in kinds for p in protocols):
            try:  # data that cannot be had here (hub unreachable) skips the task, not the benchmark
                if hub_error and task.hub_id and not task.local_path:
                    raise InputError(f"skipped without retrying: {hub_error}")
                load_task_data(task, task_data_path(args, task), cache_dir=args.cache_dir, revision=args.hub_revision)
            except InputError as e:
                if "Hugging Face hub" in str(e) and not hub_error:
                    hub_error = str(e)  # one unreachable hub is enough: don't wait on retries 36 times
                print(f"[skip] {task.name}: {e}", flush=True)
                rows.append({**row, "status": "skipped", "reason": str(e)})
                continue
        for protocol in protocols:
            res = {kind: run_or_reuse(args, task, kind, out, protocol) for kind in kinds}
            prow = {**row, "protocol": protocol}
            if len(res) < len(KINDS):  # --kinds scratch: runs made now, the table when both exist
                rows.append({**prow, "status": "partial", "reason": f"only {','.join(res)} run (--kinds)"})
                continue
            device = res["pretrained"]["device"]
            s, o = res["scratch"], res["pretrained"]
            if s.get("data_provenance", {}).get("files") != o.get("data_provenance", {}).get("files"):
                # e.g. the hub's main moved between the two runs: the gain would compare two datasets
                raise InputError(f"{run_dir(out, task, 'scratch').parent}: the scratch and pretrained runs read "
                                 f"different data ({s.get('data_provenance')} vs {o.get('data_provenance')}); delete "
                                 "one run directory and rerun, with --hub-revision COMMIT to pin the data")
            rows.append({**compare(prow, s, o, sota),
                         "reference": {k: v for k, v in task.published.items() if k.startswith("reference_")},
                         "data_provenance": o.get("data_provenance", {}),  # repo, revision, commit, sha256 per file
                         "runs": {k: str(run_dir(out, task, k, protocol)) for k in KINDS}})
    summary = summarize(rows)
    meta = {"model": str(args.model), "tasks": args.tasks, "steps": args.steps, "batch_size": args.batch_size,
            "warmup_steps": args.warmup_steps, "lr": args.lr, "seeds": args.seeds, "seed": args.seed,
            "eval_every": args.eval_every, "max_train_samples": args.max_train_samples, "device": device,
            "hub_revision": args.hub_revision, "protocols": protocols, "probe_c_grid": args.probe_c_grid,
            "wall_seconds_this_invocation": round(time.perf_counter() - t0, 1),
            "sota_columns": {"nt_revised": "reference_sota_mcc (best in NT paper, reference result.csv)",
                             "nt_original": "nt_ms_2_5b_mcc (NT Multispecies 2.5B)",
                             "local": "the NT task of the same kind, on other data (indicative only)"}}
    result = {"meta": meta, "summary": summary, "tasks": rows}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "nt_benchmark.json", result)
    buf = io.StringIO()
    cols = ["task", "protocol", "benchmark", "status", "scratch_mcc", "scratch_sd", "ours_mcc", "ours_sd", "sota_mcc",
            "sota_source", "sota_comparable", "gain_over_scratch", "gain_low", "gain_high", "verdict", "pct_of_sota"]
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(out / "nt_benchmark.csv", buf.getvalue())
    md = markdown(rows, summary, meta)
    atomic_write_text(out / "nt_benchmark.md", md)
    chart(rows, out / "nt_benchmark.png",
          f"{'/'.join(Path(args.model).resolve().parts[-2:])}: test MCC, {args.steps} steps x {args.batch_size}, "
          f"lr {args.lr:g}, {args.seeds} seed(s)")
    print(md, flush=True)
    print(f"wrote {out}/nt_benchmark.{{json,csv,md,png}}", flush=True)
    return result


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="pretrained HF export directory (its config.json + tokenizer "
                                                  "also define the scratch model)")
    p.add_argument("--tasks", default="all", help="all, nt_revised, nt_original, local (the shipped real tasks), gue "
                                                  "(DNABERT-2's 28), or a comma-separated list (default: all)")
    p.add_argument("--data", default=None, metavar="GUE_ROOT",
                   help="a local copy of GUE in its own layout (EMP/H3/train.csv, prom/prom_300_tata/..., tf/0/...): "
                        "gue/ tasks are read from there (default: the 6 in the shared data)")
    p.add_argument("--out", default="runs/benchmark", help="output directory (default: runs/benchmark)")
    d = FinetuneConfig.__dataclass_fields__
    for name in ("steps", "batch_size", "lr", "warmup_steps", "eval_every", "seeds", "seed", "max_train_samples",
                 "log_every"):
        f = d[name]
        p.add_argument("--" + name.replace("_", "-"), type=type(f.default), default=f.default,
                       help=f"{f.metadata['help']} (default: {f.default})")
    p.add_argument("--kinds", default="scratch,pretrained",
                   help="which runs to make: scratch,pretrained (default) or one of them; scratch needs only the "
                        "model's config.json and tokenizer, so it can run while pretraining goes on")
    p.add_argument("--protocol", default="finetune", choices=["finetune", "probe", "both"],
                   help="finetune: the whole model trained per task (the NT protocol); probe: a frozen encoder + "
                        "logistic regression (minutes per task on a CPU); both (default: finetune)")
    p.add_argument("--probe-c-grid", default=ProbeConfig.__dataclass_fields__["c_grid"].default,
                   help="probe: inverse L2 strengths tried, the best on validation MCC kept")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--cache-dir", default=None, help=d["cache_dir"].metadata["help"])
    p.add_argument("--hub-revision", default="main", help=d["hub_revision"].metadata["help"] + " (default: main)")


def main(args: argparse.Namespace) -> int:
    with OutputLock(Path(args.out), "--out"):  # a second benchmark into --out would redo and rewrite its runs
        run(args)
    return 0

"""The benchmark's report: one table row per task and protocol from the two arms' results, the summary,
the verdict sentence, and the files OUT/nt_benchmark.{json,csv,md,png}.

SOTA per task group (the SOTA column):
  nt_revised  -> reference_sota_mcc: best model in the NT paper, per the TinyDNABERT reference's result.csv
  nt_original -> nt_ms_2_5b_mcc: NT Multispecies 2.5B (10-fold CV mean)
  local tasks -> the figure of the NT task of the same kind, on OTHER data: indicative only (marked *)
Every published NT figure is a mean over the NT paper's 10-fold cross-validation, so a row is like for like
(`sota_comparable`) only when it was measured the same way: protocol nt-cv on the NT task itself. Rows of the
other protocols (finetune: seeds and a carved validation split; probe) keep the figure, marked * (indicative).
"""

from __future__ import annotations

import csv
import io
import statistics
from pathlib import Path
from typing import Any

from tinydnabert.eval.common import TABLE_PROTOCOLS, run_scores
from tinydnabert.eval.stats import fmt_interval, paired_interval
from tinydnabert.eval.tasks import Task
from tinydnabert.io import atomic_write_json, atomic_write_text

CSV_COLUMNS = ["task", "protocol", "benchmark", "status", "scratch_mcc", "scratch_sd", "ours_mcc", "ours_sd",
               "sota_mcc", "sota_source", "sota_comparable", "gain_over_scratch", "gain_low", "gain_high", "verdict",
               "pct_of_sota"]
SOTA_COLUMNS = {"nt_revised": "reference_sota_mcc (best in NT paper, reference result.csv)",
                "nt_original": "nt_ms_2_5b_mcc (NT Multispecies 2.5B)",
                "local": "the NT task of the same kind, on other data (indicative only)"}
# The protocol the published figures were measured by, and ours that matches it. Both columns come from the NT
# paper (Dalla-Torre et al., Nature Methods 2024), whose figures are "mean MCC ± 2 × s.d. from the tenfold
# cross-validation procedure" (Fig. 2 caption).
SOTA_PROTOCOL = "nt-cv"
CV10_COLUMNS = ("reference_sota_mcc", "nt_ms_2_5b_mcc")


def sota_for(task: Task, protocol: str = SOTA_PROTOCOL) -> tuple[float | None, str, bool]:
    """(value, label, comparable) of the SOTA column for a task measured under `protocol`: comparable only for
    the task's own data (not a local stand-in) measured the way the figure was (nt-cv: 10-fold CV)."""
    pub, src = task.published, task.published_for or ""
    if not pub:
        return None, "none published", False
    if src.startswith("nt_revised/") and "reference_sota_mcc" in pub:
        column, label = "reference_sota_mcc", f"best in NT paper ({src}, reference result.csv)"
    else:
        column, label = "nt_ms_2_5b_mcc", f"NT-MS 2.5B ({src})"
    comparable = task.comparable and column in CV10_COLUMNS and protocol == SOTA_PROTOCOL
    if not task.comparable:
        label += ", other data: indicative only"
    elif not comparable:
        label += f", 10-fold CV vs {protocol}: indicative only"
    return pub.get(column), label, comparable


def task_row(task: Task) -> dict[str, Any]:
    """What a task's row says before any run: its name, group and SOTA figure (comparable as nt-cv would be)."""
    sota, sota_src, comparable = sota_for(task)
    return {"task": task.name, "benchmark": task.benchmark, "sota_mcc": sota, "sota_source": sota_src,
            "sota_comparable": comparable}


def compare(row: dict[str, Any], s: dict[str, Any], o: dict[str, Any], task: Task) -> dict[str, Any]:
    """The table row of one task under one protocol (row["protocol"]): both arms, their paired difference by
    run id (seed, or fold under nt-cv), and the SOTA figure as this protocol may compare with it."""
    protocol = row.get("protocol", "finetune")
    sota, sota_src, comparable = sota_for(task, protocol)
    scratch_runs, ours_runs = run_scores(s), run_scores(o)
    paired = paired_interval(ours_runs, scratch_runs, names=("pretrained", "scratch"))
    return {**row, "status": "done", "sota_mcc": sota, "sota_source": sota_src, "sota_comparable": comparable,
            "pairs_by": "fold" if protocol == "nt-cv" else "seed",
            "scratch_mcc": s["test_mcc_mean"], "scratch_sd": s["test_mcc_sd"],
            "ours_mcc": o["test_mcc_mean"], "ours_sd": o["test_mcc_sd"],
            "scratch_seeds": [scratch_runs[i] for i in sorted(scratch_runs)],  # both in one id order
            "ours_seeds": [ours_runs[i] for i in sorted(scratch_runs)],
            "scratch_runs": scratch_runs, "ours_runs": ours_runs,
            "gain_over_scratch": o["test_mcc_mean"] - s["test_mcc_mean"],
            "gain_low": paired["low"], "gain_high": paired["high"], "verdict": paired["verdict"], "paired": paired,
            "pct_of_sota": 100.0 * o["test_mcc_mean"] / sota if sota else None,
            "labels": o["labels"], "counts": o["counts"], "max_length": o.get("max_length"),
            **({"cv": {k: o["cv"][k] for k in ("folds", "assignment_seed", "stratified", "rows", "rows_sha256")}}
               if "cv" in o else {})}


def fmt(mean: float | None, sd: float | None = None) -> str:
    if mean is None:
        return "–"
    return f"{mean:.3f}" + (f" ± {sd:.3f}" if sd else "")


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per protocol: means, the median gain, and which tasks fall under which paired verdict."""
    return {p: _summarize([r for r in rows if r.get("protocol", "finetune") == p]) for p in TABLE_PROTOCOLS
            if any(r.get("protocol", "finetune") == p for r in rows)}


def verdict_sentence(summary: dict[str, Any], seeds: int, folds: int | None = None) -> str:
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
        name = f"{protocol} (paired by fold, {folds} folds)" if protocol == "nt-cv" else protocol
        parts.append(f"{name}: pretrained {'; '.join(said)}")
    if not parts:
        return "No task finished, so nothing can be said about pretraining."
    done = [p for p, s in summary.items() if s.get("tasks_done")]
    by_seed = [p for p in done if p != "nt-cv"]
    over = " / ".join(([f"{seeds} seed(s)"] if by_seed else []) + ([f"{folds} folds"] if "nt-cv" in done else []))
    return (f"With paired 95% intervals over {over} — " + " | ".join(parts) + "."
            + ("" if seeds >= 3 or not by_seed else " (Fewer than 3 seeds: the intervals are wide or undefined.)"))


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
    if with_sota:  # every row with a figure, indicative ones included: named so in the JSON too
        s["mean_pct_of_sota_indicative"] = statistics.fmean(r["pct_of_sota"] for r in with_sota)
    like = [r for r in with_sota if r["sota_comparable"]]
    if like:  # only the rows measured the way the published figure was (nt-cv on the NT task itself)
        s["mean_pct_of_sota_comparable"] = statistics.fmean(r["pct_of_sota"] for r in like)
    return s


def markdown(rows: list[dict[str, Any]], summary: dict[str, Any], meta: dict[str, Any]) -> str:
    protocols = ", ".join(meta["protocols"])
    seen = any("seen_kmer_pct" in r for r in rows)  # benchmark --pretraining-shards
    if "nt-cv" in meta["protocols"]:
        how = (f"{meta['folds']}-fold cross-validation of the training split, each fold's model scored on the test "
               "split; test MCC mean ± 2 sd over folds (the NT paper's protocol and spread); gain = pretrained − "
               "scratch paired by fold")
    else:
        how = f"{meta['seeds']} seed(s), test MCC mean ± sd over seeds; gain = pretrained − scratch paired by seed"
    lines = [
        f"Benchmark: `{meta['model']}`; {protocols}; fine-tuning {meta['steps']} steps × batch {meta['batch_size']}; "
        f"{how}, [95% interval]; device {meta['device']}.",
        "",
        "| Task | Protocol | Scratch | Ours | gain [95% CI] | verdict | SOTA | % of SOTA | SOTA is |"
        + (" seen in pretraining |" if seen else ""),
        "|---|---|---|---|---|---|---|---|---|" + ("---|" if seen else ""),
    ]
    for r in rows:
        proto = r.get("protocol", "finetune")
        if r["status"] != "done":
            lines.append(f"| {r['task']} | {proto} | – | – | – | – | {fmt(r['sota_mcc'])} | – | "
                         f"{r['status']}: {r['reason'][:80]} |" + (" – |" if seen else ""))
            continue
        mark = "" if r["sota_comparable"] else "*"
        pct = f"{r['pct_of_sota']:.1f}%{mark}" if r["pct_of_sota"] is not None else "–"
        k = 2 if proto == "nt-cv" else 1  # the NT paper prints mean ± 2 s.d. over its folds
        lines.append(f"| {r['task']} | {proto} | {fmt(r['scratch_mcc'], k * r['scratch_sd'])} | "
                     f"{fmt(r['ours_mcc'], k * r['ours_sd'])} | {fmt_interval(r['paired'])} | {r['verdict']} | "
                     f"{fmt(r['sota_mcc'])}{mark} | {pct} | {r['sota_source']} |"
                     + (f" {seen_cell(r)} |" if seen else ""))
    for protocol, s in summary.items():
        if not s.get("tasks_done"):
            continue
        ratio = s.get("ours_over_scratch_ratio")
        lines += ["", f"{protocol}: mean over {s['tasks_done']} task(s): scratch {s['mean_scratch_mcc']:.3f}, "
                      f"ours {s['mean_ours_mcc']:.3f}"
                      + (f" ({(ratio - 1) * 100:+.1f}% over scratch)" if ratio else "")
                      + f"; median gain {s['median_gain_over_scratch']:+.3f} MCC; pretraining helps on "
                      f"{s['tasks_where_pretraining_helps']}/{s['tasks_done']}"
                      + (f"; {s['mean_pct_of_sota_comparable']:.1f}% of SOTA on average (like for like)"
                         if "mean_pct_of_sota_comparable" in s else
                         f"; {s['mean_pct_of_sota_indicative']:.1f}% of SOTA* on average (indicative)"
                         if "mean_pct_of_sota_indicative" in s else "")
                      + "."]
    lines += ["", verdict_sentence(summary, meta["seeds"], meta.get("folds"))]
    if seen:
        lines += ["", f"Seen in pretraining: the share of the task's test rows that share a 32-mer (either strand) "
                      f"with the pretraining's train shards (`{meta.get('pretraining_shards')}`), and in brackets the "
                      "share held there whole (overlap.json lists the rows). A gain on rows the pretraining read "
                      "may be memory rather than transfer; `preprocess --exclude-from TASK` pretrains without them."]
    if any(not r["sota_comparable"] for r in rows):
        lines += ["", "\\* indicative only, not a like-for-like comparison: the SOTA figure was measured on a "
                      "different dataset of the same kind of task (the NT version), or by another protocol (the NT "
                      "paper's 10-fold cross-validation: only `--protocol nt-cv` rows of NT tasks are measured "
                      "that way)."]
    return "\n".join(lines) + "\n"


def seen_cell(r: dict[str, Any]) -> str:
    """'2.5% (1.4% whole)' of a row with the benchmark's overlap columns, '–' without."""
    k, w = r.get("seen_kmer_pct"), r.get("seen_whole_pct")
    if k is None:
        return "–"
    return f"{k:.1f}%" + (f" ({w:.1f}% whole)" if w is not None else "")


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
        ("SOTA (hatched: indicative only)", w, [r["sota_mcc"] for r in done], None,
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
    ax.set_ylabel("test MCC (mean ± sd over seeds / folds)")
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


def write_report(out: Path, result: dict[str, Any], title: str) -> str:
    """OUT/nt_benchmark.{json,csv,md,png} of a benchmark's result ({meta, summary, tasks}). -> the markdown."""
    rows = result["tasks"]
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "nt_benchmark.json", result)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(out / "nt_benchmark.csv", buf.getvalue())
    md = markdown(rows, result["summary"], result["meta"])
    atomic_write_text(out / "nt_benchmark.md", md)
    chart(rows, out / "nt_benchmark.png", title)
    return md

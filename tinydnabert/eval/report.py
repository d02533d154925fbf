"""The benchmark's report: one table row per task and protocol from the two arms' results, the summary,
the verdict sentence, and the files OUT/nt_benchmark.{json,csv,md,png}.

SOTA per task group (the SOTA column):
  nt_revised  -> reference_sota_mcc: best model in the NT paper, per the TinyDNABERT reference's result.csv
  nt_original -> nt_ms_2_5b_mcc: NT Multispecies 2.5B (10-fold CV mean)
  local tasks -> the figure of the NT task of the same kind, on OTHER data: indicative only (marked *)
"""

from __future__ import annotations

import csv
import io
import statistics
from pathlib import Path
from typing import Any

from tinydnabert.eval.common import PROTOCOLS
from tinydnabert.eval.stats import fmt_interval, paired_interval
from tinydnabert.eval.tasks import Task
from tinydnabert.io import atomic_write_json, atomic_write_text

CSV_COLUMNS = ["task", "protocol", "benchmark", "status", "scratch_mcc", "scratch_sd", "ours_mcc", "ours_sd",
               "sota_mcc", "sota_source", "sota_comparable", "gain_over_scratch", "gain_low", "gain_high", "verdict",
               "pct_of_sota"]
SOTA_COLUMNS = {"nt_revised": "reference_sota_mcc (best in NT paper, reference result.csv)",
                "nt_original": "nt_ms_2_5b_mcc (NT Multispecies 2.5B)",
                "local": "the NT task of the same kind, on other data (indicative only)"}


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


def task_row(task: Task) -> dict[str, Any]:
    """What a task's row says before any run: its name, group and SOTA figure."""
    sota, sota_src = sota_for(task)
    return {"task": task.name, "benchmark": task.benchmark, "sota_mcc": sota, "sota_source": sota_src,
            "sota_comparable": task.comparable}


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

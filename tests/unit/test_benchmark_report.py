"""The benchmark table says which protocol made each number, and compares with the published SOTA like for like only
where the number was measured the way the figure was: protocol nt-cv (the NT paper's 10-fold cross-validation) on
the NT task itself. Fast: no model, no data read (the results are written here)."""

from __future__ import annotations

import pytest

from tinydnabert.eval import report
from tinydnabert.eval.tasks import get_task


def _results(mccs: dict[str, float], sd: float = 0.02) -> dict:
    """A results.json as finetune writes it: one entry per seed, or per fold under --cv."""
    entries = [{"fold": int(k.split()[1]), "seed": int(k.split()[1])} if k.startswith("fold") else
               {"seed": int(k.split()[1])} for k in mccs]
    for e, m in zip(entries, mccs.values()):
        e["test_mcc"] = m
    mean = sum(mccs.values()) / len(mccs)
    return {"seeds": entries, "test_mcc_mean": mean, "test_mcc_sd": sd, "labels": [0, 1], "counts": {"test": 9}}


@pytest.mark.parametrize("name", ["nt_revised/promoter_tata", "nt_original/H3"])
def test_only_nt_cv_on_the_nt_task_is_compared_like_for_like(name: str):
    task = get_task(name)
    value, label, comparable = report.sota_for(task, "nt-cv")
    assert value is not None and comparable and "indicative" not in label
    for protocol in ("finetune", "probe"):
        v, lab, comp = report.sota_for(task, protocol)
        assert v == value and not comp and f"10-fold CV vs {protocol}: indicative only" in lab
    local = get_task("gue/prom_300_tata")        # the same kind of task on other data: never like for like
    assert not report.sota_for(local, "nt-cv")[2] and "other data" in report.sota_for(local, "nt-cv")[1]
    assert report.sota_for(get_task("gue/mouse_0"), "nt-cv")[:2] == (None, "none published")


def test_rows_say_their_protocol_pair_by_id_and_mark_indicative_sota():
    nt, local = get_task("nt_revised/promoter_tata"), get_task("gue/prom_300_tata")
    folds = {f"fold {k}": 0.5 + 0.01 * k for k in range(3)}
    cv = report.compare({**report.task_row(nt), "protocol": "nt-cv"}, _results({k: v - 0.1 for k, v in folds.items()}),
                        _results(folds), nt)
    ft = report.compare({**report.task_row(local), "protocol": "finetune"}, _results({"seed 0": 0.4, "seed 1": 0.5}),
                        _results({"seed 1": 0.6, "seed 0": 0.45}), local)
    assert cv["sota_comparable"] and cv["pairs_by"] == "fold" and cv["paired"]["ids"] == list(folds)
    assert cv["paired"]["mean_diff"] == pytest.approx(0.1) and cv["paired"]["sd_diff"] == pytest.approx(0, abs=1e-12)
    assert cv["pct_of_sota"] == pytest.approx(100 * cv["ours_mcc"] / cv["sota_mcc"])
    assert not ft["sota_comparable"] and ft["pairs_by"] == "seed"
    assert ft["paired"]["mean_diff"] == pytest.approx((0.05 + 0.1) / 2)       # seed 0 with seed 0, whatever the order
    meta = {"model": "M", "protocols": ["nt-cv"], "steps": 8, "batch_size": 4, "seeds": 1, "folds": 3,
            "device": "cpu"}
    md = report.markdown([cv], report.summarize([cv]), meta)
    assert "| nt_revised/promoter_tata | nt-cv | 0.410 ± 0.040 | 0.510 ± 0.040 |" in md     # mean ± 2 sd
    assert "*" not in md.split("\n")[4] and "(like for like)" in md and "\\*" not in md
    assert "3-fold cross-validation" in md and "over 3 folds" in md and "Fewer than 3 seeds" not in md
    meta = {**meta, "protocols": ["finetune"], "seeds": 2, "folds": None}
    md = report.markdown([ft], report.summarize([ft]), meta)
    assert "| gue/prom_300_tata | finetune | 0.450 ± 0.020 |" in md and "% of SOTA* on average (indicative)" in md
    assert "only `--protocol nt-cv` rows of NT tasks" in md and "With paired 95% intervals over 2 seed(s)" in md
    assert report.summarize([cv, ft]).keys() == {"nt-cv", "finetune"}
    s = report.summarize([cv, ft])
    assert "mean_pct_of_sota_indicative" in s["finetune"] and "mean_pct_of_sota_comparable" not in s["finetune"]
    assert "mean_pct_of_sota_comparable" in s["nt-cv"]


def test_a_skipped_task_counts_under_the_protocol_it_was_skipped_in():
    nt = get_task("nt_revised/promoter_tata")
    folds = {f"fold {k}": 0.5 + 0.01 * k for k in range(3)}
    cv = report.compare({**report.task_row(nt), "protocol": "nt-cv"}, _results(folds), _results(folds), nt)
    skipped = {**report.task_row(get_task("nt_revised/H3K4me3")), "protocol": "nt-cv", "status": "skipped",
               "reason": "hub unreachable"}
    s = report.summarize([cv, skipped])
    assert s.keys() == {"nt-cv"} and (s["nt-cv"]["tasks_done"], s["nt-cv"]["tasks_skipped"]) == (1, 1)

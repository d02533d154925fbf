"""tinydnabert benchmark: pretrained vs scratch on real tasks, table + JSON + CSV + PNG, resumable."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from tinydnabert.app import cli
from tinydnabert.errors import InputError
from tinydnabert.eval.stats import paired_interval


@pytest.fixture(scope="module")
def bench():
    class Bench:  # the `tinydnabert benchmark` command, called in-process
        main = staticmethod(lambda argv: cli.main(["benchmark", *argv]))
    return Bench


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def export(tiny_export: Path) -> Path:
    return tiny_export


@pytest.mark.timeout(150)
def test_benchmark_table_json_csv_png_and_resume(bench, export: Path, tmp_path: Path, monkeypatch, capsys):
    import tinydnabert.eval.tasks.hub as tasks  # where load_task_data finds load_hub

    calls = []

    def unreachable(task, *a, **k):  # the hub, as on this machine: unreachable, and slow to say so
        calls.append(task.name)
        raise InputError(f"hf://datasets/{task.hub_id} (config {task.hub_config}): could not load from the "
                         f"Hugging Face hub (ConnectionError)")

    monkeypatch.setattr(tasks, "load_hub", unreachable)
    out = tmp_path / "bench"
    argv = ["--model", str(export), "--tasks", "gue/prom_300_tata,ienhancer/enhancers_types,promoter_tata,H3K27ac",
            "--out", str(out), "--steps", "8", "--batch-size", "16", "--warmup-steps", "1", "--eval-every", "4",
            "--log-every", "4", "--max-train-samples", "200", "--seeds", "2"]
    assert bench.main(argv) == 0
    assert calls == ["nt_revised/promoter_tata"]       # the second hub task is skipped without retrying
    res = json.loads((out / "nt_benchmark.json").read_text())
    rows = {r["task"]: r for r in res["tasks"]}
    assert rows["nt_revised/promoter_tata"]["status"] == "skipped"
    assert "Hugging Face hub" in rows["nt_revised/H3K27ac"]["reason"]
    for name in ("gue/prom_300_tata", "ienhancer/enhancers_types"):
        r = rows[name]
        assert r["status"] == "done" and len(r["ours_seeds"]) == 2 and len(r["scratch_seeds"]) == 2
        for kind, key in (("scratch", "scratch_mcc"), ("pretrained", "ours_mcc")):
            run = json.loads((Path(r["runs"][kind]) / "results.json").read_text())
            assert run["model"]["kind"] == kind and run["test_mcc_mean"] == r[key]
        assert r["gain_over_scratch"] == pytest.approx(r["ours_mcc"] - r["scratch_mcc"])
        assert r["sota_comparable"] is False                # local data: the NT figure is indicative only
    assert rows["ienhancer/enhancers_types"]["labels"] == [0, 1, 2]
    assert rows["gue/prom_300_tata"]["sota_mcc"] == 0.94
    assert rows["gue/prom_300_tata"]["pct_of_sota"] == pytest.approx(100 * rows["gue/prom_300_tata"]["ours_mcc"] / 0.94)
    assert res["summary"]["finetune"]["tasks_done"] == 2 and res["summary"]["finetune"]["tasks_skipped"] == 2
    for r in (rows["gue/prom_300_tata"], rows["ienhancer/enhancers_types"]):  # paired by seed id, as stats says
        assert r["ours_runs"].keys() == r["scratch_runs"].keys() == {"seed 0", "seed 1"} and r["pairs_by"] == "seed"
        assert r["paired"] == paired_interval(r["ours_runs"], r["scratch_runs"])
        assert r["verdict"] in res["summary"]["finetune"]["verdicts"] and r["protocol"] == "finetune"
    md = (out / "nt_benchmark.md").read_text()
    assert "| Task | Protocol | Scratch | Ours | gain [95% CI] | verdict | SOTA | % of SOTA | SOTA is |" in md
    assert "With paired 95% intervals over 2 seed(s)" in md
    assert "best in NT paper (nt_revised/promoter_tata" in md and "other data" in md
    with open(out / "nt_benchmark.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [r["task"] for r in table] == list(rows)
    assert float(table[0]["ours_mcc"]) == pytest.approx(rows["gue/prom_300_tata"]["ours_mcc"])
    png = (out / "nt_benchmark.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000

    # Resumable: a rerun reuses every finished run (nothing retrained) and gives the same table.
    mtimes = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/*/results.json")}
    assert len(mtimes) == 4
    capsys.readouterr()
    assert bench.main(argv) == 0
    log = capsys.readouterr().out
    assert log.count("already done") == 4 and "[run ]" not in log
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes
    again = json.loads((out / "nt_benchmark.json").read_text())
    assert [r.get("ours_mcc") for r in again["tasks"]] == [r.get("ours_mcc") for r in res["tasks"]]

    # ... but not under other settings, which would mix protocols in one table
    assert bench.main([*argv[:-2], "--seeds", "3"]) == 2
    assert "finished under other settings" in capsys.readouterr().err
    # ... nor for another --model (its results would be reported as this model's)
    other = tmp_path / "other_export"
    other.mkdir()
    assert bench.main([argv[0], str(other), *argv[2:]]) == 2
    err = capsys.readouterr().err
    assert "finished under other settings" in err and "other_export" in err


def test_benchmark_bad_inputs(bench, tmp_path: Path, capsys):
    assert bench.main(["--model", str(tmp_path / "none"), "--tasks", "gue/H3", "--out", str(tmp_path / "o")]) == 2
    assert "model not found" in capsys.readouterr().err
    assert bench.main(["--model", str(tmp_path), "--tasks", "gue/nope", "--out", str(tmp_path / "o")]) == 2
    assert "unknown task 'gue/nope'" in capsys.readouterr().err
    assert bench.main(["--model", str(tmp_path), "--tasks", "gue/H3", "--kinds", "pretrain", "--out",
                       str(tmp_path / "o")]) == 2
    assert "--kinds 'pretrain'" in capsys.readouterr().err and not (tmp_path / "o").exists()


@pytest.mark.timeout(150)
def test_both_protocols_share_seeds_and_say_what_they_found(bench, export: Path, tmp_path: Path):
    out = tmp_path / "both"
    argv = ["--model", str(export), "--tasks", "gue/prom_core_all", "--out", str(out), "--protocol", "both",
            "--steps", "6", "--batch-size", "16", "--warmup-steps", "1", "--eval-every", "3", "--log-every", "3",
            "--max-train-samples", "300", "--seeds", "3", "--probe-c-grid", "0.1,1"]
    assert bench.main(argv) == 0
    res = json.loads((out / "nt_benchmark.json").read_text())
    by = {r["protocol"]: r for r in res["tasks"]}
    assert set(by) == {"finetune", "probe"} and all(r["status"] == "done" for r in by.values())
    probe = by["probe"]
    assert Path(probe["runs"]["pretrained"]).name == "probe-pretrained" and len(probe["ours_seeds"]) == 3
    assert probe["paired"]["n"] == 3 and probe["gain_low"] <= probe["paired"]["mean_diff"] <= probe["gain_high"]
    md = (out / "nt_benchmark.md").read_text()
    assert "| gue/prom_core_all | probe |" in md and "| gue/prom_core_all | finetune |" in md
    (sentence,) = [line for line in md.splitlines() if line.startswith("With paired")]
    assert sentence.startswith("With paired 95% intervals over 3 seed(s)") and "probe: pretrained" in sentence


@pytest.mark.timeout(150)
def test_gue_suite_from_a_root_in_gues_layout(bench, export: Path, tmp_path: Path, benchmark_dir: Path):
    """--data GUE_ROOT: a GUE task is read from ROOT/<its GUE path>; one missing there is skipped, named."""
    from tinydnabert.eval.tasks import GROUPS

    assert len(GROUPS["gue"]) == 28
    root = tmp_path / "GUE"
    src = benchmark_dir / "GUE" / "prom" / "prom_core_all"
    (root / "prom" / "prom_core_all").mkdir(parents=True)
    for split, n in (("train", 400), ("dev", 100), ("test", 300)):  # real rows, fewer of them
        lines = (src / f"{split}.csv").read_text().splitlines()
        (root / "prom" / "prom_core_all" / f"{split}.csv").write_text("\n".join(lines[:n + 1]) + "\n")
    out = tmp_path / "gue"
    assert bench.main(["--model", str(export), "--tasks", "gue/prom_core_all,gue/tf_0", "--data", str(root),
                       "--out", str(out), "--protocol", "probe", "--seeds", "2", "--probe-c-grid", "1"]) == 0
    rows = {r["task"]: r for r in json.loads((out / "nt_benchmark.json").read_text())["tasks"]}
    assert rows["gue/prom_core_all"]["status"] == "done" and rows["gue/prom_core_all"]["counts"]["test"] == 300
    assert rows["gue/tf_0"]["status"] == "skipped" and str(root / "tf" / "0") in rows["gue/tf_0"]["reason"]


@pytest.mark.timeout(150)
def test_pretraining_shards_add_what_the_pretraining_saw(bench, export: Path, hg38_shards: Path, tmp_path: Path):
    """--pretraining-shards: each row carries its test split's overlap with the shards (the overlap command's own
    figures, written beside the table as overlap.json), and the table shows it in a column with its sentence."""
    out = tmp_path / "seen"
    argv = ["--model", str(export), "--tasks", "gue/prom_300_tata", "--out", str(out), "--protocol", "probe",
            "--max-train-samples", "200", "--seeds", "2", "--probe-c-grid", "1",
            "--pretraining-shards", str(hg38_shards)]
    assert bench.main(argv) == 0
    ov = json.loads((out / "overlap.json").read_text())
    test = ov["tasks"]["gue/prom_300_tata"]["splits"]["test"]
    assert ov["shards"] == str(hg38_shards.resolve()) and ov["k"] == 32 and test["rows"] == 613
    assert test["sharing_kmer"] == len(test["sharing_rows"]) > 0  # promoters of hg38 chr2 1-2.3 Mbp are in it
    (row,) = json.loads((out / "nt_benchmark.json").read_text())["tasks"]
    assert row["seen_kmer_pct"] == pytest.approx(100 * test["sharing_kmer"] / 613, abs=1e-3)
    assert row["seen_whole_pct"] == pytest.approx(100 * test["contained"] / 613, abs=1e-3)
    md = (out / "nt_benchmark.md").read_text()
    assert md.splitlines()[2].endswith("| seen in pretraining |")
    (line,) = [x for x in md.splitlines() if x.startswith("| gue/prom_300_tata | probe |")]
    assert line.endswith(f" {row['seen_kmer_pct']:.1f}% ({row['seen_whole_pct']:.1f}% whole) |")
    assert any(x.startswith("Seen in pretraining:") for x in md.splitlines())

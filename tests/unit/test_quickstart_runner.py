"""tinydnabert quickstart without running it: the stage runner's banners, ETA and pace (a fake clock), the
heartbeat, the printed runbook of --dry-run, and what it refuses before any stage runs. The whole pipeline runs
in tests/integration/test_quickstart.py."""

from __future__ import annotations

import time

import pytest

from tinydnabert.app import cli
from tinydnabert.app import quickstart as qs


def run_quickstart(argv: list[str]) -> int:
    return cli.main(["quickstart", *argv])


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_stage_runner_banners_eta_and_pace():
    clock, lines = FakeClock(), []

    def takes(seconds):
        def run():
            clock.t += seconds
        return run

    # Budgets 10/20/30 s; the first stage takes twice its budget, so the rest are expected slower too.
    stages = [qs.Stage("a", "first", 10, takes(20)), qs.Stage("b", "second", 20, takes(40)),
              qs.Stage("c", "third", 30, takes(30))]
    runner = qs.StageRunner(stages, lines.append, heartbeat=0, clock=clock, prior=0)  # pace = plain ratio
    assert runner.eta(0) == 60
    assert runner.run()
    text = "\n".join(lines)
    assert "=== [1/3] a: first\n=== elapsed 0s | this stage ~10s | ~1m00s left in all" in text
    # After a took 20 s of a 10 s budget the pace is 2x: b (20) + c (30) -> 100 s left.
    assert "=== [2/3] b: second\n=== elapsed 20s | this stage ~40s | ~1m40s left in all" in text
    # After a+b took 60 s of 30 s budgets (still 2x): c -> 60 s.
    assert "=== [3/3] c: third\n=== elapsed 1m00s | this stage ~1m00s | ~1m00s left in all" in text
    assert "=== c done in 30s (budget 30s)" in text
    assert [s.seconds for s in stages] == [20, 40, 30] and all(s.status == "ok" for s in stages)
    # Inside a stage the estimate counts down, and past the budget it stays small but positive.
    assert runner.eta(2, in_stage=10) == pytest.approx(30 * 1.5 - 10)
    assert 0 < runner.eta(2, in_stage=1000) < 10
    table = runner.table()
    assert "total" in table and "90.0" in table


def test_pace_is_not_swung_by_a_tiny_stage():
    clock = FakeClock()
    stages = [qs.Stage("tiny", "", 1, lambda: None), qs.Stage("big", "", 99, lambda: None)]
    runner = qs.StageRunner(stages, lambda s: None, heartbeat=0, clock=clock)  # default prior 0.25
    stages[0].seconds = 0.0  # took no time at all: a plain ratio would say "everything 2x faster"
    assert runner.pace() == pytest.approx(25 / 26)
    stages[0].seconds, stages[1].seconds = 1.0, 198.0  # a long stage that ran 2x slow does count
    assert runner.pace() == pytest.approx((199 + 25) / (100 + 25))


def test_stage_runner_stops_at_a_failed_stage():
    clock, lines, ran = FakeClock(), [], []

    def boom():
        clock.t += 3
        raise qs.StageFailed("`tinydnabert export RUN OUT` exited with status 2")

    stages = [qs.Stage("ok", "", 5, lambda: ran.append("ok")), qs.Stage("bad", "", 5, boom),
              qs.Stage("never", "", 5, lambda: ran.append("never"))]
    assert not qs.StageRunner(stages, lines.append, heartbeat=0, clock=clock).run()
    assert ran == ["ok"]
    assert [s.status for s in stages] == ["ok", "failed", "pending"]
    assert any("bad FAILED after 3s: `tinydnabert export RUN OUT` exited with status 2" in line for line in lines)


def test_heartbeat_reports_inside_a_long_stage():
    lines = []
    stages = [qs.Stage("slow", "", 100, lambda: time.sleep(0.35))]
    qs.StageRunner(stages, lines.append, heartbeat=0.1).run()
    beats = [line for line in lines if line.startswith("--- still in slow:")]
    assert len(beats) >= 2 and "left in all" in beats[0]


def test_dry_run_prints_the_runbook_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "qs"
    assert run_quickstart(["--smoke", "--dry-run", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert not out.exists()
    for needle in ("hg38_chr2_1-2333275.fa.gz", "tinydnabert preprocess --fasta", "deepspeed --num_gpus 1",
                   "launch/pretrain.py --deepspeed_config", "tinydnabert export", "tinydnabert benchmark",
                   "--tasks gue/prom_300_tata,gue/H3", "[6/6] report"):
        assert needle in text, needle
    # a misspelt task is refused before any stage runs (not after pretraining)
    assert run_quickstart(["--smoke", "--tasks", "gue/prom_300_tat", "--out", str(out)]) == 2
    assert "unknown task 'gue/prom_300_tat'" in capsys.readouterr().err and not out.exists()


def test_refuses_an_output_dir_it_did_not_make(tmp_path, monkeypatch, capsys):
    (tmp_path / "precious.txt").write_text("keep me")
    assert run_quickstart(["--smoke", "--out", str(tmp_path)]) == 2
    assert "is not a quickstart output" in capsys.readouterr().err
    assert (tmp_path / "precious.txt").read_text() == "keep me"
    # A file where the output directory should go: an error, not a traceback, and the file is kept.
    assert run_quickstart(["--smoke", "--out", str(tmp_path / "precious.txt")]) == 2
    assert "is not a directory" in capsys.readouterr().err
    assert (tmp_path / "precious.txt").read_text() == "keep me"
    # A FASTA named by the environment must exist.
    monkeypatch.setenv(qs.FASTA_ENV, str(tmp_path / "missing.fa.gz"))
    assert run_quickstart(["--smoke", "--dry-run", "--out", str(tmp_path / "x")]) == 2
    assert "TINYDNABERT_FASTA" in capsys.readouterr().err

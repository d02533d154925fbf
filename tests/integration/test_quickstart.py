"""tinydnabert quickstart: the stage runner's banners and ETA (fake clock), the plan, and the whole
pipeline at its smallest setting on the real hg38 slice and the real GUE tasks, checking every artifact."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tinydnabert.app import cli
from tinydnabert.app import quickstart as qs

REPO = Path(__file__).resolve().parents[2]


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


def test_genome_falls_back_to_a_downloaded_hg38_chromosome(tmp_path, monkeypatch, genome_dir):
    """No chr20 in the data directory: the genome stage runs `tinydnabert download hg38-chr21`
    (here from a file:// mirror holding a real FASTA under that name) and uses what it wrote."""
    import hashlib

    body = (genome_dir / "human_chrM.fa.gz").read_bytes()
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "chr21.fa.gz").write_bytes(body)
    (mirror / "md5sum.txt").write_text(f"{hashlib.md5(body).hexdigest()}  chr21.fa.gz\n")
    data = tmp_path / "data"
    (data / "genome").mkdir(parents=True)
    monkeypatch.setenv("TINYDNABERT_DATA", str(data))
    monkeypatch.setenv("TINYDNABERT_DOWNLOAD_BASE_URL", mirror.as_uri())
    monkeypatch.delenv(qs.FASTA_ENV, raising=False)
    lines: list[str] = []
    q = qs.Quickstart(qs.QuickstartConfig(out=str(tmp_path / "qs")), log=lines.append)
    assert q.stages()[0].budget == 90  # a download is coming: the ETA allows for it
    q.stage_genome()
    assert q.fasta == data / "genome" / "chr21.fa.gz" and q.fasta.read_bytes() == body
    assert any(line.startswith("$ tinydnabert download hg38-chr21 --out") or "download hg38-chr21" in line
               for line in lines)
    # The next run finds it and downloads nothing.
    q2 = qs.Quickstart(qs.QuickstartConfig(out=str(tmp_path / "qs")), log=lines.append)
    assert q2.pick_fasta() == (data / "genome" / "chr21.fa.gz", "an earlier `tinydnabert download hg38-chr21`")


def _png_ok(path: Path, min_w: int, min_h: int) -> None:
    from PIL import Image

    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] >= min_w and im.size[1] >= min_h, (path, im.size)
        assert float(np.asarray(im.convert("L"), dtype=np.float32).std()) > 15, f"{path} looks blank"


@pytest.mark.timeout(300)
def test_smoke_quickstart_end_to_end(tmp_path, real_data):
    """`python3 launch/quickstart.py --smoke`: every stage for real (the deepspeed launcher included)
    on the real hg38 slice and the real GUE tasks; then every artifact is checked."""
    out = tmp_path / "qs"
    env = dict(os.environ, TINYDNABERT_DATA=str(real_data))
    env.pop(qs.FASTA_ENV, None)
    proc = subprocess.run([sys.executable, "-m", "tinydnabert.app.cli", "quickstart", "--smoke", "--out", str(out),
                           "--heartbeat", "0"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=290)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-6000:]

    # The console: a banner per stage with elapsed time and time left, the printed commands, the TB command.
    for i, name in enumerate(["genome", "preprocess", "pretrain", "export", "finetune", "report"], 1):
        assert f"=== [{i}/6] {name}:" in proc.stdout
    assert proc.stdout.count("left in all") >= 6
    assert "$ deepspeed --num_gpus 1 --master_port" in proc.stdout
    assert f"tensorboard --logdir {out / 'pretrain' / 'tensorboard'}" in proc.stdout

    record = json.loads((out / "quickstart.json").read_text())
    assert record["ok"] and [s["status"] for s in record["stages"]] == ["ok"] * 6
    assert record["fasta"].endswith("hg38_chr2_1-2333275.fa.gz")

    # Shards + manifest + tokenizer (the contract in tinydnabert.formats).
    from tinydnabert.formats import load_manifest, shard_paths, tokenizer_fingerprint
    shards = out / "shards"
    manifest = load_manifest(shards)
    assert manifest["inputs"][0]["path"].endswith("hg38_chr2_1-2333275.fa.gz")
    assert manifest["input_acgt_bases"] == 2_323_275  # SOURCES.md: the slice's non-N bases
    assert manifest["splits"]["train"]["samples"] > 1000 and manifest["splits"]["val"]["samples"] > 10
    assert shard_paths(shards, "train") and shard_paths(shards, "val")
    assert manifest["tokenizer"]["sha256"] == tokenizer_fingerprint(shards / "tokenizer")
    assert manifest["tokenizer"]["vocab_size"] == 256

    # The DeepSpeed config the run used: the short schedule, not the 200k-step reference one.
    ds = json.loads((out / "ds_config.json").read_text())
    assert ds["scheduler"]["params"]["total_num_steps"] == 30

    # Checkpoints: `latest` names a complete checkpoint of the last step.
    run = out / "pretrain"
    tag = (run / "checkpoints" / "latest").read_text().strip()
    assert tag.endswith("30") and (run / "checkpoints" / tag).is_dir()

    # HF export loads with plain transformers and predicts over the tokenizer's vocabulary.
    import torch
    from transformers import AutoModelForMaskedLM, AutoTokenizer
    model = AutoModelForMaskedLM.from_pretrained(run / "export").eval()
    tok = AutoTokenizer.from_pretrained(run / "export")
    assert model.config.hidden_size == 64 and model.config.num_hidden_layers == 2
    enc = tok("ACGTTGCAAGGCTTAGCCATGCAAATTTGGCCA" * 4, return_tensors="pt")
    with torch.no_grad():
        logits = model(**enc).logits
    assert logits.shape == (1, enc["input_ids"].shape[1], model.config.vocab_size) and torch.isfinite(logits).all()

    # TensorBoard events hold the run's curves.
    from tinydnabert.app.plots import read_scalars
    scalars = read_scalars(run)
    steps, losses = scalars["train/loss"]
    assert steps[-1] == 30 and losses[-1] < losses[0]
    assert scalars["val/loss"][0] == [15, 30]
    assert "perf/tokens_per_sec" in scalars and "train/lr" in scalars

    # Results table: both tasks under both protocols, pretrained and scratch paired by seed, real MCCs.
    res = json.loads((out / "finetune" / "nt_benchmark.json").read_text())
    rows = {(t["task"], t["protocol"]): t for t in res["tasks"]}
    assert set(rows) == {(task, p) for task in ("gue/prom_300_tata", "gue/H3") for p in ("finetune", "probe")}
    for t in rows.values():
        assert t["status"] == "done" and -1 <= t["scratch_mcc"] <= 1 and -1 <= t["ours_mcc"] <= 1
        assert t["counts"]["test"] in (613, 1497)  # the real test splits, whole
        assert len(t["ours_seeds"]) == 2 and t["verdict"]
    table = (out / "finetune" / "nt_benchmark.md").read_text()
    assert "| gue/prom_300_tata | probe |" in table and "| gue/H3 | finetune |" in table and table in proc.stdout
    assert "With paired 95% intervals over 2 seed(s)" in table
    assert "budget curve" in proc.stdout  # the report says how much pretraining a clear gain takes (or how to find out)

    # Figures.
    _png_ok(out / "figures" / "training.png", 1000, 800)
    _png_ok(out / "figures" / "nt_benchmark.png", 400, 300)

"""tinydnabert quickstart: the genome stage's download fallback, and the whole pipeline at its smallest setting on
the real hg38 slice and the real GUE tasks, checking every artifact. The stage runner, the plan and the refusals
(no stage run): tests/unit/test_quickstart_runner.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tinydnabert.app import quickstart as qs


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

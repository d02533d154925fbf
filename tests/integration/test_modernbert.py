"""--arch modernbert end to end: transformers' ModernBertForMaskedLM pretrained under the real DeepSpeed launcher
(ZeRO-1, 2 CPU ranks, the shipped CPU config), SIGKILLed and resumed bit-exactly, exported to a directory plain
transformers loads, and every downstream command (embed, probe, finetune, score-variants) run on that export."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import RUN_FLAGS, kill_after_first_checkpoint, launch_ranks, losses, run_cli, wait

STEPS = 20
# GeGLU at 2/3 of the RoBERTa tiny run's feed-forward width (128): about the same layer parameters.
FLAGS = RUN_FLAGS + ["--arch", "modernbert", "--intermediate-size", "85"]


def _args(ds: Path, shards: Path, run: Path, *extra: str) -> list[str]:
    return ["--deepspeed_config", str(ds), "--data", str(shards), "--out", str(run), "--max-steps", str(STEPS),
            *FLAGS, *extra]


@pytest.fixture(scope="module")
def modernbert_run(tmp_path_factory, hg38_shards, tiny_ds) -> tuple[Path, str]:
    root = tmp_path_factory.mktemp("modernbert")
    run, log = root / "run", root / "log.txt"
    return run, wait(launch_ranks(2, _args(tiny_ds, hg38_shards, run), log), log, timeout=420)


@pytest.mark.timeout(600)
def test_modernbert_pretrains_on_two_ranks_and_records_its_arch(modernbert_run):
    run, text = modernbert_run
    conf = json.loads((run / "config.json").read_text())
    assert conf["model"]["arch"] == "modernbert" and conf["model"]["intermediate_size"] == 85
    assert "micro 4 x accumulation 2 x 2 ranks" in text, text[-2000:]
    marker = json.loads((run / "checkpoints" / f"step{STEPS:08d}" / "tinydnabert_checkpoint.json").read_text())
    assert marker["world_size"] == 2 and marker["model_config"]["arch"] == "modernbert"
    loss = losses(run)
    assert sorted(loss) == list(range(1, STEPS + 1))
    assert sum(loss[s] for s in range(STEPS - 4, STEPS + 1)) < sum(loss[s] for s in range(1, 6))  # it learns


@pytest.mark.timeout(600)
def test_modernbert_export_is_plain_transformers_and_equals_the_engine(modernbert_run):
    run, _ = modernbert_run
    export = run / "export"
    code = f"""
import sys, torch
from transformers import AutoModelForMaskedLM, AutoModelForSequenceClassification
probe = torch.load({str(run / 'final_logits.pt')!r}, weights_only=True)
model = AutoModelForMaskedLM.from_pretrained({str(export)!r}).eval()
assert type(model).__name__ == "ModernBertForMaskedLM", type(model)
with torch.no_grad():
    logits = model(input_ids=probe["input_ids"]).logits
err = (logits - probe["logits"]).abs().max().item()
assert err < 1e-5, err
clf = AutoModelForSequenceClassification.from_pretrained({str(export)!r}, num_labels=2)
assert type(clf).__name__ == "ModernBertForSequenceClassification"
assert not any(m.startswith("tinydnabert") for m in sys.modules), "needed project code"
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180, cwd=export)
    assert out.returncode == 0, out.stderr[-3000:]


@pytest.mark.timeout(900)
def test_modernbert_resumes_bit_exactly(tmp_path, modernbert_run, hg38_shards, tiny_ds):
    ref_run, _ = modernbert_run
    run = tmp_path / "run"
    proc = launch_ranks(2, _args(tiny_ds, hg38_shards, run), tmp_path / "killed.txt")
    killed_at = kill_after_first_checkpoint(proc, run, tmp_path / "killed.txt")
    assert killed_at == 5
    text = wait(launch_ranks(2, _args(tiny_ds, hg38_shards, run, "--resume"), tmp_path / "resumed.txt"),
                tmp_path / "resumed.txt", timeout=420)
    assert f"at step {killed_at}" in text
    ref, res = losses(ref_run), losses(run)
    assert [res[s] for s in range(killed_at + 1, STEPS + 1)] == [ref[s] for s in range(killed_at + 1, STEPS + 1)]
    tag = f"step{STEPS:08d}"
    ref_w = torch.load(ref_run / "checkpoints" / tag / "mp_rank_00_model_states.pt", weights_only=True)["module"]
    w = torch.load(run / "checkpoints" / tag / "mp_rank_00_model_states.pt", weights_only=True)["module"]
    assert ref_w.keys() == w.keys() and all(torch.equal(ref_w[k], w[k]) for k in ref_w)


@pytest.mark.timeout(600)
@pytest.mark.usefixtures("one_thread")
def test_every_downstream_command_runs_on_a_modernbert_export(tmp_path, capsys, modernbert_run, genome_dir,
                                                              real_data):
    import numpy as np

    run, _ = modernbert_run
    export = shutil.copytree(run / "export", tmp_path / "export")
    tata = real_data / "benchmark" / "GUE" / "prom" / "prom_300_tata" / "test.csv"
    lines = tata.read_text().splitlines()[:33]
    (tmp_path / "seqs.csv").write_text("\n".join(lines) + "\n")
    rc, _, err = run_cli(capsys, "embed", "--model", export, "--input", tmp_path / "seqs.csv", "--out",
                         tmp_path / "emb.npy", "--strands", "both", "--no-progress")
    assert rc == 0, err
    emb = np.load(tmp_path / "emb.npy")
    assert emb.shape == (32, 64) and np.isfinite(emb).all()
    probe = ["--task", "gue/prom_core_all", "--seeds", "2", "--max-train-samples", "300", "--c-grid", "1"]
    assert run_cli(capsys, "probe", "--model", export, "--out", tmp_path / "pre", *probe)[0] == 0
    assert run_cli(capsys, "probe", "--model", "scratch", "--scratch-from", export, "--out", tmp_path / "scr",
                   *probe)[0] == 0
    pre, scr = (json.loads((tmp_path / a / "results.json").read_text()) for a in ("pre", "scr"))
    assert pre["model"]["kind"] == "pretrained" and scr["model"]["kind"] == "scratch"
    assert pre["seeds"][0]["test_mcc"] != scr["seeds"][0]["test_mcc"]
    rc, _, err = run_cli(capsys, "finetune", "--model", export, "--task", "gue/prom_300_tata", "--out",
                         tmp_path / "ft", "--seeds", "1", "--steps", "6", "--batch-size", "16", "--eval-every", "6",
                         "--warmup-steps", "2", "--max-train-samples", "160", "--strands", "both")
    assert rc == 0, err
    ft = json.loads((tmp_path / "ft" / "results.json").read_text())
    assert -1 <= ft["seeds"][0]["test_mcc"] <= 1
    rc, _, err = run_cli(capsys, "score-variants", "--model", export, "--fasta", genome_dir / "grch37_chr20.fa.gz",
                         "--vcf", real_data / "variants" / "gonl_chr20_release4.vcf.gz", "--out", tmp_path / "v.tsv",
                         "--no-progress")
    assert rc == 0, err
    header, *rows = (r.split("\t") for r in (tmp_path / "v.tsv").read_text().splitlines())
    scores = [float(r[header.index("score")]) for r in rows if r[header.index("status")] == "ok"]
    assert len(scores) == 7 and all(np.isfinite(scores)) and any(s != 0 for s in scores)

"""`tinydnabert probe`: a frozen encoder + logistic regression on a real GUE task; the MCC it reports is
scikit-learn's on its saved predictions; scratch is a seeded random encoder; seeds change the carve; sequences over
the window are pooled over windows, and --strands both probes the mean of the two strands' embeddings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tinydnabert.app import cli
from tinydnabert.eval.common import read_predictions

pytestmark = pytest.mark.usefixtures("one_thread")


def _mcc_from_predictions(out: Path, seed: int) -> float:
    from sklearn.metrics import matthews_corrcoef

    y, p = read_predictions(out / "predictions" / f"seed{seed}.csv")
    return float(matthews_corrcoef(y, p))


def test_probe_pretrained_and_scratch_on_a_real_task(tiny_export: Path, tmp_path: Path):
    common = ["--task", "gue/prom_core_all", "--seeds", "2", "--max-train-samples", "600", "--c-grid", "0.01,1"]
    assert cli.main(["probe", "--model", str(tiny_export), "--out", str(tmp_path / "pre"), *common]) == 0
    assert cli.main(["probe", "--model", "scratch", "--scratch-from", str(tiny_export),
                     "--out", str(tmp_path / "scr"), *common]) == 0
    for arm in ("pre", "scr"):
        res = json.loads((tmp_path / arm / "results.json").read_text())
        assert res["protocol"] == "probe" and res["counts"]["test"] == 5920  # GUE prom_core_all test.csv
        assert res["counts"]["train"] + res["counts"]["val"] == 600
        for s in res["seeds"]:
            assert abs(s["test_mcc"] - _mcc_from_predictions(tmp_path / arm, s["seed"])) < 1e-12
            assert s["C"] in (0.01, 1.0) and -1 <= s["val_mcc"] <= 1
    pre = json.loads((tmp_path / "pre" / "results.json").read_text())
    scr = json.loads((tmp_path / "scr" / "results.json").read_text())
    assert pre["model"]["kind"] == "pretrained" and scr["model"]["kind"] == "scratch"
    # The seeds are different experiments (another carve; for scratch another random encoder).
    assert pre["seeds"][0]["test_mcc"] != pre["seeds"][1]["test_mcc"]
    assert scr["seeds"][0]["test_mcc"] != pre["seeds"][0]["test_mcc"]


def test_probe_refuses_bad_settings(tiny_export: Path, tmp_path: Path, capsys):
    assert cli.main(["probe", "--model", str(tiny_export), "--task", "gue/prom_core_all", "--out", str(tmp_path / "x"),
                     "--c-grid", "0,-1"]) == 2
    assert "--c-grid" in capsys.readouterr().err
    assert cli.main(["probe", "--model", "scratch", "--task", "gue/prom_core_all", "--out", str(tmp_path / "y")]) == 2
    assert "--scratch-from" in capsys.readouterr().err and not (tmp_path / "y").exists()


def test_probe_on_both_strands_of_sequences_longer_than_the_window(tiny_export: Path, tmp_path: Path,
                                                                    genome_dir: Path):
    """Real chr20 sequences of 400-900 bp (130-300 tokens), a 64-token window: every one needs windows."""
    import numpy as np
    import pysam

    from tinydnabert.eval.common import Splits
    from tinydnabert.eval.embed import embed
    from tinydnabert.eval.encoder import encoder_spec, load_encoder
    from tinydnabert.eval.probe import Features, ProbeConfig

    rng = np.random.default_rng(0)
    with pysam.FastaFile(str(genome_dir / "grch37_chr20.fa.gz")) as fa:
        seqs = [fa.fetch("20", a, a + int(rng.integers(400, 900))).upper()
                for a in rng.integers(30_000_000, 31_000_000, size=80)]
    seqs = [s for s in seqs if "N" not in s]
    gc = np.array([(s.count("G") + s.count("C")) / len(s) for s in seqs])
    labels = (gc > np.median(gc)).astype(int)
    d = tmp_path / "gc"
    d.mkdir()
    for split, rows in (("train", slice(0, 60)), ("test", slice(60, None))):
        (d / f"{split}.csv").write_text("sequence,label\n" + "".join(f"{s},{y}\n" for s, y in
                                                                  zip(seqs[rows], labels[rows])))
    out = tmp_path / "both"
    assert cli.main(["probe", "--model", str(tiny_export), "--task", "gc", "--data", str(d), "--out", str(out),
                     "--seeds", "1", "--c-grid", "1", "--window", "64", "--strands", "both"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["strands"] == "both" and res["long"] == "windows" and res["window"] == 64 and res["stride"] == 31
    assert res["sequences_over_window"] == len(seqs)
    conf = json.loads((out / "config.json").read_text())["probe"]
    assert (conf["strands"], conf["max_length"], conf["long"], conf["stride"]) == ("both", 64, "windows", 0)
    # the probe's feature is the mean of the two strands' embeddings: what `embed --strands both` gives
    import torch

    cfg = ProbeConfig(model=str(tiny_export), task="gc", data=str(d), out=str(tmp_path / "x"), max_length=64,
                      strands="both", device="cpu")
    x = Features(cfg, encoder_spec(cfg.model, None, tiny_export), torch.device("cpu")).of(
        Splits((seqs[:3], labels[:3]), (seqs[3:5], labels[3:5]), (seqs[5:7], labels[5:7])), 0)
    model, tok = load_encoder(tiny_export, "cpu")
    both = embed(model, tok, seqs[:3], window=64, strands="both")
    fwd = embed(model, tok, seqs[:3], window=64)
    np.testing.assert_allclose(x["train"], both.vectors, atol=1e-5)
    assert not np.allclose(fwd.vectors, both.vectors, atol=1e-4) and (both.windows > 2 * 2).all()

"""`tinydnabert probe`: a frozen encoder + logistic regression on a real GUE task; the MCC it reports is
scikit-learn's on its saved predictions; scratch is a seeded random encoder; seeds change the carve."""

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

"""Fine-tuning: a tiny pretrained export and "scratch" both fine-tune on a real task; MCC is
scikit-learn's on the saved predictions; the loop learns; bad input fails cleanly through the CLI; --strands both
trains on a random strand per example (the same batches as a forward run) and averages the strands' logits."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tinydnabert.errors import InputError
from tinydnabert.eval.common import carve_validation, read_predictions
from tinydnabert.eval.finetune import FinetuneConfig, lr_lambda, run_finetune

QUICK = dict(steps=12, batch_size=16, warmup_steps=2, eval_every=6, log_every=6, max_train_samples=320,
             eval_batch_size=256)


pytestmark = pytest.mark.usefixtures("one_thread")


def _mcc_from_predictions(out: Path, seed: int) -> float:
    from sklearn.metrics import matthews_corrcoef

    y, p = read_predictions(out / "predictions" / f"seed{seed}.csv")
    return matthews_corrcoef(y, p)


@pytest.mark.timeout(120)
def test_pretrained_and_scratch_finetune_on_real_task(tiny_export: Path, tmp_path: Path):
    import torch
    from transformers import AutoModelForMaskedLM

    outs = {}
    for kind in ("pretrained", "scratch"):
        cfg = FinetuneConfig(model=str(tiny_export) if kind == "pretrained" else "scratch",
                             scratch_from=str(tiny_export) if kind == "scratch" else None,
                             task="gue/prom_300_tata", out=str(tmp_path / kind), seeds=2, **QUICK)
        res = run_finetune(cfg)
        out = outs[kind] = tmp_path / kind
        saved = json.loads((out / "results.json").read_text())
        assert saved["model"]["kind"] == kind
        assert saved["labels"] == [0, 1] and saved["label_ids"] == {"0": 0, "1": 1}
        assert saved["counts"] == {"train": 288, "val": 32, "test": 613}   # 10% of 320 carved; test untouched
        assert [s["seed"] for s in saved["seeds"]] == [0, 1]
        for s in saved["seeds"]:
            # the MCC in results is scikit-learn's on the saved test predictions
            assert s["test_mcc"] == pytest.approx(_mcc_from_predictions(out, s["seed"]), abs=1e-12)
            assert len(read_predictions(out / s["predictions"])[0]) == 613
            assert s["best_step"] in (6, 12) and [h["step"] for h in s["history"]] == [6, 12]
        assert saved["test_mcc_mean"] == pytest.approx(np.mean([s["test_mcc"] for s in saved["seeds"]]))
        assert saved["max_length"] <= 256 and saved["truncated_sequences"] == 0
        conf = json.loads((out / "config.json").read_text())
        assert conf["finetune"]["steps"] == 12 and conf["derived"]["max_length"] == saved["max_length"]
        assert res["test_mcc_mean"] == saved["test_mcc_mean"]
    # scratch is the same architecture, not the same weights
    from transformers import AutoModelForSequenceClassification

    pre = AutoModelForMaskedLM.from_pretrained(str(tiny_export)).roberta.embeddings.word_embeddings.weight
    torch.manual_seed(0)
    from transformers import AutoConfig
    scr = AutoModelForSequenceClassification.from_config(AutoConfig.from_pretrained(str(tiny_export), num_labels=2))
    assert scr.roberta.embeddings.word_embeddings.weight.shape == pre.shape
    assert not torch.allclose(scr.roberta.embeddings.word_embeddings.weight, pre)


@pytest.mark.timeout(120)
def test_the_loop_learns_a_separable_task_and_is_seeded(tiny_export: Path, tmp_path: Path):
    """GC-rich vs AT-rich sequences: the classifier must get them right (the loop really trains),
    and the same seed gives the same result."""
    rng = np.random.default_rng(0)
    d = tmp_path / "gc"
    d.mkdir()
    for split, n in (("train", 400), ("test", 200)):
        rows = ["sequence,label"]
        for i in range(n):
            lab = i % 2
            p = [0.1, 0.4, 0.4, 0.1] if lab else [0.4, 0.1, 0.1, 0.4]
            rows.append("".join(rng.choice(list("ACGT"), size=120, p=p)) + f",{lab}")
        (d / f"{split}.csv").write_text("\n".join(rows) + "\n")
    common = dict(model=str(tiny_export), task="gc_content", data=str(d), steps=40, batch_size=32,
                  warmup_steps=4, eval_every=20, log_every=20, lr=2e-3)
    a = run_finetune(FinetuneConfig(out=str(tmp_path / "a"), **common))
    assert a["seeds"][0]["test_mcc"] > 0.8, a["seeds"][0]
    assert a["task"]["name"] == "custom/gc_content"
    b = run_finetune(FinetuneConfig(out=str(tmp_path / "b"), **common))
    assert b["seeds"][0]["test_mcc"] == a["seeds"][0]["test_mcc"]
    assert b["seeds"][0]["history"] == a["seeds"][0]["history"]


@pytest.mark.timeout(60)
def test_validation_on_the_dev_split(tiny_export: Path, tmp_path: Path):
    r = run_finetune(FinetuneConfig(model=str(tiny_export), task="gue/mouse_0", out=str(tmp_path / "dev"),
                                    validation="dev", steps=2, warmup_steps=0, eval_every=2, batch_size=8,
                                    max_train_samples=64))
    assert r["counts"] == {"train": 64, "val": 810, "test": 810}    # GUE dev.csv, test untouched
    with pytest.raises(InputError, match="no dev split"):
        run_finetune(FinetuneConfig(model=str(tiny_export), task="gue/H3", out=str(tmp_path / "x"),
                                    validation="dev", steps=2, warmup_steps=0))


@pytest.mark.timeout(60)
def test_both_strands_same_batches_random_strand_and_recorded(tiny_export: Path, tmp_path: Path, monkeypatch):
    from transformers import AutoTokenizer

    from tinydnabert.eval import finetune
    from tinydnabert.eval.common import reverse_complement

    seen: dict[str, list[list[list[int]]]] = {}
    collate = finetune.collate

    def recording(ids, pad_id, device):  # the training batches (16 rows; validation and test come in 256s)
        if len(ids) == 16:
            seen[arm].append([list(r) for r in ids])
        return collate(ids, pad_id, device)

    monkeypatch.setattr(finetune, "collate", recording)
    quick = dict(model=str(tiny_export), task="gue/prom_300_tata", steps=4, batch_size=16, warmup_steps=0,
                 eval_every=2, log_every=2, max_train_samples=64, eval_batch_size=256)
    results = {}
    for arm in ("forward", "both"):
        seen[arm] = []
        results[arm] = run_finetune(FinetuneConfig(out=str(tmp_path / arm), strands=arm, **quick))
    res = results["both"]
    assert res["strands"] == "both" and results["forward"]["strands"] == "forward"
    assert json.loads((tmp_path / "both" / "config.json").read_text())["finetune"]["strands"] == "both"
    s = res["seeds"][0]
    assert s["test_mcc"] == pytest.approx(_mcc_from_predictions(tmp_path / "both", 0), abs=1e-12)
    assert [h["step"] for h in s["history"]] == [2, 4] and len(read_predictions(tmp_path / "both" /
                                                                              s["predictions"])[0]) == 613
    # the same examples in the same order as the forward run, each on a random strand: a flipped row is the
    # tokenized reverse complement of the forward row's sequence
    tok = AutoTokenizer.from_pretrained(str(tiny_export))
    assert len(seen["forward"]) == len(seen["both"]) == 4
    flipped = 0
    for fb, bb in zip(seen["forward"], seen["both"]):
        for f, b in zip(fb, bb):
            if f != b:
                flipped += 1
                seq = "".join(tok.convert_ids_to_tokens(f[1:-1]))
                assert b == tok(reverse_complement(seq))["input_ids"]
    assert 16 <= flipped <= 48  # of 64: p = 1/2
    # validation and test: the mean of the two strands' logits (the same ids twice: the forward prediction)
    import torch

    cpu = torch.device("cpu")
    model = finetune.build_classifier(finetune.classifier_spec(FinetuneConfig(out="x", **quick), tiny_export,
                                                               ["0", "1"]), 0)
    ids = [tok(q)["input_ids"] for q in ("ACGTAGGCTA" * 5, "TTTTGGGCCA" * 3, "GATTACA")]
    amp = finetune.autocast_for(cpu)
    z = finetune.logits(model, ids, 1, 2, cpu, amp)
    rc = [tok(reverse_complement(q))["input_ids"] for q in ("ACGTAGGCTA" * 5, "TTTTGGGCCA" * 3, "GATTACA")]
    zr = finetune.logits(model, rc, 1, 2, cpu, amp)
    assert (finetune.predict(model, ids, 1, 2, cpu, amp, rc) == ((z + zr) / 2).argmax(-1)).all()
    assert (finetune.predict(model, ids, 1, 2, cpu, amp, ids) == z.argmax(-1)).all()


def test_schedule_and_validation_carve():
    f = lr_lambda(10, 100)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0) and f(10) == pytest.approx(1.0)
    assert f(55) == pytest.approx(0.5) and f(100) == 0.0
    y = np.array([0] * 90 + [1] * 10)
    tr, va = carve_validation(y, 0.2, seed=3)
    assert len(va) == 20 and not set(tr) & set(va) and len(tr) + len(va) == 100
    assert y[va].sum() == 2                      # stratified: the 10% minority keeps its share
    tr2, va2 = carve_validation(y, 0.2, seed=3)
    assert (va == va2).all()                     # seeded
    assert not (carve_validation(y, 0.2, seed=4)[1] == va).all()


def test_config_validation():
    with pytest.raises(InputError, match="--warmup-steps 500 must be in"):
        FinetuneConfig(model="m", task="t", out="o", steps=100)
    with pytest.raises(InputError, match="--model scratch needs --scratch-from"):
        FinetuneConfig(model="scratch", task="t", out="o")


def _cli(argv, capsys):
    from tinydnabert.app.cli import main

    code = main(["finetune", *argv])
    return code, capsys.readouterr().err


def test_cli_bad_inputs_exit_nonzero_with_a_message(tiny_export: Path, tmp_path: Path, capsys):
    out = tmp_path / "out"
    base = ["--model", str(tiny_export), "--out", str(out), "--steps", "4", "--warmup-steps", "1"]
    code, err = _cli([*base, "--task", "no_such_task"], capsys)
    assert code == 2 and "error: unknown task 'no_such_task'" in err
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "train.csv").write_text("sequence,label\nACGT,0\nACGU,1\n")
    (bad / "test.csv").write_text("sequence,label\nACGT,0\nACGT,1\n")
    code, err = _cli([*base, "--task", "mine", "--data", str(bad)], capsys)
    assert code == 2 and f"{bad / 'train.csv'}, line 3: character 'U'" in err
    (bad / "train.csv").write_text("sequence,label\nACGT,0\nACGT\n")
    code, err = _cli([*base, "--task", "mine", "--data", str(bad)], capsys)
    assert code == 2 and "line 3: missing label" in err
    (bad / "train.csv").write_text("sequence,label\nACGT,0\nACGA,1\n")
    (bad / "test.csv").unlink()
    code, err = _cli([*base, "--task", "mine", "--data", str(bad)], capsys)
    assert code == 2 and "no test split" in err
    code, err = _cli(["--model", str(tmp_path), "--task", "gue/H3", "--out", str(out), "--steps", "4",
                      "--warmup-steps", "1"], capsys)
    assert code == 2 and "neither an HF export" in err
    code, err = _cli(["--model", "scratch", "--task", "gue/H3", "--out", str(out)], capsys)
    assert code == 2 and "--scratch-from" in err
    assert not out.exists() and not list(tmp_path.glob(".out.tmp-*"))   # nothing half-written

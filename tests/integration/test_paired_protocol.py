"""The paired protocol, checked directly on real runs (a tiny export, the real gue/prom_core_all):

- null: the same weights in both arms give the same test MCC for every seed, and a paired difference of exactly 0;
- seed s of the pretrained and the scratch arm starts from the same head, sees the same batches in the same order
  and draws the same dropout masks (captured by forward hooks on every Dropout module in the first training step),
  while the encoders differ;
- the arms are paired by seed id, not by position: another order pairs the same runs, a missing seed is an error;
- nt-cv (`benchmark --protocol nt-cv --folds 3`): every training row is in exactly one fold's validation set (the
  rows each fold really trained and selected on, read back from the real train.csv), the reported sd is the sd of
  the folds' test MCCs, and the arms are paired by fold.

prom_core_all (70 bp) learns in 40 steps of a 2-layer 32-wide model, so the MCCs differ from seed to seed and from
fold to fold and the checks are not satisfied by a constant (on prom_300_tata such a model predicts one class).
"""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

import pytest

from tinydnabert.errors import InputError
from tinydnabert.eval import finetune, report
from tinydnabert.eval.common import read_predictions, run_scores
from tinydnabert.eval.finetune import FinetuneConfig, run_finetune
from tinydnabert.eval.stats import paired_interval
from tinydnabert.eval.tasks import get_task

TASK = "gue/prom_core_all"
QUICK = dict(task=TASK, steps=40, batch_size=32, lr=2e-3, warmup_steps=4, eval_every=20, log_every=20,
             max_train_samples=240, eval_batch_size=512, device="cpu")


class Recorder:
    """Wraps finetune.build_classifier and finetune.collate for one arm at a time: per seed, the dropout masks of
    the first training forward (positions a Dropout module zeroed), the encoder's weights' fingerprint, and the
    training batches (token ids, in order)."""

    def __init__(self, monkeypatch):
        import torch

        self.arm, self.masks, self.encoder, self.batches = "", {}, {}, {}
        build, collate = finetune.build_classifier, finetune.collate

        def built(spec, seed):
            model = build(spec, seed)
            key = (self.arm, seed)
            self.encoder[key] = finetune.state_sha256(model.roberta)
            self.masks[key], self.batches[key] = {}, []
            self.current = key
            for name, m in model.named_modules():
                if isinstance(m, torch.nn.Dropout):
                    m.register_forward_hook(self._hook(key, name))
            return model

        def collating(ids, pad_id, device):
            if len(ids) == QUICK["batch_size"]:  # training batches (evaluation comes in eval_batch_size chunks)
                self.batches[self.current].append([list(r) for r in ids])
            return collate(ids, pad_id, device)

        monkeypatch.setattr(finetune, "build_classifier", built)
        monkeypatch.setattr(finetune, "collate", collating)

    def _hook(self, key, name):
        def hook(module, inputs, output):
            if module.training and name not in self.masks[key]:   # the first training forward only
                self.masks[key][name] = (output == 0) & (inputs[0] != 0)
        return hook


@pytest.fixture(scope="module")
def arms(tiny_export: Path, tmp_path_factory):
    """Three real runs of seeds 0 and 1: the export, the same export again (the null pair) and scratch."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # see the one_thread fixture
    out = tmp_path_factory.mktemp("paired")
    try:
        with pytest.MonkeyPatch.context() as mp:
            rec = Recorder(mp)
            results = {}
            for arm, model in (("pretrained", str(tiny_export)), ("again", str(tiny_export)), ("scratch", "scratch")):
                rec.arm = arm
                results[arm] = run_finetune(FinetuneConfig(
                    model=model, scratch_from=str(tiny_export) if model == "scratch" else None, out=str(out / arm),
                    seeds=2, **QUICK))
    finally:
        torch.set_num_threads(threads)
    return results, rec, out, tiny_export


@pytest.mark.timeout(120)
def test_null_the_same_weights_in_both_arms_give_a_zero_difference(arms):
    results, rec, out, _ = arms
    a, b = results["pretrained"], results["again"]
    mccs = [s["test_mcc"] for s in a["seeds"]]
    assert mccs == [s["test_mcc"] for s in b["seeds"]]
    assert mccs[0] != mccs[1] and all(m > 0.05 for m in mccs)     # it learned something, differently per seed
    for sa, sb in zip(a["seeds"], b["seeds"]):
        assert sa["seed"] == sb["seed"]
        for key in ("val_mcc", "best_step", "history", "head_init_sha256", "batches_sha256", "dropout_rng_sha256"):
            assert sa[key] == sb[key], key
        assert (out / "pretrained" / sa["predictions"]).read_bytes() == (out / "again" / sb["predictions"]).read_bytes()
    p = paired_interval(run_scores(a), run_scores(b))
    assert (p["n"], p["mean_diff"], p["sd_diff"], p["low"], p["high"]) == (2, 0.0, 0.0, 0.0, 0.0)
    assert p["verdict"] == "no detectable difference"
    row = report.compare({"task": TASK, "protocol": "finetune"}, b, a, get_task(TASK))   # the benchmark's row
    assert row["gain_over_scratch"] == 0.0 and row["paired"]["mean_diff"] == 0.0 and row["pairs_by"] == "seed"


@pytest.mark.timeout(120)
def test_the_arms_of_a_seed_share_head_batches_and_dropout_masks(arms):
    import torch

    results, rec, _, export = arms
    pre, scr = ({s["seed"]: s for s in results[arm]["seeds"]} for arm in ("pretrained", "scratch"))
    for seed in (0, 1):
        p, s = pre[seed], scr[seed]
        assert rec.encoder[("pretrained", seed)] != rec.encoder[("scratch", seed)]      # the encoders differ ...
        assert rec.encoder[("pretrained", seed)] == rec.encoder[("again", seed)]
        assert p["head_init_sha256"] == s["head_init_sha256"]                          # ... the head does not
        assert p["batches_sha256"] == s["batches_sha256"] and p["dropout_rng_sha256"] == s["dropout_rng_sha256"]
        # the batches themselves: the same rows in the same order, step after step
        assert len(rec.batches[("pretrained", seed)]) == QUICK["steps"]
        assert rec.batches[("pretrained", seed)] == rec.batches[("scratch", seed)]
        # the dropout masks of the first training step: every Dropout module, the same positions in both arms
        mp, ms = rec.masks[("pretrained", seed)], rec.masks[("scratch", seed)]
        assert mp.keys() == ms.keys() and len(mp) >= 5      # embeddings, 2 layers x (attention out, ffn out), head
        assert all(torch.equal(mp[k], ms[k]) for k in mp)
        dropped = sum(int(m.sum()) for m in mp.values()) / sum(m.numel() for m in mp.values())
        assert 0.05 < dropped < 0.15                        # p = 0.1: the masks are real
    # ... and the check is not vacuous: another seed, another head, other batches, other masks
    assert pre[0]["head_init_sha256"] != pre[1]["head_init_sha256"]
    assert pre[0]["batches_sha256"] != pre[1]["batches_sha256"]
    m0, m1 = rec.masks[("pretrained", 0)], rec.masks[("pretrained", 1)]
    assert not all(m0[k].shape == m1[k].shape and torch.equal(m0[k], m1[k]) for k in m0)
    # the recorded head fingerprint is the head a seed is built with
    spec = finetune.classifier_spec(FinetuneConfig(model=str(export), out="o", **QUICK), export, ["0", "1"])
    assert finetune.state_sha256(finetune.build_classifier(spec, 1).classifier) == pre[1]["head_init_sha256"]


@pytest.mark.timeout(60)
def test_seeds_are_paired_by_id_not_position(arms):
    results = arms[0]
    pre, scr = results["pretrained"], results["scratch"]
    task, prow = get_task(TASK), {"task": TASK, "protocol": "finetune"}
    row = report.compare(prow, scr, pre, task)
    by_seed = {s["seed"]: s["test_mcc"] for s in pre["seeds"]}
    diffs = [by_seed[s["seed"]] - s["test_mcc"] for s in scr["seeds"]]
    assert row["paired"]["ids"] == ["seed 0", "seed 1"] and row["paired"]["mean_diff"] == statistics.fmean(diffs)
    assert row["paired"]["sd_diff"] == statistics.stdev(diffs)
    # the scratch arm's seeds listed in the other order: the same pairs, the same row
    flipped = report.compare(prow, {**scr, "seeds": scr["seeds"][::-1]}, pre, task)
    assert flipped["paired"] == row["paired"] and flipped["ours_runs"] == row["ours_runs"]
    # by position they would pair seed 0 with seed 1: the same mean, but another spread and interval (wrong)
    wrong = statistics.stdev(a["test_mcc"] - b["test_mcc"] for a, b in zip(pre["seeds"], scr["seeds"][::-1]))
    assert wrong != pytest.approx(row["paired"]["sd_diff"])
    # a seed one arm lacks is an error naming it, not a silently shorter comparison
    with pytest.raises(InputError, match=r"pretrained has \['seed 1'\] that scratch lacks"):
        report.compare(prow, {**scr, "seeds": scr["seeds"][:1]}, pre, task)


@pytest.mark.timeout(180)
def test_nt_cv_folds_cover_train_once_sd_over_folds_paired_by_fold(tiny_export: Path, tmp_path: Path,
                                                                   benchmark_dir: Path, monkeypatch, capsys):
    from tinydnabert.app import cli

    seen: dict[tuple[str, int], tuple[list[str], list[str], int]] = {}
    run_seed = finetune.run_seed

    def recording(cfg, spec, enc, splits, seed, *a, fold=None, **k):   # what each fold really trained on
        kind = "scratch" if cfg.model == "scratch" else "pretrained"
        seen[(kind, fold)] = (splits.train[0], splits.val[0], len(splits.test[0]))
        return run_seed(cfg, spec, enc, splits, seed, *a, fold=fold, **k)

    monkeypatch.setattr(finetune, "run_seed", recording)
    out = tmp_path / "bench"
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in QUICK.items() if k != "task"]
    assert cli.main(["benchmark", "--model", str(tiny_export), "--tasks", TASK, "--out", str(out),
                     "--protocol", "nt-cv", "--folds", "3", *flags]) == 0
    res = json.loads((out / "nt_benchmark.json").read_text())
    (row,) = res["tasks"]
    assert row["status"] == "done" and row["protocol"] == "nt-cv" and row["pairs_by"] == "fold"

    with open(benchmark_dir / "GUE" / "prom" / "prom_core_all" / "train.csv", newline="") as f:
        file_rows = [(r["sequence"].upper(), r["label"]) for r in csv.DictReader(f)]
    runs = {kind: json.loads((Path(row["runs"][kind]) / "results.json").read_text()) for kind in ("scratch",
                                                                                                  "pretrained")}
    listings = {kind: json.loads((Path(row["runs"][kind]) / "folds.json").read_text()) for kind in runs}
    assert listings["scratch"] == listings["pretrained"]                   # one fold assignment for both arms
    used, folds = listings["pretrained"]["train_rows"], listings["pretrained"]["folds"]
    assert len(used) == len(set(used)) == 240 and all(0 <= i < len(file_rows) for i in used)
    # every training row in exactly one fold's validation set
    assert sorted(i for fold in folds for i in fold) == sorted(used)
    assert [len(f) for f in folds] == [80, 80, 80]
    classes = {lab for _, lab in file_rows}
    for k, fold in enumerate(folds):
        for c in classes:  # stratified: each fold holds a third of each class, to within one row
            assert abs(sum(file_rows[i][1] == c for i in fold) - sum(file_rows[i][1] == c for i in used) / 3) <= 1
        for kind in runs:  # fold k trained on the other folds' rows and selected on its own: the real rows
            train, val, n_test = seen[(kind, k)]
            assert val == [file_rows[i][0] for i in fold]
            assert sorted(train) == sorted(file_rows[i][0] for i in used if i not in set(fold))
            assert n_test == 5920                                          # every fold scored on the test split
    # the reported sd is the sd of the folds' test MCCs (each recomputed from its saved predictions)
    from sklearn.metrics import matthews_corrcoef

    for kind, key in (("scratch", "scratch"), ("pretrained", "ours")):
        r = runs[kind]
        assert r["protocol"] == "nt-cv" and r["cv"]["folds"] == 3 and r["counts"] == {"train": 240, "test": 5920,
                                                                                        "folds": 3}
        mccs = [matthews_corrcoef(*read_predictions(Path(row["runs"][kind]) / f"predictions/fold{k}.csv"))
                for k in range(3)]
        assert [f["test_mcc"] for f in r["seeds"]] == pytest.approx(mccs, abs=1e-12)
        assert [(f["fold"], f["seed"]) for f in r["seeds"]] == [(0, 0), (1, 1), (2, 2)]
        assert len(set(mccs)) == 3                                         # the folds differ: sd is not trivially 0
        assert r["test_mcc_sd"] == pytest.approx(statistics.stdev(mccs), abs=1e-12) == row[f"{key}_sd"]
        assert r["cv"]["test_mcc_2sd"] == pytest.approx(2 * statistics.stdev(mccs))
        assert row[f"{key}_mcc"] == pytest.approx(statistics.fmean(mccs))
    # paired by fold: fold k of both arms is one experiment (same rows, head, batches), and the gain pairs them
    for fs, fp in zip(runs["scratch"]["seeds"], runs["pretrained"]["seeds"]):
        assert fs["fold"] == fp["fold"] and fs["head_init_sha256"] == fp["head_init_sha256"]
        assert fs["batches_sha256"] == fp["batches_sha256"]
    assert runs["scratch"]["cv"]["per_fold"] == runs["pretrained"]["cv"]["per_fold"]
    p = row["paired"]
    assert p["ids"] == ["fold 0", "fold 1", "fold 2"] and p["n"] == 3
    assert p["mean_diff"] == pytest.approx(statistics.fmean(
        fp["test_mcc"] - fs["test_mcc"] for fs, fp in zip(runs["scratch"]["seeds"], runs["pretrained"]["seeds"])))
    assert p["sd_diff"] == pytest.approx(statistics.stdev(
        fp["test_mcc"] - fs["test_mcc"] for fs, fp in zip(runs["scratch"]["seeds"], runs["pretrained"]["seeds"])))
    # the table says which protocol made the number, shows mean ± 2 sd, and keeps the local task's SOTA indicative
    md = (out / "nt_benchmark.md").read_text()
    assert f"| {TASK} | nt-cv | {row['scratch_mcc']:.3f} ± {2 * row['scratch_sd']:.3f} |" in md
    assert "3-fold cross-validation" in md and "over 3 folds" in md
    assert row["sota_comparable"] is False and "other data" in row["sota_source"]
    with open(out / "nt_benchmark.csv", newline="") as f:
        assert next(csv.DictReader(f))["protocol"] == "nt-cv"
    assert Path(row["runs"]["pretrained"]).name == "nt-cv-pretrained"
    capsys.readouterr()
    # seeds are not a repeat of nt-cv: the folds are
    assert cli.main(["benchmark", "--model", str(tiny_export), "--tasks", TASK, "--out", str(out),
                     "--protocol", "nt-cv", "--seeds", "3"]) == 2
    assert "--protocol nt-cv" in capsys.readouterr().err

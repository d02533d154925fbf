"""The evaluation configs (eval/common.py): every setting given to the benchmark reaches the config of every arm
it runs, under both protocols (--strands among them); a finished run is reused only under the same protocol settings
(the data revision among them), a run saved before a setting existed as that setting's default; one token limit and
one precision policy for every encoder. Fast: no model, no data read."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from tinydnabert.config import dataclass_from_args, to_flags
from tinydnabert.errors import InputError
from tinydnabert.eval import benchmark
from tinydnabert.eval.common import (
    EvalSettings,
    finished,
    protocol_keys,
    read_predictions,
    write_predictions,
)
from tinydnabert.eval.finetune import FinetuneConfig, FinetuneSettings
from tinydnabert.eval.probe import ProbeConfig
from tinydnabert.eval.tasks import get_task

# A value other than the default for every shared setting: a setting added to EvalSettings must be given one
# here (test_every_shared_setting_is_asked_for), and then this test proves it reaches both protocols.
SHARED = dict(seed=7, seeds=3, val_fraction=0.2, validation="dev", max_train_samples=100, max_length=64,
              hub_revision="0123abcd", strands="both", device="cpu", bf16=False, cache_dir="/cache")
FINETUNE = dict(steps=40, batch_size=8, lr=3e-4, warmup_steps=4, weight_decay=0.01, grad_clip=0.5, eval_every=10,
                eval_batch_size=32, log_every=5)


def _bench(tmp_path: Path, **values) -> benchmark.BenchmarkConfig:
    """The BenchmarkConfig a `tinydnabert benchmark` command line with these values parses into."""
    parser = argparse.ArgumentParser()
    benchmark.add_arguments(parser)
    argv = to_flags(benchmark.BenchmarkConfig, model=str(tmp_path / "export"), out=str(tmp_path / "bench"), **values)
    return dataclass_from_args(benchmark.BenchmarkConfig, parser.parse_args(argv))


def test_every_shared_setting_is_asked_for():
    assert set(SHARED) == {f.name for f in dataclasses.fields(EvalSettings)}
    assert set(SHARED) | set(FINETUNE) == {f.name for f in dataclasses.fields(FinetuneSettings)}


@pytest.mark.parametrize("protocol", ["finetune", "probe"])
@pytest.mark.parametrize("kind", benchmark.KINDS)
def test_benchmark_settings_reach_every_arm_config(tmp_path: Path, kind: str, protocol: str):
    b = _bench(tmp_path, tasks="gue/prom_300_tata", data=str(tmp_path / "GUE"), protocol="both",
               probe_c_grid="0.5,2", **SHARED, **FINETUNE)
    task = get_task("gue/prom_300_tata")
    cfg = benchmark.arm_config(b, task, kind, protocol)
    assert type(cfg) is (ProbeConfig if protocol == "probe" else FinetuneConfig)
    for name, value in SHARED.items():
        assert getattr(cfg, name) == value, name
    assert cfg.hub_revision == "0123abcd"  # the field that once fell through between the protocols
    if protocol == "finetune":
        assert {k: getattr(cfg, k) for k in FINETUNE} == FINETUNE
    else:
        assert cfg.c_grid == "0.5,2" and cfg.batch_size == ProbeConfig.__dataclass_fields__["batch_size"].default
    export = str(tmp_path / "export")
    assert (cfg.model, cfg.scratch_from) == (("scratch", export) if kind == "scratch" else (export, None))
    assert cfg.task == "gue/prom_300_tata" and cfg.overwrite
    assert Path(cfg.out) == benchmark.run_dir(tmp_path / "bench", task, kind, protocol)
    assert cfg.data == str(tmp_path / "GUE" / "prom" / "prom_300_tata")  # GUE's own layout under --data


def test_existing_benchmark_flags_parse(tmp_path: Path):
    """The flags the tests, the quickstart and the README use keep their names and meanings."""
    parser = argparse.ArgumentParser()
    benchmark.add_arguments(parser)
    args = parser.parse_args(["--model", "M", "--tasks", "gue/H3", "--data", "G", "--out", "O", "--steps", "8",
                              "--batch-size", "16", "--lr", "0.001", "--warmup-steps", "1", "--eval-every", "4",
                              "--seeds", "2", "--seed", "3", "--max-train-samples", "200", "--log-every", "4",
                              "--kinds", "scratch", "--protocol", "probe", "--probe-c-grid", "1", "--device", "cpu",
                              "--cache-dir", "C", "--hub-revision", "v1"])
    b = dataclass_from_args(benchmark.BenchmarkConfig, args)
    assert (b.steps, b.batch_size, b.lr, b.seeds, b.seed, b.arms, b.protocols) == (8, 16, 0.001, 2, 3, ["scratch"],
                                                                                   ["probe"])
    assert (b.hub_revision, b.cache_dir, b.probe_c_grid, b.data) == ("v1", "C", "1", "G")
    d = dataclass_from_args(benchmark.BenchmarkConfig, parser.parse_args(["--model", "M"]))
    assert (d.out, d.tasks, d.seeds, d.steps, d.hub_revision, d.protocols, d.arms) == (
        "runs/benchmark", "all", 1, 5000, "main", ["finetune"], ["scratch", "pretrained"])
    with pytest.raises(InputError, match="--kinds 'pretrain'"):
        dataclass_from_args(benchmark.BenchmarkConfig, parser.parse_args(["--model", "M", "--kinds", "pretrain"]))


def test_shared_validation_names_the_command():
    with pytest.raises(InputError, match="probe: --hub-revision is empty"):
        ProbeConfig(model="m", task="t", out="o", hub_revision=" ")
    with pytest.raises(InputError, match="finetune: --val-fraction 0.7"):
        FinetuneConfig(model="m", task="t", out="o", val_fraction=0.7)
    with pytest.raises(InputError, match="probe: --model scratch needs --scratch-from"):
        ProbeConfig(model="scratch", task="t", out="o")
    assert ProbeConfig(model="m", task="t", out="o").seeds == 3                 # each protocol's own default
    assert FinetuneConfig(model="m", task="t", out="o").seeds == 1


def _finished_run(d: Path, section: str, saved: dict) -> Path:
    d.mkdir(parents=True)
    (d / "results.json").write_text(json.dumps({"test_mcc_mean": 0.5}))
    (d / "config.json").write_text(json.dumps({section: saved}))
    return d


def test_a_run_is_reused_only_under_the_same_data_revision(tmp_path: Path):
    assert "hub_revision" in protocol_keys(ProbeConfig) and "hub_revision" in protocol_keys(FinetuneConfig)
    assert not {"device", "cache_dir", "out", "overwrite", "bf16"} & set(protocol_keys(ProbeConfig))
    cfg = ProbeConfig(model="m", task="t", out=str(tmp_path / "p"))
    # a probe run written before ProbeConfig had hub_revision: it read "main", and is reused as that
    saved = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("hub_revision", "bf16")}
    d = _finished_run(tmp_path / "p", "probe", saved)
    assert finished(d, cfg) == {"test_mcc_mean": 0.5}
    assert finished(d, dataclasses.replace(cfg, device="cpu", cache_dir="/elsewhere")) is not None
    with pytest.raises(InputError, match="finished under other settings.*hub_revision.*'main', 'v2'"):
        finished(d, dataclasses.replace(cfg, hub_revision="v2"))
    assert finished(tmp_path / "nothing", cfg) is None


@pytest.mark.parametrize("cls, section", [(ProbeConfig, "probe"), (FinetuneConfig, "finetune")])
def test_a_run_saved_before_strands_existed_is_reused_as_forward(tmp_path: Path, cls, section: str):
    """Old benchmark run directories stay usable: a config.json without `strands` (or, for the probe, without
    `long` and `stride`) ran forward, with no windows then, and is reused as that; --strands both is another
    protocol, so the old run is not passed off as one."""
    assert {"strands"} <= set(protocol_keys(cls))
    cfg = cls(model="m", task="t", out=str(tmp_path / section))
    new_keys = ("strands", "long", "stride")
    saved = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in new_keys}
    d = _finished_run(tmp_path / section, section, saved)
    assert cfg.strands == "forward" and finished(d, cfg) == {"test_mcc_mean": 0.5}
    with pytest.raises(InputError, match="finished under other settings.*strands.*'forward', 'both'"):
        finished(d, dataclasses.replace(cfg, strands="both"))
    with pytest.raises(InputError, match="--strands 'reverse': use forward or both"):
        dataclasses.replace(cfg, strands="reverse")


def test_one_token_limit_and_one_precision_policy():
    import contextlib

    import torch
    from transformers import BertConfig, RobertaConfig

    from tinydnabert.eval.encoder import autocast_for, token_limit

    # RoBERTa numbers positions from pad_token_id + 1: 258 positions with pad id 1 hold 256 tokens
    assert token_limit(RobertaConfig(max_position_embeddings=258, pad_token_id=1)) == 256
    assert token_limit(RobertaConfig(max_position_embeddings=258, pad_token_id=1), 100) == 100
    assert token_limit(BertConfig(max_position_embeddings=512, pad_token_id=0)) == 512
    assert autocast_for(torch.device("cpu"), True) is contextlib.nullcontext       # CPU: fp32
    assert autocast_for(torch.device("cuda"), False) is contextlib.nullcontext     # --no-bf16: fp32


def test_predictions_round_trip(tmp_path: Path):
    y, pred = np.array([0, 1, 1]), np.array([0, 0, 1])
    write_predictions(tmp_path / "p" / "seed0.csv", y, pred, ["neg", "pos"])
    assert read_predictions(tmp_path / "p" / "seed0.csv") == (["neg", "pos", "pos"], ["neg", "neg", "pos"])


@pytest.mark.parametrize("kind", benchmark.KINDS)
def test_nt_cv_arm_is_finetune_with_folds_and_its_own_run_directory(tmp_path: Path, kind: str):
    b = _bench(tmp_path, tasks="gue/prom_300_tata", protocol="nt-cv", folds=4, **FINETUNE)
    task = get_task("gue/prom_300_tata")
    cfg = benchmark.arm_config(b, task, kind, "nt-cv")
    assert type(cfg) is FinetuneConfig and (cfg.cv, cfg.seeds, cfg.protocol_name) == (4, 1, "nt-cv")
    assert {k: getattr(cfg, k) for k in FINETUNE} == FINETUNE
    assert Path(cfg.out).name == f"nt-cv-{kind}" and b.protocols == ["nt-cv"] and b.repeats == "4 folds"
    assert benchmark.arm_config(b, task, kind, "finetune").cv == 0          # the other protocols never cut folds
    assert "cv" in protocol_keys(FinetuneConfig)   # a finished run is reused only with the same number of folds
    assert _bench(tmp_path).folds == 10                                       # the NT paper's 10 by default


def test_cv_settings_are_checked():
    assert FinetuneConfig(model="m", task="t", out="o").protocol_name == "finetune"
    with pytest.raises(InputError, match="finetune: --cv 1: use 0"):
        FinetuneConfig(model="m", task="t", out="o", cv=1)
    with pytest.raises(InputError, match="--cv 10 with --seeds 3: the folds are the repeats"):
        FinetuneConfig(model="m", task="t", out="o", cv=10, seeds=3)
    with pytest.raises(InputError, match="--cv 10 with --validation dev"):
        FinetuneConfig(model="m", task="t", out="o", cv=10, validation="dev")
    parser = argparse.ArgumentParser()
    benchmark.add_arguments(parser)
    for argv, message in ((["--protocol", "nt-cv", "--seeds", "3"], "drop --seeds and --validation"),
                          (["--folds", "1"], "--folds 1 must be >= 2")):
        with pytest.raises(InputError, match=message):
            dataclass_from_args(benchmark.BenchmarkConfig, parser.parse_args(["--model", "M", *argv]))


def test_cv_folds_partition_the_training_rows_stratified_and_seeded():
    from tinydnabert.eval.common import cv_folds
    from tinydnabert.eval.tasks import TaskData
    from tinydnabert.eval.tasks.files import Split

    labels = [0] * 70 + [1] * 30                       # sorted by class, as task files often are
    seqs = ["ACGT" * (1 + i % 5) for i in range(100)]
    data = TaskData(task=get_task("gue/prom_300_tata"), labels=[0, 1], source="mem",
                    splits={"train": Split(seqs, labels, "mem"), "test": Split(seqs[:5], labels[:5], "mem")})
    folds = cv_folds(data, seed=3, n_folds=10)
    val = [folds.val_rows(k) for k in range(10)]
    assert sorted(i for v in val for i in v) == list(range(100))             # each row in exactly one fold
    assert folds.stratified and all(sum(labels[i] for i in v) == 3 for v in val)   # 3 of the 30 ones per fold
    again = cv_folds(data, seed=3, n_folds=10)
    assert [again.val_rows(k) for k in range(10)] == val and folds.record() == again.record()
    assert cv_folds(data, seed=4, n_folds=10).record()["per_fold"] != folds.record()["per_fold"]
    tr, va = folds.split(2)
    assert sorted([*tr.tolist(), *va.tolist()]) == list(range(100)) and folds.whole.test[1].tolist() == labels[:5]
    sub = cv_folds(data, seed=3, n_folds=5, max_train_samples=50)            # the subset first, then its folds
    assert len(sub.rows) == 50 and sorted(i for k in range(5) for i in sub.val_rows(k)) == sorted(sub.rows.tolist())
    with pytest.raises(InputError, match="--cv/--folds 200: need 2 <= folds <= the 100 training rows"):
        cv_folds(data, seed=0, n_folds=200)

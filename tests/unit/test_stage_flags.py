"""The quickstart builds each stage's command from that stage's config dataclass: every command it would run
parses with the stage's own parser into the preset's values, and a renamed field fails here, in a second,
not minutes into `quickstart --smoke`."""

from __future__ import annotations

import argparse
import dataclasses
import json

import pytest

from tinydnabert.app import quickstart as qs
from tinydnabert.config import to_flags


@dataclasses.dataclass
class _Toy:
    vocab_size: int = 1
    fasta: list = dataclasses.field(default_factory=list)
    progress: bool = True


def test_to_flags_spells_every_kind_of_field():
    assert to_flags(_Toy, vocab_size=3, fasta=["a", "b"], progress=False) == [
        "--vocab-size", "3", "--fasta", "a", "b", "--no-progress"]


def test_to_flags_refuses_a_field_the_stage_does_not_have():
    with pytest.raises(TypeError, match="no field vocab"):
        to_flags(_Toy, vocab=3)


def _parse(module, argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return parser.parse_args(argv)


def _after(cmd: list[str], word: str) -> list[str]:
    return cmd[cmd.index(word) + 1:]


@pytest.fixture(params=["smoke", "cpu", "gpu"])
def quickstart(request, tmp_path) -> qs.Quickstart:
    cfg = qs.QuickstartConfig(out=str(tmp_path / "qs"), smoke=request.param == "smoke",
                              device="cpu" if request.param == "cpu" else "gpu", seed=7)
    q = qs.Quickstart(cfg, log=lambda _: None)
    q.fasta = tmp_path / "genome.fa.gz"
    return q


def test_preprocess_command_parses_into_the_preset(quickstart):
    from tinydnabert.prep import preprocess

    args = _parse(preprocess, _after(quickstart.cmd_preprocess(), "preprocess"))
    p = quickstart.preset
    assert (args.vocab_size, args.min_frequency, args.val_fraction, args.samples_per_shard, args.seed) == (
        p.vocab_size, p.min_frequency, p.val_fraction, p.samples_per_shard, 7)
    assert args.progress is False and args.workers == 0 and args.fasta[0].endswith("genome.fa.gz")


def test_pretrain_command_parses_into_the_preset(quickstart):
    from tinydnabert.pretrain import train

    cmd = quickstart.cmd_pretrain(port=12345)
    script = next(c for c in cmd if c.endswith("pretrain.py"))
    args = _parse(train, _after(cmd, script))
    cfg, model, data = train.configs_from_args(args)  # what the launcher builds, the recipe filled in
    p = quickstart.preset
    assert (cfg.max_steps, cfg.log_interval, cfg.eval_interval, cfg.seed, cfg.export) == (
        p.pretrain_steps, p.log_interval, p.eval_interval, 7, False)
    assert (data.seq_len, data.val_batches, data.num_workers) == (p.seq_len, p.val_batches, 1)
    assert {k: getattr(model, k) for k in p.model} == p.model and cfg.recipe == p.recipe
    if p.name == "cpu":  # the recipe benchmarks/recipes.py measured: ModernBERT, GeGLU 344, 15% masking
        assert (model.arch, model.intermediate_size, data.mlm_probability) == ("modernbert", 344, 0.15)
    assert args.deepspeed_config.endswith("ds_config.json") and "--master_port" in cmd
    ds = json.loads(quickstart.write_ds_config().read_text())
    warmup = max(1, p.pretrain_steps // 10)
    if p.hold_lr:  # the LR held after the warmup, as the recipe was measured
        assert ds["scheduler"]["type"] == "WarmupLR" and ds["scheduler"]["params"]["warmup_num_steps"] == warmup
    else:
        assert ds["scheduler"]["params"]["total_num_steps"] == p.pretrain_steps


def test_benchmark_command_parses_into_the_preset(quickstart):
    from tinydnabert.eval import benchmark

    args = _parse(benchmark, _after(quickstart.cmd_finetune(), "benchmark"))
    p = quickstart.preset
    assert (args.steps, args.batch_size, args.lr, args.seeds, args.seed, args.protocol, args.max_train_samples) == (
        p.finetune_steps, p.finetune_batch, p.finetune_lr, p.seeds, 7, p.protocol, p.finetune_max_train)
    assert args.tasks == quickstart.tasks


def test_download_and_export_commands_parse(quickstart):
    from tinydnabert.prep import download
    from tinydnabert.pretrain import export

    args = _parse(download, _after(quickstart.cmd_download(), "download"))
    assert args.genome and args.out
    args = _parse(export, _after(quickstart.cmd_export(), "export"))
    assert args.out.endswith("export")

"""Bad input to pretraining fails before any process group exists, with a message that says what to do: so these
run in this process, with no launcher (the same checks under the real launcher: tests/integration/test_faults.py)."""

from __future__ import annotations

import argparse
import shutil

import pytest

from tests.helpers import MODEL_FLAGS, tiny_ds_config
from tinydnabert.errors import InputError


def _pretrain(tmp_path, data, ds=None, **kw):
    from tinydnabert.pretrain.data import DataConfig
    from tinydnabert.pretrain.model import ModelConfig
    from tinydnabert.pretrain.train import PretrainConfig, pretrain

    ds = ds or tiny_ds_config(tmp_path / "ds.json")
    return pretrain(PretrainConfig(data=str(data), out=str(tmp_path / "run"), **kw), ModelConfig.tiny(), str(ds),
                    DataConfig(seq_len=128, num_workers=0))


def test_missing_or_empty_shards_dir(tmp_path, one_process_env):
    one_process_env.setenv("WORLD_SIZE", "2")
    with pytest.raises(InputError, match="shards directory not found.*tinydnabert preprocess"):
        _pretrain(tmp_path, tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no manifest"):
        _pretrain(tmp_path, tmp_path / "empty")


def test_truncated_shard_and_tokenizer_mismatch(tmp_path, hg38_shards, one_process_env):
    one_process_env.setenv("WORLD_SIZE", "2")
    data = tmp_path / "shards"
    shutil.copytree(hg38_shards, data)
    shard = sorted((data / "train").glob("shard-*.tar"))[3]
    shard.write_bytes(shard.read_bytes()[:1000])
    with pytest.raises(InputError, match=f"{shard.name}.*truncated"):
        _pretrain(tmp_path, data)
    shutil.rmtree(data)
    shutil.copytree(hg38_shards, data)
    tok = data / "tokenizer" / "tokenizer.json"
    tok.write_text(tok.read_text().replace('"<unk>"', '"<UNK>"', 1))
    with pytest.raises(InputError, match="tokenizer sha256"):
        _pretrain(tmp_path, data)


def test_batch_not_divisible_by_ranks_fails_before_start(tmp_path, hg38_shards, one_process_env):
    one_process_env.setenv("WORLD_SIZE", "3")
    with pytest.raises(InputError, match=r"not divisible by train_micro_batch_size_per_gpu 4 x 3 ranks"):
        _pretrain(tmp_path, hg38_shards)


def test_existing_run_needs_resume(tmp_path, hg38_shards, one_process_env):
    one_process_env.setenv("WORLD_SIZE", "2")
    (tmp_path / "run" / "checkpoints" / "step00000010").mkdir(parents=True)
    with pytest.raises(InputError, match="already holds checkpoints; pass --resume"):
        _pretrain(tmp_path, hg38_shards)
    with pytest.raises(InputError, match="not a tinydnabert checkpoint"):
        _pretrain(tmp_path, hg38_shards, resume="latest")


def test_non_finite_loss_stops_with_recovery_advice(tmp_path):
    from tinydnabert.pretrain.metrics import check_finite

    check_finite(4.2, 10, tmp_path)
    for bad in (float("nan"), float("inf")):
        with pytest.raises(InputError, match="non-finite training loss .* at step 10.*--resume"):
            check_finite(bad, 10, tmp_path)


def test_init_from_refuses_another_tokenizer_or_no_export(tmp_path, hg38_shards, tiny_export, one_process_env,
                                                          capsys):
    """--init-from is checked (tokenizer, shape, files) before any training: `launch/pretrain.py`'s exit 2 and
    one `error:` line, and nothing written into the run (tests/integration/test_init_from.py runs a good one)."""
    from tinydnabert.app import cli
    from tinydnabert.pretrain import train

    ds = tiny_ds_config(tmp_path / "ds.json")

    def pretrain(out, *extra: str) -> tuple[int, str]:
        capsys.readouterr()
        rc = cli.run_stage(train, argparse.ArgumentParser(), ["--deepspeed_config", str(ds), "--data",
                                                              str(hg38_shards), "--out", str(out), "--max-steps", "1",
                                                              "--num-workers", "0", *extra])
        return rc, capsys.readouterr().err

    # tiny_export has another tokenizer (vocab 128, trained on other segments) than the hg38 shards (vocab 256)
    rc, err = pretrain(tmp_path / "x", "--init-from", str(tiny_export), *MODEL_FLAGS)
    assert rc == 2 and "is not the shards' tokenizer" in err and "--tokenizer" in err, err
    assert not (tmp_path / "x" / "checkpoints").exists()
    rc, err = pretrain(tmp_path / "y", "--init-from", str(tmp_path / "nowhere"))
    assert rc == 2 and "no config.json" in err, err

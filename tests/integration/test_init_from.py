"""Continued pretraining (--init-from): the first step's loss is the exported model's, not a random one's;
the run records where it started; a tokenizer or shape that does not fit is refused before any training."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from tinydnabert.pretrain import ds_config

REPO = Path(__file__).resolve().parents[2]
MODEL = ["--hidden-size", "64", "--num-hidden-layers", "2", "--num-attention-heads", "2", "--intermediate-size", "128"]


def _port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def _pretrain(shards: Path, out: Path, cfg: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_PORT": _port()}
    return subprocess.run([sys.executable, str(REPO / "launch" / "pretrain.py"), "--deepspeed_config", str(cfg),
                           "--data", str(shards), "--out", str(out), "--seq-len", "128", "--num-workers", "0",
                           "--val-batches", "2", "--eval-interval", "0", "--log-interval", "1", *extra],
                          capture_output=True, text=True, env=env, timeout=300)


def _first_losses(run: Path) -> list[float]:
    from tinydnabert.app.plots import read_scalars

    return read_scalars(run)["train/loss"][1]


def test_init_from_starts_at_the_exported_models_loss(tmp_path, hg38_shards):
    cfg = tmp_path / "ds.json"
    cfg.write_text(json.dumps(ds_config.derive(ds_config.shipped(ds_config.CPU_CONFIG), batch=8, micro=8, lr=3e-3,
                                               warmup=3, steps=60)))
    a = _pretrain(hg38_shards, tmp_path / "a", cfg, "--max-steps", "60", "--save-interval", "60", *MODEL)
    assert a.returncode == 0, a.stderr[-3000:]
    trained = _first_losses(tmp_path / "a")
    b = _pretrain(hg38_shards, tmp_path / "b", cfg, "--max-steps", "2", "--init-from", str(tmp_path / "a" / "export"),
                  "--no-export", *MODEL)
    assert b.returncode == 0, b.stderr[-3000:]
    c = _pretrain(hg38_shards, tmp_path / "c", cfg, "--max-steps", "2", "--no-export", *MODEL)
    assert c.returncode == 0, c.stderr[-3000:]
    started, fresh = _first_losses(tmp_path / "b")[0], _first_losses(tmp_path / "c")[0]
    assert fresh - trained[0] < 0.2  # a random start is where run a started
    assert started < fresh - 0.5 and abs(started - trained[-1]) < 0.5, (started, fresh, trained[-1])
    record = json.loads((tmp_path / "b" / "config.json").read_text())
    assert record["pretrain"]["init_from"] == str(tmp_path / "a" / "export")
    assert list(record["init_from"]["files"]) == ["model.safetensors"]
    assert len(record["init_from"]["files"]["model.safetensors"]) == 64


def test_init_from_refuses_another_shape_or_tokenizer(tmp_path, hg38_shards, tiny_export):
    cfg = tmp_path / "ds.json"
    cfg.write_text(json.dumps(ds_config.derive(ds_config.shipped(ds_config.CPU_CONFIG), batch=8, micro=8, steps=10)))
    # tiny_export has another tokenizer (vocab 128, trained on other segments) than the hg38 shards (vocab 256)
    r = _pretrain(hg38_shards, tmp_path / "x", cfg, "--max-steps", "1", "--init-from", str(tiny_export), *MODEL)
    assert r.returncode == 2 and "is not the shards' tokenizer" in r.stderr and "--tokenizer" in r.stderr
    assert not (tmp_path / "x" / "checkpoints").exists()
    r = _pretrain(hg38_shards, tmp_path / "y", cfg, "--max-steps", "1", "--init-from", str(tmp_path / "nowhere"))
    assert r.returncode == 2 and "no config.json" in r.stderr

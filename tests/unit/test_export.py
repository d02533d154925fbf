"""Export: checkpoint -> plain HF directory, safely (weights_only), only from complete checkpoints.

The end-to-end check (a real launcher run's export against the engine's logits) is in test_pretrain.py;
here a checkpoint is laid out by hand exactly as train.py writes it, so each failure case is cheap.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tinydnabert.config import config_to_dict
from tinydnabert.errors import InputError
from tinydnabert.pretrain.checkpoint import Marker, is_checkpoint
from tinydnabert.pretrain.export import export_checkpoint
from tinydnabert.pretrain.model import MaskedLMObjective, ModelConfig, build_model


def make_checkpoint(run: Path, tokenizer_dir: Path, step: int = 5) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(1)
    cfg = ModelConfig.tiny(vocab_size=256)
    objective = MaskedLMObjective(build_model(cfg))  # what the engine wraps: keys start with "net."
    tag = run / "checkpoints" / f"step{step:08d}"
    tag.mkdir(parents=True)
    torch.save({"module": objective.state_dict(), "ds_version": "0.19.8", "step": step},
               tag / "mp_rank_00_model_states.pt")
    shutil.copytree(tokenizer_dir, tag / "tokenizer")
    Marker(step=step, tokens_seen=step * 2048, batches_consumed_per_rank=step, world_size=1, global_batch=16,
           seq_len=128, model_config=config_to_dict(cfg), configs={}, ds_config={}).write(tag)
    (run / "checkpoints" / "latest").write_text(tag.name + "\n")
    return tag, objective.net.eval()


@pytest.fixture
def checkpoint(tmp_path, hg38_shards):
    return make_checkpoint(tmp_path / "run", hg38_shards / "tokenizer")


def test_export_gives_the_same_logits_with_plain_transformers(tmp_path, checkpoint):
    tag, net = checkpoint
    out = export_checkpoint(tmp_path / "run", tmp_path / "hf")  # a run dir resolves to its latest
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    assert json.loads((out / "config.json").read_text())["pad_token_id"] == 1
    ids = torch.randint(5, 256, (2, 40))
    with torch.no_grad():
        expected = net(input_ids=ids).logits
    torch.save({"ids": ids, "logits": expected}, tmp_path / "probe.pt")
    code = f"""
import sys, torch
from transformers import AutoModelForMaskedLM, AutoTokenizer
p = torch.load({str(tmp_path / 'probe.pt')!r}, weights_only=True)
m = AutoModelForMaskedLM.from_pretrained({str(out)!r}).eval()
AutoTokenizer.from_pretrained({str(out)!r})
with torch.no_grad():
    assert torch.allclose(m(input_ids=p["ids"]).logits, p["logits"], atol=1e-6)
assert not any(k.startswith("tinydnabert") for k in sys.modules)
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]


def test_is_checkpoint_accepts_run_checkpoints_and_tag_dirs(tmp_path, checkpoint):
    tag, _ = checkpoint
    assert is_checkpoint(tag) and is_checkpoint(tag.parent) and is_checkpoint(tag.parent.parent)
    assert not is_checkpoint(tmp_path) and not is_checkpoint(tmp_path / "nowhere")


def test_incomplete_checkpoint_is_refused(tmp_path, checkpoint):
    tag, _ = checkpoint
    (tag / "tinydnabert_checkpoint.json").unlink()  # as if the save was killed before the marker
    assert not is_checkpoint(tag)
    with pytest.raises(InputError, match="incomplete"):
        export_checkpoint(tag, tmp_path / "hf")
    with pytest.raises(InputError, match="not a complete checkpoint"):
        export_checkpoint(tmp_path / "run", tmp_path / "hf")  # `latest` names it
    assert not (tmp_path / "hf").exists()


def test_untrusted_pickle_is_not_executed(tmp_path, checkpoint):
    tag, _ = checkpoint
    marker = tmp_path / "PWNED"

    class Evil:  # unpickling it would call Path.touch(marker): arbitrary code
        def __reduce__(self):
            return (Path.touch, (marker,))

    torch.save({"module": {"x": Evil()}}, tag / "mp_rank_00_model_states.pt")
    with pytest.raises(InputError, match="cannot be read as plain tensors"):
        export_checkpoint(tag, tmp_path / "hf")
    assert not marker.exists() and not (tmp_path / "hf").exists()


def test_corrupt_weights_and_existing_output(tmp_path, checkpoint):
    tag, _ = checkpoint
    (tmp_path / "hf").mkdir()
    with pytest.raises(InputError, match="already exists"):
        export_checkpoint(tag, tmp_path / "hf")
    (tag / "mp_rank_00_model_states.pt").write_bytes(b"\x00" * 100)
    with pytest.raises(InputError, match="mp_rank_00_model_states.pt"):
        export_checkpoint(tag, tmp_path / "hf2")


def test_cli_export(tmp_path, checkpoint):
    from tinydnabert.app.cli import main

    tag, _ = checkpoint
    assert main(["export", str(tag), str(tmp_path / "hf")]) == 0
    assert (tmp_path / "hf" / "model.safetensors").is_file()
    assert main(["export", str(tmp_path / "nothing"), str(tmp_path / "hf3")]) == 2


def test_corrupt_marker_is_named(tmp_path, checkpoint):
    tag, _ = checkpoint
    (tag / "tinydnabert_checkpoint.json").write_text('{"step": 5}')  # no model_config
    with pytest.raises(InputError, match=r"tinydnabert_checkpoint.json: not a valid checkpoint marker"):
        export_checkpoint(tag, tmp_path / "hf")
    (tag / "tinydnabert_checkpoint.json").write_text("{ not json")
    with pytest.raises(InputError, match=r"tinydnabert_checkpoint.json: not a valid checkpoint marker"):
        export_checkpoint(tag, tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


def test_bf16_checkpoint_without_optimizer_states_is_named(tmp_path, checkpoint):
    """A bf16 module is a rounded copy: the export needs the fp32 masters, and says where it looked."""
    tag, _ = checkpoint
    states = torch.load(tag / "mp_rank_00_model_states.pt", weights_only=True)
    states["module"] = {k: v.bfloat16() for k, v in states["module"].items()}
    torch.save(states, tag / "mp_rank_00_model_states.pt")
    with pytest.raises(InputError, match=r"no DeepSpeed optimizer states \(\*zero_pp_rank_\*"):
        export_checkpoint(tag, tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


def test_untrusted_optimizer_states_are_not_executed(tmp_path, checkpoint):
    tag, _ = checkpoint
    states = torch.load(tag / "mp_rank_00_model_states.pt", weights_only=True)
    states["module"] = {k: v.bfloat16() for k, v in states["module"].items()}
    torch.save(states, tag / "mp_rank_00_model_states.pt")
    marker = tmp_path / "PWNED"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    torch.save({"optimizer_state_dict": {"zero_stage": Evil()}}, tag / "bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt")
    with pytest.raises(InputError, match="cannot be read as plain tensors"):
        export_checkpoint(tag, tmp_path / "hf")
    assert not marker.exists()

"""The one way an evaluation gets an encoder: where the model is, its architecture and tokenizer, how many
tokens it takes, its weights (pretrained or a seeded random init), and the precision it runs in.

    --model RUN/export                  an HF export directory: used as it is
    --model RUN/checkpoints/TAG         a pretraining checkpoint: exported into a temporary directory first
    --model scratch --scratch-from D    random weights of D's architecture: D an export (its config.json and
                                        tokenizer) or a tokenizer directory (the reference ModelConfig)

finetune (a classification head on top), probe (frozen, mean-pooled) and embed all load through here.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from tinydnabert.errors import InputError

# RoBERTa-family models number positions from pad_token_id + 1 (create_position_ids_from_input_ids), so
# max_position_embeddings = 258 with pad id 1 holds 256 tokens; other model types count from 0.
ROBERTA_FAMILY = ("roberta", "xlm-roberta", "camembert")


def resolve_model_dir(path: str, workdir: Path) -> Path:
    """An HF export directory for `path`: itself, or a pretraining checkpoint exported into workdir."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: model not found; pass an export directory (RUN/export), a checkpoint "
                         f"(RUN/checkpoints/TAG) or 'scratch'")
    if (p / "config.json").is_file():
        return p
    from tinydnabert.pretrain.checkpoint import is_checkpoint
    from tinydnabert.pretrain.export import export_checkpoint

    if is_checkpoint(p):
        return Path(export_checkpoint(p, workdir / "export"))
    raise InputError(f"{p}: neither an HF export (no config.json) nor a pretraining checkpoint; "
                     f"run `tinydnabert export` on the checkpoint first")


def is_tokenizer_dir(p: Path) -> bool:
    return (p / "tokenizer.json").is_file() or (p / "tokenizer" / "tokenizer.json").is_file()


def resolve_scratch_source(path: str, workdir: Path) -> Path:
    """--scratch-from: an export dir or a tokenizer dir as is; a pretraining checkpoint exported first."""
    src = Path(path)
    if not src.exists():
        raise InputError(f"{src}: --scratch-from not found; pass the pretrained export (or a tokenizer directory)")
    if (src / "config.json").is_file() or is_tokenizer_dir(src):
        return src
    return resolve_model_dir(path, workdir)


def model_source(model: str, scratch_from: str | None, workdir: Path) -> Path:
    """The directory --model (or, for 'scratch', --scratch-from) stands for; checkpoints exported into workdir."""
    if model == "scratch":
        if not scratch_from:
            raise InputError("--model scratch needs --scratch-from DIR: the pretrained export to copy the "
                             "architecture and tokenizer from (or a tokenizer directory)")
        return resolve_scratch_source(scratch_from, workdir)
    return resolve_model_dir(model, workdir)


def load_tokenizer_dir(path: Path):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path))
    except Exception as e:
        raise InputError(f"{path}: could not load a tokenizer ({type(e).__name__}: {e}); the directory needs "
                         f"tokenizer.json (an export or `tinydnabert preprocess` output)") from e


def token_limit(config, max_length: int = 0) -> int:
    """Tokens per sequence (incl. <s> </s>) the encoder's position table allows, or `max_length` if smaller."""
    offset = config.pad_token_id + 1 if config.model_type in ROBERTA_FAMILY else 0
    cap = int(config.max_position_embeddings) - offset
    return min(max_length or cap, cap)


def autocast_for(device, bf16: bool = True) -> Callable[[], contextlib.AbstractContextManager]:
    """A context-manager factory, the one precision policy of evaluation: bf16 autocast on a GPU when `bf16`
    (the default), fp32 everywhere else — CPU always runs fp32 (CPU bf16 matmuls are slow on most hosts).
    Weights stay fp32; callers take outputs to float before losses, pooling or storing."""
    import torch

    if device.type == "cuda" and bf16:
        return lambda: torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext


@dataclass(kw_only=True)
class DeviceSettings:
    """The device and precision flags of every command that runs an encoder (embed, probe, finetune,
    score-variants, benchmark): one help text, one policy (autocast_for). Where a run goes, not what it measures:
    `"protocol": False` lets a finished run be reused across them (eval/common.py's RUN_ONLY)."""

    device: str = field(default="auto", metadata={"help": "auto (cuda if available), cpu or cuda",
                                                  "choices": ["auto", "cpu", "cuda"], "protocol": False})
    bf16: bool = field(default=True, metadata={"help": "bf16 autocast on GPU (CPU always runs fp32)",
                                               "protocol": False})


@dataclass
class EncoderSpec:
    """An encoder before any weight exists: its architecture, tokenizer, token limit, and where it came from."""

    config: Any           # transformers PretrainedConfig (num_labels etc. set when asked for)
    tokenizer: Any
    path: Path            # the export / tokenizer directory it was read from
    info: dict[str, Any]  # kind (pretrained / scratch), path, what was given, where the architecture came from

    @property
    def pretrained(self) -> bool:
        return self.info["kind"] == "pretrained"

    @property
    def max_tokens(self) -> int:
        return token_limit(self.config)

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.config.pad_token_id


def encoder_spec(model: str, scratch_from: str | None, model_dir: Path, **config_kw: Any) -> EncoderSpec:
    """Pretrained: the export's config and tokenizer. Scratch: the same config.json (or the reference
    ModelConfig + a tokenizer directory), to be initialised at random. `config_kw` is set on the config
    (a classifier's num_labels, id2label, label2id)."""
    from transformers import AutoConfig

    if model != "scratch" or (model_dir / "config.json").is_file():
        config = AutoConfig.from_pretrained(str(model_dir), **config_kw)
        tok = load_tokenizer_dir(model_dir)
        info = ({"kind": "pretrained", "path": str(model_dir), "given": model} if model != "scratch" else
                {"kind": "scratch", "path": str(model_dir), "given": scratch_from,
                 "architecture_from": f"config.json of {model_dir}"})
        return EncoderSpec(config, tok, model_dir, info)
    from tinydnabert.prep.tokenizer import load_tokenizer
    from tinydnabert.pretrain.model import ModelConfig, hf_config

    tok = load_tokenizer(model_dir)
    config = hf_config(ModelConfig().with_tokenizer(tok))
    for k, v in config_kw.items():
        setattr(config, k, v)
    return EncoderSpec(config, tok, model_dir, {"kind": "scratch", "path": str(model_dir), "given": scratch_from,
                                                "architecture_from": "reference ModelConfig + tokenizer"})


def build_encoder(spec: EncoderSpec, seed: int, device):
    """The bare encoder (AutoModel, no LM head, no pooler), in eval mode on `device`: the export's weights, or
    for scratch every weight random from `seed` (a different random encoder per seed)."""
    import torch
    from transformers import AutoModel

    if spec.pretrained:
        try:
            model = AutoModel.from_pretrained(str(spec.path), **_no_pooler(spec.config))
        except Exception as e:  # noqa: BLE001 - any load failure: the directory is not what we expect
            raise InputError(f"{spec.path}: could not load the encoder ({type(e).__name__}: {e})") from e
    else:
        torch.manual_seed(seed)
        model = AutoModel.from_config(spec.config, **_no_pooler(spec.config))
    return model.to(device).eval()


def _no_pooler(config) -> dict[str, Any]:
    """AutoModel kwargs that drop the pooler: BERT-family encoders have one (unused here), ModernBERT has none."""
    return {"add_pooling_layer": False} if config.model_type in ROBERTA_FAMILY + ("bert",) else {}


def load_encoder(model_dir: str | Path, device):
    """(encoder, tokenizer) of an export directory, pretrained weights, eval mode."""
    d = Path(model_dir)
    if not (d / "config.json").is_file():
        raise InputError(f"{d}: not a model directory (no config.json); pass an export (RUN/export) or run "
                         "`tinydnabert export RUN OUT` first")
    spec = encoder_spec(str(d), None, d)
    return build_encoder(spec, 0, device), spec.tokenizer

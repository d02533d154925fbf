"""Turn a pretraining checkpoint into a plain Hugging Face directory (no tinydnabert code needed to load it).

    tinydnabert export RUN OUT                          # the latest complete checkpoint of a run
    tinydnabert export RUN/checkpoints/step00010000 OUT

OUT holds model.safetensors (fp32), config.json (RobertaForMaskedLM or ModernBertForMaskedLM, SDPA) and the
tokenizer files, so

    AutoModelForMaskedLM.from_pretrained(OUT); AutoTokenizer.from_pretrained(OUT)

gives the model the engine trained. The weights are the module weights DeepSpeed saved in
mp_rank_00_model_states.pt for an fp32 run (with ZeRO-1 every rank holds the full module), and the fp32
master weights from the optimizer states for a bf16 run (its module holds only a rounded bf16 copy;
checkpoint.load_fp32_weights). The files are read with torch.load(weights_only=True): tensors and plain
containers only, never arbitrary pickled code, so a checkpoint from elsewhere cannot run anything.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from tinydnabert.console import print0
from tinydnabert.errors import InputError
from tinydnabert.io import atomic_output_dir
from tinydnabert.pretrain import checkpoint
from tinydnabert.pretrain.model import ARCHS, ModelConfig, build_model


def export_checkpoint(checkpoint_dir: str | Path, out_dir: str | Path, overwrite: bool = False) -> Path:
    """Write an HF directory for the checkpoint (a tag dir, or a run/checkpoints dir: its latest). Returns out_dir."""
    ckpt = checkpoint.resolve(checkpoint_dir)
    marker = checkpoint.check(ckpt)  # every file as its marker lists it, or an error naming an earlier one
    try:
        model_cfg = ModelConfig(**marker.model_config)
    except TypeError as e:
        raise InputError(f"{ckpt / checkpoint.MARKER}: model_config is not a tinydnabert model config ({e}); "
                         "export an earlier complete checkpoint") from e
    state = checkpoint.load_fp32_weights(ckpt)  # a bf16 run: its fp32 masters, not the rounded module
    model = build_model(model_cfg)
    missing, unexpected = model.load_state_dict(state, strict=False)
    # The decoder weight is tied to the word embeddings; DeepSpeed may save it under both names or one.
    missing = [k for k in missing if k not in ("lm_head.decoder.weight", "decoder.weight")]
    if missing or unexpected:
        raise InputError(f"{ckpt / checkpoint.MODEL_STATES}: weights do not match the saved model config "
                         f"(missing {missing[:5]}, unexpected {unexpected[:5]})")
    tok_dir = ckpt / checkpoint.TOKENIZER_DIR
    if not (tok_dir / "tokenizer.json").is_file():
        raise InputError(f"{tok_dir}: tokenizer files missing from the checkpoint")
    with atomic_output_dir(out_dir, overwrite=overwrite) as tmp:
        model.save_pretrained(str(tmp), safe_serialization=True)
        for f in tok_dir.iterdir():
            if f.is_file():
                shutil.copy2(f, tmp / f.name)
        (tmp / "tinydnabert_export.json").write_text(json.dumps(
            {"checkpoint": str(ckpt.resolve()), "step": marker.step, "tokens_seen": marker.tokens_seen,
             "model_config": marker.model_config}, indent=2) + "\n")
    return Path(out_dir)


# ModelConfig fields an --init-from directory must match, and the flag that sets each.
_SHAPE = {"vocab_size": None, "hidden_size": "--hidden-size", "num_hidden_layers": "--num-hidden-layers",
          "num_attention_heads": "--num-attention-heads", "intermediate_size": "--intermediate-size",
          "max_position_embeddings": "--max-position-embeddings"}


def load_init_weights(model_dir: str | Path, model_cfg: ModelConfig, tokenizer) -> tuple[dict, dict]:
    """(state dict, provenance) of an HF masked-LM directory to start pretraining from (--init-from): an export
    of ours or any RobertaForMaskedLM / ModernBertForMaskedLM of this launch's --arch and shape whose tokenizer is
    the shards' tokenizer.

    The vocabulary is compared token by token, not the tokenizer.json bytes: a directory saved elsewhere
    serialises the same BPE differently, and what must agree is which id means which token."""
    from transformers import AutoConfig, AutoModelForMaskedLM, AutoTokenizer

    from tinydnabert.io import sha256_file

    d = Path(model_dir)
    if not (d / "config.json").is_file():
        raise InputError(f"--init-from {d}: no config.json; pass an export directory (RUN/export, or "
                         "`tinydnabert export RUN OUT`) or a Hugging Face RoBERTa masked-LM directory")
    try:
        hf_cfg = AutoConfig.from_pretrained(str(d))
        theirs = AutoTokenizer.from_pretrained(str(d))
    except Exception as e:  # noqa: BLE001 - any load failure: the directory is not what we expect
        raise InputError(f"--init-from {d}: cannot load its config or tokenizer ({type(e).__name__}: {e})") from e
    if hf_cfg.model_type != model_cfg.arch:
        raise InputError(f"--init-from {d}: a {hf_cfg.model_type!r} model, this launch pretrains {model_cfg.arch!r}; "
                         f"launch with --arch {hf_cfg.model_type}" if hf_cfg.model_type in ARCHS else
                         f"--init-from {d}: a {hf_cfg.model_type!r} model; tinydnabert pretrains {', '.join(ARCHS)}")
    if theirs.get_vocab() != tokenizer.get_vocab():
        diff = len(set(theirs.get_vocab().items()) ^ set(tokenizer.get_vocab().items()))
        raise InputError(f"--init-from {d}: its tokenizer is not the shards' tokenizer ({diff} vocabulary entries "
                         "differ); preprocess the genome with that tokenizer (`tinydnabert preprocess --tokenizer "
                         f"{d}`) so ids mean the same tokens")
    wrong = {k: (getattr(hf_cfg, k), getattr(model_cfg, k)) for k in _SHAPE
             if getattr(hf_cfg, k) != getattr(model_cfg, k)}
    if wrong:
        flags = " ".join(f"{_SHAPE[k]} {v[0]}" for k, v in wrong.items() if _SHAPE[k])
        raise InputError(f"--init-from {d}: shape {wrong} (theirs, this launch's) differs; launch with {flags}")
    net = AutoModelForMaskedLM.from_pretrained(str(d))
    weights = sorted(p for p in d.iterdir() if p.suffix in (".safetensors", ".bin"))
    return net.state_dict(), {"path": str(d.resolve()), "files": {p.name: sha256_file(p) for p in weights}}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="run directory, its checkpoints/ directory, or one checkpoint "
                                           "(RUN/checkpoints/stepNNNNNNNN)")
    parser.add_argument("out", help="output directory (a Hugging Face model directory)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output directory")


def main(args: argparse.Namespace) -> int:
    out = export_checkpoint(args.checkpoint, args.out, overwrite=args.overwrite)
    print0(f"wrote {out}: AutoModelForMaskedLM.from_pretrained({str(out)!r}) loads it")
    return 0

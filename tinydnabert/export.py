"""Turn a pretraining checkpoint into a plain Hugging Face directory (no tinydnabert code needed to load it).

    tinydnabert export RUN OUT                          # the latest complete checkpoint of a run
    tinydnabert export RUN/checkpoints/step00010000 OUT

OUT holds model.safetensors (fp32), config.json (RobertaForMaskedLM, SDPA) and the tokenizer files, so

    AutoModelForMaskedLM.from_pretrained(OUT); AutoTokenizer.from_pretrained(OUT)

gives the model the engine trained. The weights are the module weights DeepSpeed saved in
mp_rank_00_model_states.pt (with ZeRO-1 every rank holds the full module; the bf16 module of a GPU run
is upcast exactly to fp32). The file is read with torch.load(weights_only=True): tensors and plain
containers only, never arbitrary pickled code, so a checkpoint from elsewhere cannot run anything.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from . import checkpoint
from .common import InputError, atomic_output_dir, print0
from .model import ModelConfig, build_model


def export_checkpoint(checkpoint_dir: str | Path, out_dir: str | Path, overwrite: bool = False) -> Path:
    """Write an HF directory for the checkpoint (a tag dir, or a run/checkpoints dir: its latest). Returns out_dir."""
    ckpt = checkpoint.resolve(checkpoint_dir)
    marker = checkpoint.check(ckpt)  # every file as its marker lists it, or an error naming an earlier one
    try:
        model_cfg = ModelConfig(**marker.model_config)
    except TypeError as e:
        raise InputError(f"{ckpt / checkpoint.MARKER}: model_config is not a tinydnabert model config ({e}); "
                         "export an earlier complete checkpoint") from e
    state = checkpoint.load_module_state(ckpt)
    model = build_model(model_cfg)
    missing, unexpected = model.load_state_dict(state, strict=False)
    # The decoder weight is tied to the word embeddings; DeepSpeed may save it under both names or one.
    missing = [k for k in missing if k != "lm_head.decoder.weight"]
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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="run directory, its checkpoints/ directory, or one checkpoint "
                                           "(RUN/checkpoints/stepNNNNNNNN)")
    parser.add_argument("out", help="output directory (a Hugging Face model directory)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output directory")


def main(args: argparse.Namespace) -> int:
    out = export_checkpoint(args.checkpoint, args.out, overwrite=args.overwrite)
    print0(f"wrote {out}: AutoModelForMaskedLM.from_pretrained({str(out)!r}) loads it")
    return 0

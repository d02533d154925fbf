"""The DNA BPE tokenizer: train with HF `tokenizers`, save as a transformers-loadable directory.

Plain byte-pair encoding over the letters A C G T: no normalizer, no pre-tokenizer (a segment is
one "word"), no end-of-word suffix, RoBERTa specials <s>=0 <pad>=1 </s>=2 <unk>=3 <mask>=4, the
`<s> X </s>` template, and a Fuse decoder so that decode(encode(x)) == x with no spaces.

Memory: the BPE trainer keeps every distinct word with per-symbol bookkeeping (tens of bytes per
base), and HF tokenizers issue #1313 shows training on whole chromosomes as single words running
for hours or out of memory. We train on segments (<= 1024 bp, each its own sequence) and the
caller caps the sample size (`tokenizer_max_bases`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from tinydnabert.errors import InputError
from tinydnabert.formats import SPECIAL_TOKENS, TOKENIZER_CONFIG_FILE, TOKENIZER_DIR, TOKENIZER_FILE

BOS, PAD, EOS, UNK, MASK = SPECIAL_TOKENS


def build_untrained():
    """An empty BPE tokenizer with its decoder (no normalizer, no pre-tokenizer)."""
    from tokenizers import Tokenizer, decoders, models

    tok = Tokenizer(models.BPE(unk_token=UNK))
    tok.decoder = decoders.Fuse()
    return tok


def train_tokenizer(sequences: Iterable[str], vocab_size: int = 1024, min_frequency: int = 4,
                    alphabet: str = "ACGT", length: int | None = None, show_progress: bool = False):
    """Train the BPE tokenizer on an iterable of segment strings; returns a `tokenizers.Tokenizer`."""
    from tokenizers import processors, trainers

    tok = build_untrained()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=list(alphabet), show_progress=show_progress,
    )
    tok.train_from_iterator(sequences, trainer=trainer, length=length)
    bos, eos = tok.token_to_id(BOS), tok.token_to_id(EOS)
    for i, t in enumerate(SPECIAL_TOKENS):  # the trainer puts specials first, in order
        assert tok.token_to_id(t) == i, (t, tok.token_to_id(t))
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A {EOS}", pair=f"{BOS} $A {EOS} {EOS} $B {EOS}",
        special_tokens=[(BOS, bos), (EOS, eos)],
    )
    return tok


def save_tokenizer(tok, out_dir: str | Path, model_max_length: int = 512) -> Path:
    """Write tokenizer.json + tokenizer_config.json + special_tokens_map.json into out_dir, loadable
    with transformers.AutoTokenizer.from_pretrained(out_dir) (PreTrainedTokenizerFast)."""
    from transformers import PreTrainedTokenizerFast

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, unk_token=UNK, pad_token=PAD,
        mask_token=MASK, cls_token=BOS, sep_token=EOS, model_max_length=model_max_length,
        clean_up_tokenization_spaces=False,
    )
    fast.save_pretrained(str(out))
    # save_pretrained writes tokenizer.json with Python's json (key order as produced by Rust);
    # re-write it from the Rust serializer so the fingerprint is stable across transformers versions.
    tok.save(str(out / TOKENIZER_FILE), pretty=True)
    cfg_path = out / TOKENIZER_CONFIG_FILE
    cfg = json.loads(cfg_path.read_text())
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    return out


def load_tokenizer(path: str | Path):
    """The trained tokenizer as a transformers PreTrainedTokenizerFast.

    `path` is a tokenizer directory (holding tokenizer.json) or a preprocess output directory
    (holding tokenizer/)."""
    from transformers import PreTrainedTokenizerFast

    p = Path(path)
    if (p / TOKENIZER_DIR / TOKENIZER_FILE).is_file():
        p = p / TOKENIZER_DIR
    if not (p / TOKENIZER_FILE).is_file():
        raise InputError(f"{path}: no {TOKENIZER_FILE} found (expected a tokenizer directory or the output "
                         "of `tinydnabert preprocess`)")
    return PreTrainedTokenizerFast.from_pretrained(str(p))


def load_raw_tokenizer(path: str | Path):
    """The `tokenizers.Tokenizer` (fast, no transformers import) from a tokenizer.json path."""
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(path))


def load_existing(path: str | Path):
    """A tokenizer to shard with instead of training one (`preprocess --tokenizer`): the `tokenizers.Tokenizer`
    from a tokenizer directory, a preprocess output or an export. It must be what `tinydnabert preprocess`
    trains: a BPE model whose first ids are our special tokens, so ids mean the same in every shard made
    with it (mixtures, continued pretraining)."""
    p = Path(path)
    for cand in (p / TOKENIZER_DIR / TOKENIZER_FILE, p / TOKENIZER_FILE, p):
        if cand.is_file():
            break
    else:
        raise InputError(f"--tokenizer {path}: no {TOKENIZER_FILE} there; pass a tokenizer directory, the output "
                         "of `tinydnabert preprocess` or an export (RUN/export)")
    try:
        tok = load_raw_tokenizer(cand)
        model = type(tok.model).__name__
    except Exception as e:  # noqa: BLE001 - any parse failure: not a tokenizers file
        raise InputError(f"{cand}: not a tokenizers JSON file ({type(e).__name__}: {e})") from e
    if model != "BPE":
        raise InputError(f"{cand}: a {model} tokenizer; tinydnabert shards need a BPE tokenizer made by "
                         "`tinydnabert preprocess` (or one with the same special tokens)")
    ids = [tok.token_to_id(t) for t in SPECIAL_TOKENS]
    if ids != list(range(len(SPECIAL_TOKENS))):
        raise InputError(f"{cand}: special tokens {dict(zip(SPECIAL_TOKENS, ids))}, expected "
                         f"{ {t: i for i, t in enumerate(SPECIAL_TOKENS)} } (RoBERTa's, in that order)")
    return tok

"""The DNA tokenizers: BPE (trained), non-overlapping k-mers and single bases (fixed vocabularies), all built with
HF `tokenizers` and saved as the same transformers-loadable directory.

Plain byte-pair encoding over the letters A C G T: no normalizer, no pre-tokenizer (a segment is
one "word"), no end-of-word suffix, RoBERTa specials <s>=0 <pad>=1 </s>=2 <unk>=3 <mask>=4, the
`<s> X </s>` template, and a Fuse decoder so that decode(encode(x)) == x with no spaces.

Memory: the BPE trainer keeps every distinct word with per-symbol bookkeeping (tens of bytes per
base), and HF tokenizers issue #1313 shows training on whole chromosomes as single words running
for hours or out of memory. We train on segments (<= 1024 bp, each its own sequence) and the
caller caps the sample size (`tokenizer_max_bases`).

k-mers (`kind="kmer"`, k = 1..7) and single bases (`kind="char"`, the k = 1 case) need no training: a WordLevel
model whose vocabulary is the 5 specials (ids 0-4, as formats.py says), then the alphabet's single bases, then
every k-mer in lexicographic order; a Split pre-tokenizer on `.{k}|.` cuts a segment into consecutive k-base
words from its start, and a remainder shorter than k becomes single bases (a 1000 bp segment at k = 6 is 166
6-mers + 4 bases). The same `<s> X </s>` template and Fuse decoder, so decode(encode(x)) == x for them too. k <= 7
because shard ids are uint16: 4^8 = 65,536 8-mers do not fit with the specials.
"""

from __future__ import annotations

import json
from itertools import product
from pathlib import Path
from typing import Iterable

from tinydnabert.errors import InputError
from tinydnabert.formats import SPECIAL_TOKENS, TOKENIZER_CONFIG_FILE, TOKENIZER_DIR, TOKENIZER_FILE

BOS, PAD, EOS, UNK, MASK = SPECIAL_TOKENS
KINDS = ("bpe", "kmer", "char")
MAX_ID = 65535  # shard ids are uint16


def fixed_vocab_size(k: int, alphabet: str = "ACGT") -> int:
    """Size of the k-mer tokenizer's vocabulary: specials + single bases + every k-mer (single bases once at k=1)."""
    return len(SPECIAL_TOKENS) + len(alphabet) + (len(alphabet) ** k if k > 1 else 0)


def _template(tok):
    from tokenizers import processors

    return processors.TemplateProcessing(
        single=f"{BOS} $A {EOS}", pair=f"{BOS} $A {EOS} {EOS} $B {EOS}",
        special_tokens=[(BOS, tok.token_to_id(BOS)), (EOS, tok.token_to_id(EOS))],
    )


def build_untrained():
    """An empty BPE tokenizer with its decoder (no normalizer, no pre-tokenizer)."""
    from tokenizers import Tokenizer, decoders, models

    tok = Tokenizer(models.BPE(unk_token=UNK))
    tok.decoder = decoders.Fuse()
    return tok


def train_tokenizer(sequences: Iterable[str], vocab_size: int = 1024, min_frequency: int = 4,
                    alphabet: str = "ACGT", length: int | None = None, show_progress: bool = False):
    """Train the BPE tokenizer on an iterable of segment strings; returns a `tokenizers.Tokenizer`."""
    from tokenizers import trainers

    tok = build_untrained()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=list(alphabet), show_progress=show_progress,
    )
    tok.train_from_iterator(sequences, trainer=trainer, length=length)
    for i, t in enumerate(SPECIAL_TOKENS):  # the trainer puts specials first, in order
        assert tok.token_to_id(t) == i, (t, tok.token_to_id(t))
    tok.post_processor = _template(tok)
    return tok


def build_kmer_tokenizer(k: int, alphabet: str = "ACGT"):
    """The non-overlapping k-mer tokenizer (k = 1: single bases); no training. A `tokenizers.Tokenizer`."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

    if not 1 <= k <= 7:
        raise ValueError(f"k={k}: must be in [1, 7]")
    words = list(dict.fromkeys([*SPECIAL_TOKENS, *alphabet, *("".join(w) for w in product(alphabet, repeat=k))]))
    if len(words) > MAX_ID:
        raise ValueError(f"k={k}, alphabet {alphabet}: {len(words)} tokens do not fit uint16 ids")
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token=UNK))
    # `.{k}|.`: the regex engine takes a whole k-mer where one remains, else one base (the remainder)
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(f".{{{k}}}|." if k > 1 else "."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens([AddedToken(t, special=True) for t in SPECIAL_TOKENS])
    for i, t in enumerate(SPECIAL_TOKENS):
        assert tok.token_to_id(t) == i, (t, tok.token_to_id(t))
    tok.post_processor = _template(tok)
    return tok


def tokenizer_kind(tok) -> tuple[str, int | None]:
    """(kind, k) of a tokenizer made here: ("bpe", None), ("kmer", k) or ("char", 1)."""
    if type(tok.model).__name__ == "BPE":
        return "bpe", None
    k = max(len(t) for t in tok.get_vocab(with_added_tokens=False) if t not in SPECIAL_TOKENS)
    return ("char", 1) if k == 1 else ("kmer", k)


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
    makes: a BPE model, or a k-mer / single-base WordLevel one (with its splitting pre-tokenizer and Fuse decoder),
    whose first ids are our special tokens, so ids mean the same in every shard made with it (mixtures, continued
    pretraining)."""
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
    ours = model == "BPE" or (model == "WordLevel" and tok.pre_tokenizer is not None
                              and type(tok.decoder).__name__ == "Fuse")
    if not ours:
        raise InputError(f"{cand}: a {model} tokenizer; tinydnabert shards need a BPE, k-mer or single-base tokenizer "
                         "made by `tinydnabert preprocess` (or one with the same special tokens)")
    ids = [tok.token_to_id(t) for t in SPECIAL_TOKENS]
    if ids != list(range(len(SPECIAL_TOKENS))):
        raise InputError(f"{cand}: special tokens {dict(zip(SPECIAL_TOKENS, ids))}, expected "
                         f"{ {t: i for i, t in enumerate(SPECIAL_TOKENS)} } (RoBERTa's, in that order)")
    return tok

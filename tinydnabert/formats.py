"""The on-disk contract between preprocessing and training: shard layout, sample members, manifest.

    DIR/
      manifest.json            inputs + checksums, resolved config, tokenizer hash, per-split/per-shard counts,
                               and each shard's size ("bytes") and "sha256" (checked as it is read; older
                               manifests without them are read unverified)
      tokenizer/               tokenizer.json (+ HF config files): AutoTokenizer.from_pretrained(DIR/tokenizer)
      train/shard-000000.tar   WebDataset shards, read with plain webdataset.WebDataset
      val/shard-000000.tar

Each sample in a shard has:
    __key__    content-derived, e.g. "chr20:10000-11024:f" (record name with '%', '.' and '/' percent-escaped:
               webdataset splits member names at the first '.', so keys must not contain one)
    ids.u16    token ids WITHOUT special tokens, little-endian uint16 (vocab <= 65,535): 2 bytes/token
    json       {"record": name, "start": int, "end": int, "strand": "+" | "-"}; 0-based, half-open,
               forward-strand coordinates; for "-" the tokens spell the reverse complement of [start, end)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from tinydnabert.errors import InputError
from tinydnabert.io import sha256_file

MANIFEST = "manifest.json"
TOKENIZER_DIR = "tokenizer"
TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
SPLITS = ("train", "val")
SHARD_GLOB = "shard-*.tar"
IDS_MEMBER = "ids.u16"
META_MEMBER = "json"
FORMAT_VERSION = "tinydnabert-shards/1"

# RoBERTa special tokens, in id order: <s>=0 <pad>=1 </s>=2 <unk>=3 <mask>=4. Every tokenizer made by
# `tinydnabert preprocess` has exactly these ids; the model and the data stream take them from here.
SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")
BOS_ID = SPECIAL_TOKENS.index("<s>")
PAD_ID = SPECIAL_TOKENS.index("<pad>")
EOS_ID = SPECIAL_TOKENS.index("</s>")
MASK_ID = SPECIAL_TOKENS.index("<mask>")
# Every special token has an id below this: never masked and never drawn as the random replacement.
NUM_SPECIAL = len(SPECIAL_TOKENS)
IGNORE_INDEX = -100  # labels value the loss ignores (torch CrossEntropyLoss / HF default)


def shard_name(index: int) -> str:
    return f"shard-{index:06d}.tar"


def sample_key(record: str, start: int, end: int, strand: str) -> str:
    # Percent-escape '%', '.' and '/' (webdataset splits member names at the first '.', tar paths at '/'):
    # injective, so records "NC_000001.11" and "NC_000001_11" never share a key.
    safe = record.replace("%", "%25").replace(".", "%2E").replace("/", "%2F")
    return f"{safe}:{start}-{end}:{'f' if strand == '+' else 'r'}"


def encode_ids(ids: np.ndarray) -> bytes:
    return np.asarray(ids, dtype="<u2").tobytes()


def decode_ids(raw: bytes) -> np.ndarray:
    return np.frombuffer(raw, dtype="<u2")


def tokenizer_fingerprint(tokenizer_dir: str | Path) -> str:
    """sha256 of tokenizer.json: what the manifest records and the trainer checks."""
    path = Path(tokenizer_dir) / TOKENIZER_FILE
    if not path.is_file():
        raise InputError(f"{path}: tokenizer file not found (expected the output of `tinydnabert preprocess`)")
    return sha256_file(path)


def load_manifest(data_dir: str | Path) -> dict[str, Any]:
    path = Path(data_dir) / MANIFEST
    if not Path(data_dir).is_dir():
        raise InputError(f"{data_dir}: shards directory not found; run `tinydnabert preprocess --out {data_dir}` first")
    if not path.is_file():
        raise InputError(f"{path}: no manifest; {data_dir} is not the output of `tinydnabert preprocess`")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: not valid JSON ({e})") from e
    if manifest.get("format") != FORMAT_VERSION:
        raise InputError(f"{path}: format {manifest.get('format')!r}, expected {FORMAT_VERSION!r}; re-run preprocess")
    return manifest


def shard_paths(data_dir: str | Path, split: str) -> list[Path]:
    """The split's shards in name order; an error naming the directory if there are none."""
    d = Path(data_dir) / split
    paths = sorted(d.glob(SHARD_GLOB))
    if not paths:
        raise InputError(f"{d}: no {SHARD_GLOB} shards found")
    return paths

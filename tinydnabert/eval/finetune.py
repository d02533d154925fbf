"""Fine-tune a pretrained (or from-scratch) encoder on a classification task and report test MCC.

    tinydnabert finetune --model RUN/export --task promoter_tata --out ft/promoter_tata
    tinydnabert finetune --model scratch --scratch-from RUN/export --task gue/prom_300_tata --out ft/scratch

Protocol (the reference's defaults): batch 64, 5,000 optimizer steps, linear warmup over 500 steps to
1e-4 then linear decay to 0, AdamW (weight decay 1e-5, betas 0.9/0.999, eps 1e-8), a sequence-
classification head on the encoder (`AutoModelForSequenceClassification`, RoBERTa's <s> pooler).
Model selection: a validation split carved from train with a seed (never the test set), evaluated
every --eval-every steps; the best-validation-MCC weights are evaluated ONCE on test.
"scratch" is the same architecture (the same config.json, or the reference ModelConfig + a tokenizer)
from random weights, so the difference between the two runs is pretraining alone. Seed s is the same
experiment in both: the same validation carve, the same head initialisation (drawn from s after the
encoder is built), the same batches and dropout stream; only the encoder's starting weights differ.

Output (written atomically: a failed run leaves nothing):
    OUT/results.json        task, data provenance (hub commit, sha256 per file), labels (sorted; id = index),
                            counts, per-seed val/test MCC, mean ± sd
    OUT/config.json         the resolved FinetuneConfig + what was derived (max length, label ids, model)
    OUT/predictions/seed<S>.csv   index,label,pred on the test split (source label values)
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from tinydnabert.config import add_dataclass_args, config_to_dict, dataclass_from_args
from tinydnabert.console import print0
from tinydnabert.errors import InputError
from tinydnabert.eval.tasks import TaskData, adhoc_task, get_task, list_tasks, load_task_data, task_summary
from tinydnabert.io import atomic_output_dir, atomic_write_json

RESULTS = "results.json"
CONFIG = "config.json"
RESULTS_FORMAT = "tinydnabert-finetune/1"


@dataclass
class FinetuneConfig:
    model: str = field(metadata={"help": "HF export directory (config.json + weights + tokenizer), a pretraining "
                                         "checkpoint directory, or 'scratch' (random weights; see --scratch-from)"})
    task: str = field(metadata={"help": "task name (see --list-tasks; a bare NT name means the revised task), "
                                        "or any name for your own --data"})
    out: str = field(metadata={"help": "output directory (results.json, config.json, predictions/)"})
    data: Optional[str] = field(default=None, metadata={
        "help": "task data instead of the registry's: a directory of train/test .csv, .tsv or .fna files, "
                "one FASTA per class (DIR/train/<label>.fa), an NT revised .tsv, or http(s) URLs "
                "'train=URL,test=URL' of parquet/csv read with `datasets`"})
    scratch_from: Optional[str] = field(default=None, metadata={
        "help": "with --model scratch: an export directory (its config.json + tokenizer: the same architecture) "
                "or a tokenizer directory (then the reference ModelConfig)"})
    seed: int = field(default=0, metadata={"help": "first seed; also seeds the train/validation carve"})
    seeds: int = field(default=1, metadata={"help": "number of seeds (seed, seed+1, ...); reports mean ± sd"})
    steps: int = field(default=5000, metadata={"help": "optimizer steps per seed"})
    batch_size: int = field(default=64, metadata={"help": "sequences per optimizer step"})
    lr: float = field(default=1e-4, metadata={"help": "peak learning rate (after warmup)"})
    warmup_steps: int = field(default=500, metadata={"help": "linear warmup steps, then linear decay to 0"})
    weight_decay: float = field(default=1e-5, metadata={"help": "AdamW weight decay"})
    grad_clip: float = field(default=1.0, metadata={"help": "max gradient norm (0 = no clipping)"})
    eval_every: int = field(default=500, metadata={"help": "validate every N steps (and at the last step)"})
    val_fraction: float = field(default=0.1, metadata={"help": "fraction of train carved out for validation"})
    validation: str = field(default="carve", metadata={
        "help": "carve: validation carved from train with --seed; dev: the task's own dev split (GUE)",
        "choices": ["carve", "dev"]})
    max_length: int = field(default=0, metadata={
        "help": "tokens per sequence incl. <s> </s>; 0 = the task's longest tokenized sequence, capped at the model's"})
    max_train_samples: int = field(default=0, metadata={
        "help": "use a seeded, class-stratified subset of N training rows (0 = all); for quick runs"})
    eval_batch_size: int = field(default=128, metadata={"help": "sequences per evaluation batch"})
    log_every: int = field(default=50, metadata={"help": "print a progress line every N steps"})
    device: str = field(default="auto", metadata={"help": "auto (cuda if available), cpu or cuda",
                                                  "choices": ["auto", "cpu", "cuda"]})
    bf16: bool = field(default=True, metadata={"help": "bf16 autocast on GPU (CPU always runs fp32)"})
    overwrite: bool = field(default=False, metadata={"help": "replace an existing --out"})
    cache_dir: Optional[str] = field(default=None, metadata={
        "help": "download cache: the huggingface_hub cache for NT hub tasks (default $HF_HUB_CACHE, "
                "~/.cache/huggingface/hub), the datasets cache for URL data"})
    hub_revision: str = field(default="main", metadata={
        "help": "revision of the NT hub repository to read (branch, tag or commit sha); results.json records "
                "the commit actually read and the sha256 of each file (a --data clone is read as it is)"})

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "eval_every", "seeds", "eval_batch_size", "log_every"):
            if getattr(self, name) < 1:
                raise InputError(f"finetune: --{name.replace('_', '-')} {getattr(self, name)} must be >= 1")
        if not 0 <= self.warmup_steps < self.steps:
            raise InputError(f"finetune: --warmup-steps {self.warmup_steps} must be in [0, --steps {self.steps}); "
                             f"with fewer steps use about 10% of them")
        if not 0.0 < self.val_fraction < 0.5:
            raise InputError(f"finetune: --val-fraction {self.val_fraction} must be in (0, 0.5)")
        if self.lr <= 0 or self.weight_decay < 0 or self.grad_clip < 0:
            raise InputError("finetune: --lr must be > 0, --weight-decay and --grad-clip >= 0")
        if self.max_length < 0 or self.max_train_samples < 0:
            raise InputError("finetune: --max-length and --max-train-samples must be >= 0 (0 = automatic / all)")
        if not self.hub_revision.strip():
            raise InputError("finetune: --hub-revision is empty; use main, a branch, a tag or a commit sha")
        if self.model == "scratch" and not self.scratch_from:
            raise InputError("finetune: --model scratch needs --scratch-from DIR: the pretrained export to copy "
                             "the architecture and tokenizer from (or a tokenizer directory)")


# ---------------------------------------------------------------------------------------------
# Model and tokenizer
# ---------------------------------------------------------------------------------------------

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


def load_tokenizer_dir(path: Path):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path))
    except Exception as e:
        raise InputError(f"{path}: could not load a tokenizer ({type(e).__name__}: {e}); the directory needs "
                         f"tokenizer.json (an export or `tinydnabert preprocess` output)") from e


def _tokenizer_dir(p: Path) -> bool:
    return (p / "tokenizer.json").is_file() or (p / "tokenizer" / "tokenizer.json").is_file()


def resolve_scratch_source(path: str, workdir: Path) -> Path:
    """--scratch-from: an export dir or a tokenizer dir as is; a pretraining checkpoint exported first."""
    src = Path(path)
    if not src.exists():
        raise InputError(f"{src}: --scratch-from not found; pass the pretrained export (or a tokenizer directory)")
    if (src / "config.json").is_file() or _tokenizer_dir(src):
        return src
    return resolve_model_dir(path, workdir)


@dataclass
class ClassifierSpec:
    """What both arms share before any weight exists: the architecture, the tokenizer, the token limit."""

    config: Any          # transformers PretrainedConfig with num_labels / id2label set
    tokenizer: Any
    info: dict[str, Any]  # kind, path, where the architecture came from
    max_tokens: int      # tokens per sequence the position table allows (incl. <s> </s>)


def classifier_spec(cfg: FinetuneConfig, model_dir: Path, label_names: list[str]) -> ClassifierSpec:
    """Pretrained: the export's config and tokenizer. Scratch: the same config.json (or the reference
    ModelConfig + a tokenizer directory), to be initialised at random."""
    from transformers import AutoConfig

    id2label = {i: n for i, n in enumerate(label_names)}
    label2id = {n: i for i, n in id2label.items()}
    kw = dict(num_labels=len(label_names), id2label=id2label, label2id=label2id)
    if cfg.model != "scratch" or (model_dir / "config.json").is_file():
        mcfg = AutoConfig.from_pretrained(str(model_dir), **kw)
        tok = load_tokenizer_dir(model_dir)
        info = ({"kind": "pretrained", "path": str(model_dir), "given": cfg.model} if cfg.model != "scratch" else
                {"kind": "scratch", "path": str(model_dir), "given": cfg.scratch_from,
                 "architecture_from": f"config.json of {model_dir}"})
    else:
        from tinydnabert.prep.tokenizer import load_tokenizer
        from tinydnabert.pretrain.model import ModelConfig, roberta_config

        tok = load_tokenizer(model_dir)
        mcfg = roberta_config(ModelConfig().with_tokenizer(tok))
        mcfg.num_labels, mcfg.id2label, mcfg.label2id = len(label_names), id2label, label2id
        info = {"kind": "scratch", "path": str(model_dir), "given": cfg.scratch_from,
                "architecture_from": "reference ModelConfig + tokenizer"}
    offset = (mcfg.pad_token_id + 1) if mcfg.model_type in ("roberta", "xlm-roberta", "camembert") else 0
    return ClassifierSpec(mcfg, tok, info, int(mcfg.max_position_embeddings) - offset)


def build_classifier(spec: ClassifierSpec, model_dir: Path, seed: int):
    """The classifier for one seed. Pretrained: the encoder's weights; scratch: every weight random from
    `seed`. Either way the head is then initialised from `seed` alone, so the two arms of a seed start
    from the same head and differ only in the encoder (the paired comparison of the benchmark)."""
    import torch
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(seed)
    if spec.info["kind"] == "pretrained":
        model = AutoModelForSequenceClassification.from_pretrained(str(model_dir), config=spec.config)
    else:
        model = AutoModelForSequenceClassification.from_config(spec.config)
    torch.manual_seed(seed)
    model.classifier.apply(model._init_weights)
    return model


def tokenize(tok, seqs: list[str], max_length: int) -> list[list[int]]:
    enc = tok(seqs, add_special_tokens=True, truncation=True, max_length=max_length)
    return enc["input_ids"]


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------

def lr_lambda(warmup: int, total: int):
    """Linear warmup from 0 to the peak over `warmup` steps, then linear decay to 0 at `total`."""
    def f(step: int) -> float:  # step = optimizer steps taken so far
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))
    return f


def collate(ids: list[list[int]], pad_id: int, device):
    """Pad to the longest row of the batch. -> input_ids [B, L], attention_mask [B, L]."""
    import torch

    width = max(len(r) for r in ids)
    x = torch.full((len(ids), width), pad_id, dtype=torch.long)
    m = torch.zeros((len(ids), width), dtype=torch.long)
    for i, r in enumerate(ids):
        x[i, :len(r)] = torch.tensor(r, dtype=torch.long)
        m[i, :len(r)] = 1
    return x.to(device), m.to(device)


def predict(model, ids: list[list[int]], pad_id: int, batch_size: int, device, amp) -> np.ndarray:
    import torch

    model.eval()
    # Length-sorted batches pad less; predictions are put back in input order.
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    preds = np.empty(len(ids), dtype=np.int64)
    with torch.no_grad(), amp():
        for s in range(0, len(order), batch_size):
            chunk = order[s:s + batch_size]
            x, m = collate([ids[i] for i in chunk], pad_id, device)
            preds[chunk] = model(input_ids=x, attention_mask=m).logits.argmax(-1).cpu().numpy()
    model.train()
    return preds


def mcc(y_true, y_pred) -> float:
    from sklearn.metrics import matthews_corrcoef

    return float(matthews_corrcoef(y_true, y_pred))


def autocast_for(device, bf16: bool):
    """A context-manager factory: bf16 autocast on GPU; CPU runs fp32 (CPU bf16 matmuls are slow on most hosts)."""
    import torch

    if device.type == "cuda" and bf16:
        return lambda: torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext


def train_one_seed(cfg: FinetuneConfig, model, pad_id: int, train: tuple[list, np.ndarray],
                   val: tuple[list, np.ndarray], seed: int, device, amp) -> dict[str, Any]:
    """The loop: `steps` optimizer steps, validation every `eval_every`, the best state restored."""
    import torch

    model.to(device)
    model.train()
    decay, no_decay = [], []
    for p in model.parameters():
        # The usual BERT recipe: no weight decay on biases and LayerNorm gains.
        (no_decay if p.ndim < 2 else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=cfg.lr, betas=(0.9, 0.999), eps=1e-8)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg.warmup_steps, cfg.steps))
    train_ids, train_y = train
    val_ids, val_y = val
    gen = torch.Generator().manual_seed(seed)
    y_all = torch.as_tensor(train_y, dtype=torch.long)

    def batches():
        while True:  # epochs of a seeded permutation; the last partial batch is dropped
            perm = torch.randperm(len(train_ids), generator=gen).tolist()
            for s in range(0, len(perm) - cfg.batch_size + 1, cfg.batch_size):
                yield perm[s:s + cfg.batch_size]
            if len(perm) < cfg.batch_size:  # tiny data: sample with replacement
                yield torch.randint(len(perm), (cfg.batch_size,), generator=gen).tolist()

    it = batches()
    best = {"val_mcc": -math.inf, "step": 0, "state": None}
    history: list[dict[str, float]] = []
    t0 = t_log = time.perf_counter()
    last_log = 0
    for step in range(1, cfg.steps + 1):
        idx = next(it)
        x, m = collate([train_ids[i] for i in idx], pad_id, device)
        y = y_all[idx].to(device)
        with amp():
            out = model(input_ids=x, attention_mask=m)
        loss = torch.nn.functional.cross_entropy(out.logits.float(), y)
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if step % cfg.log_every == 0 or step == cfg.steps:
            running = loss.item()  # device sync: only at the log interval (and at evaluations)
            dt = (time.perf_counter() - t_log) / (step - last_log) * 1000
            last_log = step
            print0(f"seed {seed} | step {step:06d}/{cfg.steps:06d} | loss {running:.4f} | "
                   f"lr {sched.get_last_lr()[0]:.1e} | {dt:.0f} ms/step")
            t_log = time.perf_counter()
        if step % cfg.eval_every == 0 or step == cfg.steps:
            pv = predict(model, val_ids, pad_id, cfg.eval_batch_size, device, amp)
            v = mcc(val_y, pv)
            history.append({"step": step, "train_loss": round(float(loss.item()), 5), "val_mcc": round(v, 5)})
            print0(f"seed {seed} | step {step:06d} | val mcc {v:.4f}" + (" (best)" if v > best["val_mcc"] else ""))
            if v > best["val_mcc"]:  # ties keep the earlier step
                best = {"val_mcc": v, "step": step,
                        "state": {k: t.detach().to("cpu", copy=True) for k, t in model.state_dict().items()}}
    model.load_state_dict(best["state"])
    return {"best_step": best["step"], "val_mcc": best["val_mcc"], "history": history,
            "train_seconds": round(time.perf_counter() - t0, 2)}


# ---------------------------------------------------------------------------------------------
# The stage
# ---------------------------------------------------------------------------------------------

def resolve_task(cfg: FinetuneConfig):
    try:
        return get_task(cfg.task)
    except InputError:
        if cfg.data:  # any name is fine for the user's own data
            return adhoc_task(cfg.task)
        raise


def carve_validation(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, validation indices): a seeded, class-stratified carve where every class allows it."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(labels))
    _, counts = np.unique(labels, return_counts=True)
    n_val = math.ceil(fraction * len(labels))
    if n_val < 1 or n_val >= len(labels):
        raise InputError(f"{len(labels)} training rows are too few to carve a validation fraction of {fraction}; "
                         "use more data or --validation dev")
    # Stratify where every class can be on both sides (sklearn raises otherwise, e.g. 1 val row, 2 classes).
    strat = labels if counts.min() >= 2 and min(n_val, len(labels) - n_val) >= len(counts) else None
    tr, va = train_test_split(idx, test_size=fraction, random_state=seed, stratify=strat)
    # (used with fraction = 1 - N/len to draw a stratified subset of N rows, too)
    return np.sort(tr), np.sort(va)


@dataclass
class Splits:
    """(sequences, label ids) of train, validation and test: what both arms of a comparison share."""

    train: tuple[list[str], np.ndarray]
    val: tuple[list[str], np.ndarray]
    test: tuple[list[str], np.ndarray]


def task_splits(data: TaskData, seed: int, val_fraction: float, validation: str = "carve",
                max_train_samples: int = 0) -> Splits:
    """Validation carved from train with `seed` (class-stratified) or the task's dev split; test untouched,
    used once. `max_train_samples`: a seeded, class-stratified subset first (files are often sorted by class)."""
    if "test" not in data.splits:
        raise InputError(f"{data.source}: no test split (found {sorted(data.splits)}); the protocols report test "
                         f"MCC, so the data needs a test file (test.csv / test.fna / a 'test' split)")
    train_seqs = data.splits["train"].sequences
    train_y = np.asarray(data.label_ids("train"))
    if 0 < max_train_samples < len(train_seqs):
        keep, _ = carve_validation(train_y, 1 - max_train_samples / len(train_seqs), seed)
        train_seqs, train_y = [train_seqs[i] for i in keep], train_y[keep]
    if validation == "dev":
        if "dev" not in data.splits:
            raise InputError(f"{data.source}: --validation dev but there is no dev split; use --validation carve")
        val = (data.splits["dev"].sequences, np.asarray(data.label_ids("dev")))
    else:
        tr, va = carve_validation(train_y, val_fraction, seed)
        val = ([train_seqs[i] for i in va], train_y[va])
        train_seqs, train_y = [train_seqs[i] for i in tr], train_y[tr]
    missing = sorted(set(range(len(data.labels))) - set(train_y.tolist()))
    if missing:
        raise InputError(f"{data.source}: training split has no rows of label(s) "
                         f"{[data.labels[i] for i in missing]}; check the labels or the --data files")
    return Splits((train_seqs, train_y), val, (data.splits["test"].sequences, np.asarray(data.label_ids("test"))))


def encode_splits(cfg: FinetuneConfig, spec: ClassifierSpec, splits: Splits) -> tuple[dict[str, list], dict]:
    """Token ids of every split at one max length (--max-length, else the longest sequence, capped at the
    model's), and what was derived: the length, how many sequences it truncates, bp per token."""
    if cfg.max_length > spec.max_tokens:
        raise InputError(f"finetune: --max-length {cfg.max_length} exceeds what the model's position "
                         f"table allows ({spec.max_tokens}); use <= {spec.max_tokens}")
    tok = spec.tokenizer
    everything = splits.train[0] + splits.val[0] + splits.test[0]
    lengths = [len(r) for r in tok(everything, add_special_tokens=True)["input_ids"]]
    max_len = cfg.max_length or min(max(lengths), spec.max_tokens)
    enc = {name: tokenize(tok, part[0], max_len) for name, part in
           (("train", splits.train), ("val", splits.val), ("test", splits.test))}
    n_train = len(splits.train[0])
    derived = {"max_length": max_len, "model_max_tokens": spec.max_tokens,
               "truncated_sequences": int(sum(n > max_len for n in lengths)),
               "median_tokens": float(np.median(lengths)),
               "bp_per_token": round(float(np.mean([len(x) for x in splits.train[0]]) /
                                           max(1e-9, np.mean(lengths[:n_train]) - 2)), 3)}
    return enc, derived


def run_finetune(cfg: FinetuneConfig) -> dict[str, Any]:
    """Fine-tune cfg.seeds models and write OUT/{results.json, config.json, predictions/}. Returns results."""
    import torch
    import transformers

    transformers.logging.set_verbosity_error()  # "newly initialized classifier weights" is expected here
    transformers.logging.disable_progress_bar()
    task = resolve_task(cfg)
    data: TaskData = load_task_data(task, cfg.data, cache_dir=cfg.cache_dir, revision=cfg.hub_revision)
    from tinydnabert.pretrain.distributed import pick_device

    device = pick_device(cfg.device, "finetune")
    label_names = [str(lab) for lab in data.labels]
    splits = task_splits(data, cfg.seed, cfg.val_fraction, cfg.validation, cfg.max_train_samples)
    (_, train_y), (_, val_y), (_, test_y) = splits.train, splits.val, splits.test
    amp = autocast_for(device, cfg.bf16)

    out = Path(cfg.out)
    with atomic_output_dir(out, overwrite=cfg.overwrite) as tmp, tempfile.TemporaryDirectory() as work:
        model_dir = (resolve_scratch_source(cfg.scratch_from, Path(work)) if cfg.model == "scratch"
                     else resolve_model_dir(cfg.model, Path(work)))
        spec = classifier_spec(cfg, model_dir, label_names)
        enc, derived = encode_splits(cfg, spec, splits)
        tok, model_info = spec.tokenizer, spec.info
        pad_id = tok.pad_token_id if tok.pad_token_id is not None else spec.config.pad_token_id
        per_seed: list[dict[str, Any]] = []
        n_params = 0
        print0(f"finetune {task.name} ({model_info['kind']}): train {len(train_y)} | val {len(val_y)} | "
               f"test {len(test_y)} | labels {data.labels} | max_length {derived['max_length']} tokens "
               f"({derived['truncated_sequences']} truncated) | {device}")
        for i in range(cfg.seeds):
            seed = cfg.seed + i
            model = build_classifier(spec, model_dir, seed)
            n_params = sum(p.numel() for p in model.parameters())
            torch.manual_seed(seed)  # dropout: the same stream in both arms of a seed
            r = train_one_seed(cfg, model, pad_id, (enc["train"], train_y), (enc["val"], val_y), seed, device, amp)
            pred = predict(model, enc["test"], pad_id, cfg.eval_batch_size, device, amp)
            test_mcc = mcc(test_y, pred)
            acc = float((pred == test_y).mean())
            pred_rel = f"predictions/seed{seed}.csv"
            _write_predictions(tmp / pred_rel, test_y, pred, data.labels)
            per_seed.append({"seed": seed, **r, "test_mcc": test_mcc, "test_accuracy": acc, "predictions": pred_rel})
            print0(f"seed {seed} | best step {r['best_step']} | val mcc {r['val_mcc']:.4f} | "
                   f"test mcc {test_mcc:.4f} | test acc {acc:.4f} | {r['train_seconds']:.0f} s")
            del model
        mccs = [s["test_mcc"] for s in per_seed]
        results = {
            "format": RESULTS_FORMAT,
            "task": task_summary(task),
            "data_source": data.source,
            "data_provenance": data.provenance,   # the commit and sha256 of each file the numbers come from
            "labels": list(data.labels),
            "label_ids": {str(lab): i for i, lab in enumerate(data.labels)},
            "counts": {"train": len(train_y), "val": len(val_y), "test": len(test_y)},
            "validation": cfg.validation,
            "model": {**model_info, "parameters": n_params},
            "device": str(device),
            **derived,
            "seeds": per_seed,
            "test_mcc_mean": statistics.fmean(mccs),
            "test_mcc_sd": statistics.stdev(mccs) if len(mccs) > 1 else 0.0,
            "val_mcc_mean": statistics.fmean(s["val_mcc"] for s in per_seed),
            "versions": {"python": platform.python_version(), "torch": torch.__version__,
                         "transformers": transformers.__version__},
        }
        atomic_write_json(tmp / RESULTS, results)
        atomic_write_json(tmp / CONFIG, {"finetune": config_to_dict(cfg), "derived": derived,
                                         "labels": list(data.labels), "model": model_info})
    print0(f"{task.name}: test mcc {results['test_mcc_mean']:.4f} ± {results['test_mcc_sd']:.4f} "
           f"over {len(mccs)} seed(s) -> {out / RESULTS}")
    return results


def _write_predictions(path: Path, y: np.ndarray, pred: np.ndarray, labels: list[Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["index", "label", "pred"])  # source label values; ids are their index in results' labels
    for i, (a, b) in enumerate(zip(y.tolist(), pred.tolist())):
        w.writerow([i, labels[a], labels[b]])
    path.write_text(buf.getvalue(), encoding="utf-8")


def read_predictions(path: str | Path) -> tuple[list[str], list[str]]:
    with open(path, encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [r["label"] for r in rows], [r["pred"] for r in rows]


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------

class _ListTasks(argparse.Action):
    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        try:
            print("\n".join(list_tasks()), flush=True)
        except BrokenPipeError:  # `--list-tasks | head`: the reader has all it wanted; not an error
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        parser.exit(0)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--list-tasks", action=_ListTasks, help="print the registered tasks and exit")
    add_dataclass_args(parser, FinetuneConfig)


def main(args: argparse.Namespace) -> int:
    cfg = dataclass_from_args(FinetuneConfig, args)
    run_finetune(cfg)
    return 0


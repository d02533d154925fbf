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
--strands both: reverse-complement augmentation — each training example of each batch is read on a strand drawn
at random (p = 1/2) from its own generator seeded from s (so the batches are the same as a forward run's), and at
validation and test each sequence's prediction is the argmax of the mean of its two strands' logits (the mean of
their log-probabilities up to a per-sequence constant: two strands as two pieces of evidence, Caduceus'
post-hoc conjoining). Random strands rather than both copies keep an optimizer step the same cost and
--steps x --batch-size the same number of examples as a forward run.

--cv N: the NT paper's protocol (Dalla-Torre et al., Nature Methods 2024: figures are "mean MCC ± 2 × s.d. from
the tenfold cross-validation procedure"): the training split is cut into N seeded, class-stratified folds
(common.cv_folds); fold k trains on the other N-1 folds, keeps its best-validation-MCC checkpoint on fold k and
is scored once on the task's test split; fold k is seeded --seed+k, so fold k of two arms is the same experiment.
N fine-tunings per run; results.json reports mean ± sd over the folds (and 2 sd, as the paper prints it).

Output (written atomically: a failed run leaves nothing; the layout and results.json keys: eval/common.py):
OUT/results.json (+ the derived max length, truncation and bp per token; per seed the sha256 of the head's
initial weights, of the batch order and of the dropout RNG state: what two arms of a seed share; --cv: `cv`, the
folds and their validation rows' sha256), OUT/config.json (the resolved FinetuneConfig + what was derived),
OUT/predictions/seed<S>.csv (fold<K>.csv under --cv), OUT/folds.json (--cv: each fold's validation rows).
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tinydnabert.config import add_dataclass_args, dataclass_from_args
from tinydnabert.console import print0
from tinydnabert.errors import InputError
from tinydnabert.eval.common import (
    FOLDS_FILE,
    RESULTS,
    RUN_ONLY,
    EvalConfig,
    EvalSettings,
    Folds,
    Splits,
    cv_folds,
    load_task,
    mcc,
    prediction_file,
    results_record,
    reverse_complement,
    task_splits,
    write_predictions,
    write_run,
)
from tinydnabert.eval.encoder import EncoderSpec, autocast_for, encoder_spec, model_source
from tinydnabert.eval.tasks import list_tasks
from tinydnabert.io import atomic_output_dir, atomic_write_json

RESULTS_FORMAT = "tinydnabert-finetune/1"


@dataclass(kw_only=True)
class FinetuneSettings(EvalSettings):
    """The fine-tuning protocol over the shared settings: what a benchmark also sets once for every arm."""

    command = "finetune"

    steps: int = field(default=5000, metadata={"help": "optimizer steps per seed"})
    batch_size: int = field(default=64, metadata={"help": "sequences per optimizer step"})
    lr: float = field(default=1e-4, metadata={"help": "peak learning rate (after warmup)"})
    warmup_steps: int = field(default=500, metadata={"help": "linear warmup steps, then linear decay to 0"})
    weight_decay: float = field(default=1e-5, metadata={"help": "AdamW weight decay"})
    grad_clip: float = field(default=1.0, metadata={"help": "max gradient norm (0 = no clipping)"})
    eval_every: int = field(default=500, metadata={"help": "validate every N steps (and at the last step)"})
    eval_batch_size: int = field(default=128, metadata={"help": "sequences per evaluation batch", **RUN_ONLY})
    log_every: int = field(default=50, metadata={"help": "print a progress line every N steps", **RUN_ONLY})

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("steps", "batch_size", "eval_every", "eval_batch_size", "log_every"):
            if getattr(self, name) < 1:
                raise InputError(f"{self.command}: --{name.replace('_', '-')} {getattr(self, name)} must be >= 1")
        if not 0 <= self.warmup_steps < self.steps:
            raise InputError(f"{self.command}: --warmup-steps {self.warmup_steps} must be in [0, --steps "
                             f"{self.steps}); with fewer steps use about 10% of them")
        if self.lr <= 0 or self.weight_decay < 0 or self.grad_clip < 0:
            raise InputError(f"{self.command}: --lr must be > 0, --weight-decay and --grad-clip >= 0")


@dataclass(kw_only=True)
class FinetuneConfig(FinetuneSettings, EvalConfig):
    """One fine-tuning run: the shared evaluation settings and run (EvalConfig) + the fine-tuning protocol.
    --max-length 0: the task's longest tokenized sequence, capped at the model's."""

    command = "finetune"

    cv: int = field(default=0, metadata={
        "help": "N-fold cross-validation on the training split, the NT paper's protocol (it uses 10): fold k trains "
                "on the other folds, selects its checkpoint on fold k, is scored on the test split, seeded "
                "--seed+k; reports mean ± sd over folds (0 = off: --seeds with a carved validation split)"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.cv < 0 or self.cv == 1:
            raise InputError(f"finetune: --cv {self.cv}: use 0 (off) or N >= 2 folds (the NT paper uses 10)")
        if self.cv and self.seeds != 1:
            raise InputError(f"finetune: --cv {self.cv} with --seeds {self.seeds}: the folds are the repeats (fold k "
                             "is seeded --seed+k); drop --seeds")
        if self.cv and self.validation != "carve":
            raise InputError(f"finetune: --cv {self.cv} with --validation {self.validation}: each fold is its own "
                             "validation set; drop --validation")

    @property
    def protocol_name(self) -> str:
        return "nt-cv" if self.cv else "finetune"


# ---------------------------------------------------------------------------------------------
# Model and tokenizer
# ---------------------------------------------------------------------------------------------

def classifier_spec(cfg: FinetuneConfig, model_dir: Path, label_names: list[str]) -> EncoderSpec:
    """What both arms share before any weight exists: the encoder's architecture with a head of
    len(label_names) classes, the tokenizer, the token limit."""
    id2label = {i: n for i, n in enumerate(label_names)}
    label2id = {n: i for i, n in id2label.items()}
    return encoder_spec(cfg.model, cfg.scratch_from, model_dir, num_labels=len(label_names), id2label=id2label,
                        label2id=label2id)


def build_classifier(spec: EncoderSpec, seed: int):
    """The classifier for one seed. Pretrained: the encoder's weights; scratch: every weight random from
    `seed`. Either way the head is then initialised from `seed` alone, so the two arms of a seed start
    from the same head and differ only in the encoder (the paired comparison of the benchmark)."""
    import torch
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(seed)
    if spec.pretrained:
        model = AutoModelForSequenceClassification.from_pretrained(str(spec.path), config=spec.config)
    else:
        model = AutoModelForSequenceClassification.from_config(spec.config)
    torch.manual_seed(seed)
    model.classifier.apply(model._init_weights)
    return model


def tokenize(tok, seqs: list[str], max_length: int) -> list[list[int]]:
    if not seqs:  # --cv's whole-train Splits has no validation part (the tokenizer raises on [])
        return []
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


def logits(model, ids: list[list[int]], pad_id: int, batch_size: int, device, amp) -> np.ndarray:
    """float32 [n, classes], in input order (length-sorted batches pad less). Leaves the model in eval mode."""
    import torch

    model.eval()
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    out = None
    with torch.no_grad(), amp():
        for s in range(0, len(order), batch_size):
            chunk = order[s:s + batch_size]
            x, m = collate([ids[i] for i in chunk], pad_id, device)
            z = model(input_ids=x, attention_mask=m).logits.float().cpu().numpy()
            out = np.empty((len(ids), z.shape[1]), dtype=np.float32) if out is None else out
            out[chunk] = z
    return out


def predict(model, ids: list[list[int]], pad_id: int, batch_size: int, device, amp,
            rc_ids: list[list[int]] | None = None) -> np.ndarray:
    """Class ids in input order; with `rc_ids` (the reverse complements' ids, --strands both) the argmax of the
    mean of the two strands' logits."""
    z = logits(model, ids, pad_id, batch_size, device, amp)
    if rc_ids is not None:
        z = (z + logits(model, rc_ids, pad_id, batch_size, device, amp)) / 2
    model.train()
    return z.argmax(-1)




def train_one_seed(cfg: FinetuneConfig, model, pad_id: int, train: tuple[list, np.ndarray],
                   val: tuple[list, np.ndarray], seed: int, device, amp, train_rc: list | None = None,
                   val_rc: list | None = None) -> dict[str, Any]:
    """The loop: `steps` optimizer steps, validation every `eval_every`, the best state restored. With the
    reverse complements' ids (`train_rc`, `val_rc`: --strands both) each example's strand is drawn at random
    per step, and validation averages the two strands' logits."""
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
    # the strands: a stream of their own, so a forward run and a both-strands run of a seed get the same batches
    strand_rng = np.random.default_rng([seed, 1])
    y_all = torch.as_tensor(train_y, dtype=torch.long)

    def batches():
        while True:  # epochs of a seeded permutation; the last partial batch is dropped
            perm = torch.randperm(len(train_ids), generator=gen).tolist()
            for s in range(0, len(perm) - cfg.batch_size + 1, cfg.batch_size):
                yield perm[s:s + cfg.batch_size]
            if len(perm) < cfg.batch_size:  # tiny data: sample with replacement
                yield torch.randint(len(perm), (cfg.batch_size,), generator=gen).tolist()

    it = batches()
    order = hashlib.sha256()  # the batch order: positions into `train`, int64, step after step
    best = {"val_mcc": -math.inf, "step": 0, "state": None}
    history: list[dict[str, float]] = []
    t0 = t_log = time.perf_counter()
    last_log = 0
    for step in range(1, cfg.steps + 1):
        idx = next(it)
        order.update(np.asarray(idx, dtype="<i8").tobytes())
        if train_rc is None:
            x, m = collate([train_ids[i] for i in idx], pad_id, device)
        else:  # reverse-complement augmentation: each example on a random strand
            flip = strand_rng.random(len(idx)) < 0.5
            x, m = collate([train_rc[i] if f else train_ids[i] for i, f in zip(idx, flip)], pad_id, device)
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
            pv = predict(model, val_ids, pad_id, cfg.eval_batch_size, device, amp, val_rc)
            v = mcc(val_y, pv)
            history.append({"step": step, "train_loss": round(float(loss.item()), 5), "val_mcc": round(v, 5)})
            print0(f"seed {seed} | step {step:06d} | val mcc {v:.4f}" + (" (best)" if v > best["val_mcc"] else ""))
            if v > best["val_mcc"]:  # ties keep the earlier step
                best = {"val_mcc": v, "step": step,
                        "state": {k: t.detach().to("cpu", copy=True) for k, t in model.state_dict().items()}}
    model.load_state_dict(best["state"])
    return {"best_step": best["step"], "val_mcc": best["val_mcc"], "history": history,
            "batches_sha256": order.hexdigest(), "train_seconds": round(time.perf_counter() - t0, 2)}


# ---------------------------------------------------------------------------------------------
# The stage
# ---------------------------------------------------------------------------------------------

def encode_splits(cfg: FinetuneConfig, spec: EncoderSpec, splits: Splits) -> tuple[dict[str, list], dict]:
    """Token ids of every split at one max length (--max-length, else the longest sequence, capped at the
    model's), and what was derived: the length, how many sequences it truncates, bp per token. --strands both:
    also each split's reverse complements ('train_rc', ...), and the length covers both strands."""
    if cfg.max_length > spec.max_tokens:
        raise InputError(f"finetune: --max-length {cfg.max_length} exceeds what the model's position "
                         f"table allows ({spec.max_tokens}); use <= {spec.max_tokens}")
    tok = spec.tokenizer
    parts = {"train": splits.train[0], "val": splits.val[0], "test": splits.test[0]}
    if cfg.strands == "both":
        parts.update({f"{name}_rc": [reverse_complement(s, f"{name} sequence {i + 1}") for i, s in enumerate(seqs)]
                      for name, seqs in list(parts.items())})
    everything = [s for seqs in parts.values() for s in seqs]
    lengths = [len(r) for r in tok(everything, add_special_tokens=True, verbose=False)["input_ids"]]
    max_len = cfg.max_length or min(max(lengths), spec.max_tokens)
    enc = {name: tokenize(tok, seqs, max_len) for name, seqs in parts.items()}
    n = len(splits.train[0]) + len(splits.val[0]) + len(splits.test[0])
    over = np.array(lengths) > max_len
    over = over[:n] | over[n:] if cfg.strands == "both" else over  # a sequence truncated on either strand
    n_train = len(splits.train[0])
    derived = {"max_length": max_len, "model_max_tokens": spec.max_tokens,
               "truncated_sequences": int(over.sum()),
               "median_tokens": float(np.median(lengths[:n])),
               "bp_per_token": round(float(np.mean([len(x) for x in splits.train[0]]) /
                                           max(1e-9, np.mean(lengths[:n_train]) - 2)), 3)}
    return enc, derived


def state_sha256(module) -> str:
    """sha256 of a module's weights (names and float bytes, in name order): e.g. the head a seed starts from."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().to("cpu").contiguous().numpy().tobytes())
    return h.hexdigest()


def run_seed(cfg: FinetuneConfig, spec: EncoderSpec, enc: dict[str, list], splits: Splits, seed: int, device,
             amp, labels: list[Any], run_dir: Path, fold: int | None = None) -> tuple[dict[str, Any], int]:
    """One seed (or, under --cv, fold `fold` seeded `seed`): build, train, evaluate once on test, write its
    predictions. -> (its results.json entry, the classifier's parameter count). The entry records what the two
    arms of a seed must share: the head's initial weights, the batch order and the dropout RNG state (sha256)."""
    import torch

    model = build_classifier(spec, seed)
    head = state_sha256(model.classifier)
    torch.manual_seed(seed)  # dropout: the same stream in both arms of a seed
    r = train_one_seed(cfg, model, spec.pad_id, (enc["train"], splits.train[1]), (enc["val"], splits.val[1]),
                       seed, device, amp, enc.get("train_rc"), enc.get("val_rc"))
    # The generators' state after training (CPU, and CUDA where dropout draws on a GPU): equal in both arms of a
    # seed only if they started from the same seed and drew the same dropout masks' worth of numbers, step by step.
    states = [torch.get_rng_state()] + (torch.cuda.get_rng_state_all() if device.type == "cuda" else [])
    rng = hashlib.sha256(b"".join(s.numpy().tobytes() for s in states)).hexdigest()
    test_y = splits.test[1]
    pred = predict(model, enc["test"], spec.pad_id, cfg.eval_batch_size, device, amp, enc.get("test_rc"))
    test_mcc, acc = mcc(test_y, pred), float((pred == test_y).mean())
    write_predictions(run_dir / prediction_file(seed, fold), test_y, pred, labels)
    name = f"seed {seed}" if fold is None else f"fold {fold} (seed {seed})"
    print0(f"{name} | best step {r['best_step']} | val mcc {r['val_mcc']:.4f} | "
           f"test mcc {test_mcc:.4f} | test acc {acc:.4f} | {r['train_seconds']:.0f} s")
    entry = {"seed": seed, **({} if fold is None else {"fold": fold}), **r, "test_mcc": test_mcc,
             "test_accuracy": acc, "predictions": prediction_file(seed, fold), "head_init_sha256": head,
             "dropout_rng_sha256": rng}
    return entry, sum(p.numel() for p in model.parameters())


def fold_inputs(enc: dict[str, list], folds: Folds, k: int) -> tuple[dict[str, list], Splits]:
    """Fold k's token ids and Splits, cut from the whole training split's (tokenized once): train = the other
    folds, validation = fold k, test = the task's test split."""
    tr, va = folds.split(k)
    seqs, y = folds.whole.train
    out = {"train": [enc["train"][i] for i in tr], "val": [enc["train"][i] for i in va], "test": enc["test"]}
    if "train_rc" in enc:
        out.update(train_rc=[enc["train_rc"][i] for i in tr], val_rc=[enc["train_rc"][i] for i in va],
                   test_rc=enc["test_rc"])
    return out, Splits(([seqs[i] for i in tr], y[tr]), ([seqs[i] for i in va], y[va]), folds.whole.test)


def run_finetune(cfg: FinetuneConfig) -> dict[str, Any]:
    """Fine-tune cfg.seeds models (or cfg.cv, one per fold) and write OUT/{results.json, config.json,
    predictions/} (and folds.json under --cv). Returns results."""
    import transformers

    from tinydnabert.pretrain.distributed import pick_device

    transformers.logging.set_verbosity_error()  # "newly initialized classifier weights" is expected here
    transformers.logging.disable_progress_bar()
    task, data = load_task(cfg)
    device = pick_device(cfg.device, "finetune")
    folds = cv_folds(data, cfg.seed, cfg.cv, cfg.max_train_samples) if cfg.cv else None
    splits = folds.whole if folds else task_splits(data, cfg.seed, cfg.val_fraction, cfg.validation,
                                                   cfg.max_train_samples)
    amp = autocast_for(device, cfg.bf16)
    out = Path(cfg.out)
    with atomic_output_dir(out, overwrite=cfg.overwrite) as tmp, tempfile.TemporaryDirectory() as work:
        spec = classifier_spec(cfg, model_source(cfg.model, cfg.scratch_from, Path(work)),
                               [str(lab) for lab in data.labels])
        enc, derived = encode_splits(cfg, spec, splits)
        n = splits.counts()
        split_line = (f"{cfg.cv} folds of {n['train']} training rows ({'' if folds.stratified else 'not '}stratified)"
                      if folds else f"train {n['train']} | val {n['val']}")
        print0(f"finetune {task.name} ({spec.info['kind']}): {split_line} | test {n['test']} | labels {data.labels} | "
               f"max_length {derived['max_length']} tokens ({derived['truncated_sequences']} truncated) | "
               f"strands {cfg.strands} | {device}")
        if folds:
            runs = [run_seed(cfg, spec, *fold_inputs(enc, folds, k), cfg.seed + k, device, amp, data.labels, tmp,
                             fold=k) for k in range(cfg.cv)]
            n = {"train": n["train"], "test": n["test"], "folds": cfg.cv}   # train: the rows the folds partition
            extra = {"validation": "cv-fold", "cv": folds.record()}
            atomic_write_json(tmp / FOLDS_FILE, folds.listing())
        else:
            runs = [run_seed(cfg, spec, enc, splits, cfg.seed + i, device, amp, data.labels, tmp)
                    for i in range(cfg.seeds)]
            extra = {}
        per_seed, n_params = [entry for entry, _ in runs], runs[-1][1]
        results = results_record(cfg, RESULTS_FORMAT, data, n, {**spec.info, "parameters": n_params}, device,
                                 per_seed, **derived, **extra)
        if folds:  # the NT paper's figures are mean ± 2 s.d. over its 10 folds
            results["cv"]["test_mcc_2sd"] = 2 * results["test_mcc_sd"]
        write_run(tmp, cfg, results, derived=derived, labels=list(data.labels), model=spec.info)
    if folds:
        print0(f"{task.name}: test mcc {results['test_mcc_mean']:.4f} ± {2 * results['test_mcc_sd']:.4f} (2 sd) "
               f"over {cfg.cv} folds -> {out / RESULTS}")
    else:
        print0(f"{task.name}: test mcc {results['test_mcc_mean']:.4f} ± {results['test_mcc_sd']:.4f} "
               f"over {cfg.seeds} seed(s) -> {out / RESULTS}")
    return results


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

"""Quality per token: our engine + loader against a plain Hugging Face pipeline at equal tokens.

    python benchmarks/pretrain_quality.py          # after benchmarks/pretrain_scaling.py (reuses its run)

Same model shape and initial weights, same tokenizer and chr20 shards, same optimizer settings (AdamW, peak LR
held after warmup, weight decay, clipping), same number of sequences of the same length:
  * ours: the pretrain_scaling run (DeepSpeed ZeRO-1 engine, tinydnabert.pretrain.data's packed rows and masking),
    its checkpoint at --steps;
  * hf:   transformers.Trainer + DataCollatorForLanguageModeling on 128-token blocks of the same training
    samples ("<s> ids </s>" concatenated and cut, as run_mlm's group_texts does), shuffled over the whole
    chromosome by the Trainer's sampler.
Both are then measured the same way: validation MLM loss on the same masked validation rows (one fixed
masking), the linear probe and fine-tuning through one shared protocol (tinydnabert.eval.probe / finetune),
3 seeds each, paired by seed against the same scratch baseline. A change to data order, masking or the
optimizer that learns less per token shows up here; benchmarks/throughput.py measures only speed.

Writes OUT/pretrain_quality.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pretrain_scaling as scaling  # the script beside this one (python puts its directory on sys.path)

from tinydnabert.eval.common import run_scores
from tinydnabert.eval.stats import fmt_interval, paired_interval
from tinydnabert.io import atomic_write_json, atomic_write_text

REPO = Path(__file__).resolve().parents[1]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    p.add_argument("--work", default=str(REPO / "runs" / "pretrain_scaling"), help="pretrain_scaling's work dir")
    p.add_argument("--scaling", default="", help="pretrain_scaling.json of the run (default: OUT's)")
    p.add_argument("--steps", type=int, default=2000, help="pretraining steps of both arms (a scaling budget)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--arm", action="append", default=[], metavar="NAME=EXPORT",
                   help="another pretrained export to measure the same way (e.g. ours with other data settings)")
    p.add_argument("--protocols", default="", help="override the scaling run's protocols (e.g. probe)")
    return p.parse_args()


def blocks(shards: Path, split: str, seq_len: int) -> np.ndarray:
    """[rows, seq_len] int64: every sample of the split as "<s> ids </s>", concatenated, cut into rows."""
    from tinydnabert import formats
    from tinydnabert.prep.shards import read_shard
    from tinydnabert.pretrain.data import pack_rows

    samples = [s.ids for p in formats.shard_paths(shards, split) for s in read_shard(p, meta=False)]
    return pack_rows(samples, seq_len).astype(np.int64)


def train_hf(setup: dict, shards: Path, out: Path, steps: int, threads: int) -> Path:
    """The plain pipeline: Trainer + DataCollatorForLanguageModeling, saved as an HF directory."""
    if (out / "config.json").is_file():
        return out
    import shutil

    import torch
    from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments

    from tinydnabert.prep.tokenizer import load_tokenizer
    from tinydnabert.pretrain.model import ModelConfig, build_model

    torch.set_num_threads(threads)
    tok = load_tokenizer(shards)
    torch.manual_seed(setup["seed"])  # the weights our run started from (train.py seeds the same way)
    cfg = ModelConfig(hidden_size=setup["hidden"], num_hidden_layers=setup["layers"],
                      num_attention_heads=setup["heads"], intermediate_size=4 * setup["hidden"]).with_tokenizer(tok)
    model = build_model(cfg)
    rows = blocks(shards, "train", setup["seq_len"])
    train = [{"input_ids": r} for r in rows]
    args = TrainingArguments(
        output_dir=str(out.with_name(out.name + ".trainer")), max_steps=steps,
        per_device_train_batch_size=setup["batch"],
        learning_rate=setup["lr"], warmup_steps=setup["warmup"], lr_scheduler_type="constant_with_warmup",
        weight_decay=1e-5, adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8, max_grad_norm=1.0,
        logging_steps=100, save_strategy="no", report_to=[], seed=setup["seed"], dataloader_num_workers=0,
        use_cpu=True, disable_tqdm=True)
    collator = DataCollatorForLanguageModeling(tok, mlm_probability=0.15)
    Trainer(model=model, args=args, train_dataset=train, data_collator=collator).train()
    tmp = out.with_name(out.name + ".tmp")
    model.save_pretrained(str(tmp))
    tok.save_pretrained(str(tmp))
    os.replace(tmp, out)
    shutil.rmtree(out.with_name(out.name + ".trainer"), ignore_errors=True)
    return out


def val_mlm_loss(model_dir: Path, rows: np.ndarray, vocab: int, batch: int = 64) -> float:
    """Masked-token MLM loss on `rows` with one fixed masking (seed 0): the same positions for every model."""
    import torch
    from transformers import AutoModelForMaskedLM

    from tinydnabert.pretrain.data import DataConfig, mask_tokens

    ids, labels = mask_tokens(rows, np.random.default_rng(0), vocab, DataConfig())
    model = AutoModelForMaskedLM.from_pretrained(str(model_dir)).eval()
    total, n = 0.0, 0
    with torch.no_grad():
        for s in range(0, len(ids), batch):
            x, y = torch.from_numpy(ids[s:s + batch]), torch.from_numpy(labels[s:s + batch])
            logits = model(input_ids=x).logits
            m = y != -100
            total += float(torch.nn.functional.cross_entropy(logits[m], y[m], reduction="sum"))
            n += int(m.sum())
    return total / n


def main() -> int:
    a = parse_args()
    work, out = Path(a.work), Path(a.out)
    scaling_json = Path(a.scaling) if a.scaling else out / "pretrain_scaling.json"
    if not scaling_json.is_file() or not (work / "exports" / f"step{a.steps:06d}" / "config.json").is_file():
        sys.exit(f"error: {work}: run benchmarks/pretrain_scaling.py first (with step {a.steps} among its budgets)")
    setup = json.loads(scaling_json.read_text())["setup"]
    setup.setdefault("seed", 0)
    ev = argparse.Namespace(**{**setup, "threads": a.threads})
    shards = Path(setup["shards"]) if setup.get("shards") else work / "shards"
    ours = work / "exports" / f"step{a.steps:06d}"
    t0 = time.perf_counter()
    hf = train_hf(setup, shards, work / "exports" / f"hf-step{a.steps:06d}", a.steps, a.threads)
    t_hf = time.perf_counter() - t0
    val = blocks(shards, "val", setup["seq_len"])
    from tinydnabert.prep.tokenizer import load_tokenizer

    vocab = len(load_tokenizer(shards))
    extra = dict(arm.split("=", 1) for arm in a.arm)
    models = {"ours": ours, "hf": hf, **{k: Path(v) for k, v in extra.items()}}
    losses = {k: val_mlm_loss(m, val, vocab) for k, m in models.items()}
    rows = []
    for task in setup["tasks"].split(","):
        for protocol in (a.protocols or setup["protocols"]).split(","):
            base = work / "eval" / task.replace("/", "__") / protocol
            scratch = scaling.evaluate(ev, "scratch", ours, task, protocol, base / "scratch")
            names = {"ours": f"step{a.steps:06d}", "hf": f"hf-step{a.steps:06d}", **{k: k for k in extra}}
            res = {k: scaling.evaluate(ev, str(m), m, task, protocol, base / names[k]) for k, m in models.items()}
            seeds = {k: [r["test_mcc"] for r in v["seeds"]] for k, v in res.items()}
            by_id = {k: run_scores(v) for k, v in res.items()}  # paired with scratch by seed id
            s_seeds = [r["test_mcc"] for r in scratch["seeds"]]
            rows.append({"task": task, "protocol": protocol, "scratch_mcc": scratch["test_mcc_mean"],
                         **{f"{k}_mcc": v["test_mcc_mean"] for k, v in res.items()},
                         **{f"{k}_vs_scratch": paired_interval(by_id[k], run_scores(scratch), names=(k, "scratch"))
                            for k in models},
                         **{f"{k}_vs_hf": paired_interval(by_id[k], by_id["hf"], names=(k, "hf"))
                            for k in models if k != "hf"},
                         "seeds": seeds, "scratch_seeds": s_seeds})
    tokens = a.steps * setup["batch"] * setup["seq_len"]
    lines = [f"Quality per token at {tokens / 1e6:.1f}M tokens ({a.steps} steps x {setup['batch']} x "
             f"{setup['seq_len']}; {setup['layers']}x{setup['hidden']}, LR {setup['lr']:g} held after "
             f"{setup['warmup']} warmup steps): validation MLM loss on the same masked rows — "
             + ", ".join(f"{k} {v:.4f}" for k, v in losses.items()) + " (hf = Trainer + collator).", "",
             "| task | protocol | arm | MCC | − scratch [95% CI] | − hf [95% CI] |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['task']} | {r['protocol']} | scratch | {r['scratch_mcc']:.3f} | | |")
        for k in models:
            vs_hf = fmt_interval(r[f"{k}_vs_hf"]) if k != "hf" else ""
            lines.append(f"| {r['task']} | {r['protocol']} | {k} | {r[f'{k}_mcc']:.3f} | "
                         f"{fmt_interval(r[f'{k}_vs_scratch'])} | {vs_hf} |")
    md = "\n".join(lines) + "\n"
    atomic_write_json(out / "pretrain_quality.json", {"setup": {**setup, "steps": a.steps, "tokens": tokens,
                                                               "hf_train_seconds": round(t_hf, 1)},
                                                     "val_mlm_loss": losses, "rows": rows})
    atomic_write_text(out / "pretrain_quality.md", md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())

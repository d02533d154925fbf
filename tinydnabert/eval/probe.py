"""The linear probe: a frozen encoder's mean-pooled embeddings, logistic regression, test MCC.

    tinydnabert probe --model RUN/export --task gue/prom_core_all --out probe/prom_core_all --seeds 3
    tinydnabert probe --model scratch --scratch-from RUN/export --task gue/prom_core_all --out probe/scratch

The standard cheap evaluation of DNA language models (BEND; the NT paper's probing): no weight of the
encoder changes, so what the probe measures is what pretraining put into the representation. Per seed:
the same train / validation carve as fine-tuning (`finetune.task_splits`), features standardised on
the train rows, an L2 logistic regression for each C of --c-grid, the C with the best validation MCC
evaluated once on test. "scratch" is a randomly initialised encoder of the same architecture (seeded:
a different random encoder per seed), the baseline a pretrained encoder must beat.

Output (atomic): OUT/results.json (the fine-tuning results' shape: per-seed val/test MCC, mean ± sd,
the C chosen), OUT/config.json, OUT/predictions/seed<S>.csv.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from tinydnabert.config import add_dataclass_args, config_to_dict, dataclass_from_args
from tinydnabert.console import print0
from tinydnabert.errors import InputError
from tinydnabert.eval.finetune import (
    RESULTS,  # the same file name as fine-tuning's: the benchmark reads both the same way
)
from tinydnabert.io import atomic_output_dir, atomic_write_json

RESULTS_FORMAT = "tinydnabert-probe/1"


@dataclass
class ProbeConfig:
    model: str = field(metadata={"help": "HF export directory, a pretraining checkpoint, or 'scratch' "
                                         "(a random encoder; see --scratch-from)"})
    task: str = field(metadata={"help": "task name (see `tinydnabert finetune --list-tasks`) or any name with --data"})
    out: str = field(metadata={"help": "output directory (results.json, config.json, predictions/)"})
    data: Optional[str] = field(default=None, metadata={"help": "task data instead of the registry's (as finetune)"})
    scratch_from: Optional[str] = field(default=None, metadata={
        "help": "with --model scratch: the export whose config.json and tokenizer define the random encoder"})
    seed: int = field(default=0, metadata={"help": "first seed (validation carve; scratch encoder init)"})
    seeds: int = field(default=3, metadata={"help": "number of seeds (seed, seed+1, ...)"})
    val_fraction: float = field(default=0.1, metadata={"help": "fraction of train carved out for validation"})
    validation: str = field(default="carve", metadata={
        "help": "carve: from train with the seed; dev: the task's dev split", "choices": ["carve", "dev"]})
    max_train_samples: int = field(default=0, metadata={"help": "seeded stratified subset of N train rows (0 = all)"})
    max_length: int = field(default=0, metadata={"help": "tokens per sequence incl. <s> </s> (0 = the model's)"})
    pooling: str = field(default="mean", metadata={"help": "mean or cls", "choices": ["mean", "cls"]})
    layer: int = field(default=-1, metadata={"help": "hidden state to probe (-1 = last layer)"})
    batch_size: int = field(default=128, metadata={"help": "sequences per embedding forward pass"})
    c_grid: str = field(default="0.001,0.01,0.1,1,10", metadata={
        "help": "inverse L2 strengths tried; the best on validation MCC is kept"})
    device: str = field(default="auto", metadata={"help": "auto, cpu or cuda", "choices": ["auto", "cpu", "cuda"]})
    overwrite: bool = field(default=False, metadata={"help": "replace an existing --out"})
    cache_dir: Optional[str] = field(default=None, metadata={"help": "download cache directory (hub tasks)"})

    def __post_init__(self) -> None:
        if self.seeds < 1 or self.batch_size < 1:
            raise InputError("probe: --seeds and --batch-size must be >= 1")
        if not 0.0 < self.val_fraction < 0.5:
            raise InputError(f"probe: --val-fraction {self.val_fraction} must be in (0, 0.5)")
        try:
            grid = [float(c) for c in self.c_grid.split(",") if c.strip()]
        except ValueError:
            grid = []
        if not grid or min(grid) <= 0:
            raise InputError(f"probe: --c-grid {self.c_grid!r} must be positive numbers, e.g. 0.01,0.1,1")
        if self.model == "scratch" and not self.scratch_from:
            raise InputError("probe: --model scratch needs --scratch-from EXPORT (its architecture and tokenizer)")

    @property
    def grid(self) -> list[float]:
        return [float(c) for c in self.c_grid.split(",") if c.strip()]


def fit_probe(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
              grid: list[float], seed: int) -> tuple[Any, float, float]:
    """(fitted pipeline, C chosen, its validation MCC): standardise on train, L2 logistic regression per C."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from tinydnabert.eval.finetune import mcc

    best: tuple[Any, float, float] | None = None
    for c in grid:
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000, random_state=seed))
        clf.fit(x_train, y_train)
        v = mcc(y_val, clf.predict(x_val))
        if best is None or v > best[2]:  # ties keep the stronger regularisation (listed first)
            best = (clf, c, v)
    return best


def _encoder(cfg: ProbeConfig, model_dir: Path, seed: int, device):
    """The frozen encoder and its tokenizer: the export's weights, or a seeded random init of its config."""
    import torch
    from transformers import AutoConfig, AutoModel

    from tinydnabert.eval.embed import load_encoder
    from tinydnabert.eval.finetune import load_tokenizer_dir

    if cfg.model != "scratch":
        return load_encoder(model_dir, device)
    torch.manual_seed(seed)
    model = AutoModel.from_config(AutoConfig.from_pretrained(str(model_dir)), add_pooling_layer=False)
    return model.to(device).eval(), load_tokenizer_dir(model_dir)


def run_probe(cfg: ProbeConfig) -> dict[str, Any]:
    """Probe cfg.seeds times and write OUT/{results.json, config.json, predictions/}. Returns the results."""
    import torch
    import transformers

    from tinydnabert.eval.embed import embed_sequences
    from tinydnabert.eval.finetune import (
        _write_predictions,
        mcc,
        resolve_model_dir,
        resolve_scratch_source,
        resolve_task,
        task_splits,
    )
    from tinydnabert.eval.tasks import load_task_data, task_summary

    transformers.logging.set_verbosity_error()
    task = resolve_task(cfg)
    data = load_task_data(task, cfg.data, cache_dir=cfg.cache_dir)
    if "test" not in data.splits:
        raise InputError(f"{data.source}: no test split (found {sorted(data.splits)}); the probe reports test MCC")
    from tinydnabert.pretrain.distributed import pick_device

    device = pick_device(cfg.device, "probe")
    out = Path(cfg.out)
    with atomic_output_dir(out, overwrite=cfg.overwrite) as tmp, tempfile.TemporaryDirectory() as work:
        model_dir = (resolve_scratch_source(cfg.scratch_from, Path(work)) if cfg.model == "scratch"
                     else resolve_model_dir(cfg.model, Path(work)))
        per_seed: list[dict[str, Any]] = []
        cache: dict[str, np.ndarray] = {}  # a pretrained encoder embeds each distinct sequence once
        for i in range(cfg.seeds):
            seed = cfg.seed + i
            t0 = time.perf_counter()
            split = task_splits(data, seed, cfg.val_fraction, cfg.validation, cfg.max_train_samples)
            model, tok = _encoder(cfg, model_dir, seed, device)
            if cfg.model == "scratch":
                cache = {}  # a new random encoder per seed
            seqs = [s for s in dict.fromkeys(split.train[0] + split.val[0] + split.test[0]) if s not in cache]
            if seqs:
                vecs, _ = embed_sequences(model, tok, seqs, cfg.pooling, cfg.layer, cfg.batch_size, cfg.max_length)
                cache.update(zip(seqs, vecs))
            x = {name: np.stack([cache[s] for s in part[0]]) for name, part in
                 (("train", split.train), ("val", split.val), ("test", split.test))}
            clf, c, v = fit_probe(x["train"], split.train[1], x["val"], split.val[1], cfg.grid, seed)
            pred = clf.predict(x["test"])
            test_mcc = mcc(split.test[1], pred)
            rel = f"predictions/seed{seed}.csv"
            _write_predictions(tmp / rel, split.test[1], pred, data.labels)
            per_seed.append({"seed": seed, "C": c, "val_mcc": v, "test_mcc": test_mcc,
                             "test_accuracy": float((pred == split.test[1]).mean()), "predictions": rel,
                             "seconds": round(time.perf_counter() - t0, 2)})
            print0(f"probe {task.name} ({cfg.model if cfg.model == 'scratch' else 'pretrained'}) seed {seed} | "
                   f"C {c:g} | val mcc {v:.4f} | test mcc {test_mcc:.4f} | dim {x['train'].shape[1]}")
        mccs = [s["test_mcc"] for s in per_seed]
        results = {
            "format": RESULTS_FORMAT, "protocol": "probe", "task": task_summary(task), "data_source": data.source,
            "data_provenance": data.provenance, "labels": list(data.labels),
            "counts": {k: len(getattr(split, k)[0]) for k in ("train", "val", "test")},
            "model": {"kind": "scratch" if cfg.model == "scratch" else "pretrained", "path": str(model_dir)},
            "device": str(device), "pooling": cfg.pooling, "layer": cfg.layer, "seeds": per_seed,
            "test_mcc_mean": statistics.fmean(mccs), "test_mcc_sd": statistics.stdev(mccs) if len(mccs) > 1 else 0.0,
            "val_mcc_mean": statistics.fmean(s["val_mcc"] for s in per_seed),
            "versions": {"python": platform.python_version(), "torch": torch.__version__},
        }
        atomic_write_json(tmp / RESULTS, results)
        atomic_write_json(tmp / "config.json", {"probe": config_to_dict(cfg), "labels": list(data.labels)})
    print0(f"{task.name} probe: test mcc {results['test_mcc_mean']:.4f} ± {results['test_mcc_sd']:.4f} over "
           f"{len(mccs)} seed(s) -> {out / 'results.json'}")
    return results


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_dataclass_args(parser, ProbeConfig)


def main(args: argparse.Namespace) -> int:
    run_probe(dataclass_from_args(ProbeConfig, args))
    return 0

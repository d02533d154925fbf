"""The linear probe: a frozen encoder's mean-pooled embeddings, logistic regression, test MCC.

    tinydnabert probe --model RUN/export --task gue/prom_core_all --out probe/prom_core_all --seeds 3
    tinydnabert probe --model scratch --scratch-from RUN/export --task gue/prom_core_all --out probe/scratch
    tinydnabert probe --model RUN/export --task gue/H3 --out probe/H3-both --strands both --window 128

The standard cheap evaluation of DNA language models (BEND; the NT paper's probing): no weight of the
encoder changes, so what the probe measures is what pretraining put into the representation. Per seed:
the same train / validation carve as fine-tuning (`common.task_splits`), features standardised on
the train rows, an L2 logistic regression for each C of --c-grid, the C with the best validation MCC
evaluated once on test. "scratch" is a randomly initialised encoder of the same architecture (seeded:
a different random encoder per seed), the baseline a pretrained encoder must beat.
The features are eval/embed.py's: a sequence longer than --window (--max-length, the same setting; default the
model's limit) is pooled over overlapping windows (--stride, --long truncate for its first window only), and
--strands both takes the mean of the sequence's and its reverse complement's embeddings as the feature.

Output (atomic; the layout and results.json keys: eval/common.py): OUT/results.json (+ pooling, layer, long,
window, stride, sequences_over_window and per seed the C chosen), OUT/config.json, OUT/predictions/seed<S>.csv.
"""

from __future__ import annotations

import argparse
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
    RESULTS,
    RUN_ONLY,
    EvalConfig,
    Splits,
    load_task,
    mcc,
    prediction_file,
    results_record,
    task_splits,
    write_predictions,
    write_run,
)
from tinydnabert.eval.embed import LONG, embed
from tinydnabert.eval.encoder import EncoderSpec, build_encoder, encoder_spec, model_source, token_limit
from tinydnabert.io import atomic_output_dir

RESULTS_FORMAT = "tinydnabert-probe/1"


@dataclass(kw_only=True)
class ProbeConfig(EvalConfig):
    """One probe run: the shared evaluation settings and run (EvalConfig) + pooling, windows and the C grid.
    --max-length (alias --window): tokens per window incl. <s> </s>, 0 = the model's limit."""

    command = "probe"

    seeds: int = field(default=3, metadata={"help": "number of seeds (seed, seed+1, ...); reports mean ± sd"})
    pooling: str = field(default="mean", metadata={"help": "mean or cls", "choices": ["mean", "cls"]})
    layer: int = field(default=-1, metadata={"help": "hidden state to probe (-1 = last layer)"})
    long: str = field(default="windows", metadata={
        "help": "a sequence over --window (--max-length) tokens: windows = pooled over overlapping windows; "
                "truncate = its first window only", "choices": list(LONG)})
    stride: int = field(default=0, metadata={
        "help": "sequence tokens between the starts of consecutive windows (0 = half a window)"})
    batch_size: int = field(default=128, metadata={"help": "windows per embedding forward pass", **RUN_ONLY})
    c_grid: str = field(default="0.001,0.01,0.1,1,10", metadata={
        "help": "inverse L2 strengths tried; the best on validation MCC is kept"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.batch_size < 1 or self.stride < 0:
            raise InputError("probe: --batch-size must be >= 1 and --stride >= 0 (0 = half a window)")
        try:
            grid = [float(c) for c in self.c_grid.split(",") if c.strip()]
        except ValueError:
            grid = []
        if not grid or min(grid) <= 0:
            raise InputError(f"probe: --c-grid {self.c_grid!r} must be positive numbers, e.g. 0.01,0.1,1")

    @property
    def grid(self) -> list[float]:
        return [float(c) for c in self.c_grid.split(",") if c.strip()]


def fit_probe(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
              grid: list[float], seed: int) -> tuple[Any, float, float]:
    """(fitted pipeline, C chosen, its validation MCC): standardise on train, L2 logistic regression per C."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    best: tuple[Any, float, float] | None = None
    for c in grid:
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000, random_state=seed))
        clf.fit(x_train, y_train)
        v = mcc(y_val, clf.predict(x_val))
        if best is None or v > best[2]:  # ties keep the stronger regularisation (listed first)
            best = (clf, c, v)
    return best


class Features:
    """Embeddings of the task's sequences. A pretrained encoder is loaded once and embeds each distinct
    sequence once; scratch is a new random encoder per seed, so its cache is per seed."""

    def __init__(self, cfg: ProbeConfig, spec: EncoderSpec, device):
        self.cfg, self.spec, self.device = cfg, spec, device
        self.model = build_encoder(spec, cfg.seed, device) if spec.pretrained else None
        self.cache: dict[str, np.ndarray] = {}
        self.tokens: dict[str, int] = {}  # tokens of each distinct sequence incl. <s> </s> (forward strand)

    def of(self, split: Splits, seed: int) -> dict[str, np.ndarray]:
        """{'train'|'val'|'test': float32 [n, hidden]} for this seed's splits."""
        cfg = self.cfg
        if not self.spec.pretrained:
            self.model, self.cache = build_encoder(self.spec, seed, self.device), {}
        seqs = [s for s in dict.fromkeys(split.train[0] + split.val[0] + split.test[0]) if s not in self.cache]
        if seqs:
            e = embed(self.model, self.spec.tokenizer, seqs, cfg.pooling, cfg.layer, cfg.batch_size, cfg.max_length,
                      cfg.stride, cfg.long, cfg.strands, bf16=cfg.bf16)
            self.cache.update(zip(seqs, e.vectors))
            self.tokens.update(zip(seqs, e.tokens.tolist()))
        return {name: np.stack([self.cache[s] for s in part[0]]) for name, part in
                (("train", split.train), ("val", split.val), ("test", split.test))}

    def windows(self) -> dict[str, Any]:
        """results.json's account of long sequences: the window, the stride, how many sequences exceeded it."""
        limit = token_limit(self.spec.config, self.cfg.max_length)
        return {"long": self.cfg.long, "window": limit, "stride": self.cfg.stride or max(1, (limit - 2) // 2),
                "sequences_over_window": sum(n > limit for n in self.tokens.values())}


def probe_seed(cfg: ProbeConfig, data, features: Features, seed: int, run_dir: Path) -> tuple[dict[str, Any], Splits]:
    """One seed: its carve, the features, the C chosen on validation, test once. -> (results entry, splits)."""
    t0 = time.perf_counter()
    split = task_splits(data, seed, cfg.val_fraction, cfg.validation, cfg.max_train_samples)
    x = features.of(split, seed)
    clf, c, v = fit_probe(x["train"], split.train[1], x["val"], split.val[1], cfg.grid, seed)
    pred = clf.predict(x["test"])
    test_mcc = mcc(split.test[1], pred)
    write_predictions(run_dir / prediction_file(seed), split.test[1], pred, data.labels)
    print0(f"probe {data.task.name} ({features.spec.info['kind']}) seed {seed} | C {c:g} | val mcc {v:.4f} | "
           f"test mcc {test_mcc:.4f} | dim {x['train'].shape[1]}")
    return {"seed": seed, "C": c, "val_mcc": v, "test_mcc": test_mcc,
            "test_accuracy": float((pred == split.test[1]).mean()), "predictions": prediction_file(seed),
            "seconds": round(time.perf_counter() - t0, 2)}, split


def run_probe(cfg: ProbeConfig) -> dict[str, Any]:
    """Probe cfg.seeds times and write OUT/{results.json, config.json, predictions/}. Returns the results."""
    import transformers

    from tinydnabert.pretrain.distributed import pick_device

    transformers.logging.set_verbosity_error()
    task, data = load_task(cfg)
    if "test" not in data.splits:
        raise InputError(f"{data.source}: no test split (found {sorted(data.splits)}); the probe reports test MCC")
    device = pick_device(cfg.device, "probe")
    out = Path(cfg.out)
    with atomic_output_dir(out, overwrite=cfg.overwrite) as tmp, tempfile.TemporaryDirectory() as work:
        spec = encoder_spec(cfg.model, cfg.scratch_from, model_source(cfg.model, cfg.scratch_from, Path(work)))
        features = Features(cfg, spec, device)
        runs = [probe_seed(cfg, data, features, cfg.seed + i, tmp) for i in range(cfg.seeds)]
        per_seed, split = [entry for entry, _ in runs], runs[-1][1]
        results = results_record(cfg, RESULTS_FORMAT, data, split.counts(), spec.info, device, per_seed,
                                 pooling=cfg.pooling, layer=cfg.layer, **features.windows())
        write_run(tmp, cfg, results, labels=list(data.labels))
    print0(f"{task.name} probe: test mcc {results['test_mcc_mean']:.4f} ± {results['test_mcc_sd']:.4f} over "
           f"{cfg.seeds} seed(s) -> {out / RESULTS}")
    return results


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_dataclass_args(parser, ProbeConfig)
    # the probe's window is the shared --max-length (what a benchmark hands every arm): one setting, two names
    parser.add_argument("--window", dest="max_length", type=int, default=argparse.SUPPRESS,
                        help="tokens per window incl. <s> </s>: the same setting as --max-length")


def main(args: argparse.Namespace) -> int:
    run_probe(dataclass_from_args(ProbeConfig, args))
    return 0

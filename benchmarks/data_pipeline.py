"""Data-pipeline throughput: tinydnabert.pretrain.data (read, decode, pack, mask) vs the reference recipe's way.

    python benchmarks/data_pipeline.py                      # preprocesses chr20 into a temp dir first
    python benchmarks/data_pipeline.py --data SHARDS_DIR --workers 0 2 --batches 100 --repeats 3

Measured in the same run on the same samples:
  ours      build_train_loader: webdataset shards -> pack into full 512-token rows -> vectorized masking,
            every shard's sha256 checked against the manifest as it is read (and every token id);
  ours-unverified  the same with --no-verify-shards (DataConfig.verify_shards=False): the sha256 skipped
            (sizes, counts and ids still checked); measured at workers = 0 only, where CPU-seconds are
            this process's, so the difference is the checksum's cost.
  baseline  the reference recipe (HF run_mlm.py style): each segment one row "<s> ids </s>" padded to
            512 (what tokenizer(padding="max_length") gives, pre-tokenized as `datasets.map` would, so
            tokenization is NOT timed), batched by DataLoader with transformers'
            DataCollatorForLanguageModeling(mlm_probability=0.15).
"Real tokens" are non-padding positions: what the model learns from. "Positions" include padding:
what the GPU computes on. Workers = 0 runs the pipeline in the measuring process, so its figure is
the throughput of ONE worker; with W > 0 the figure is W DataLoader workers together (this machine
has few cores, so W > cores measures nothing). Writes a table to stdout and JSON to --out.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch

from tinydnabert import formats
from tinydnabert.io import atomic_write_json, data_dir
from tinydnabert.prep.shards import read_shard
from tinydnabert.pretrain.data import DataConfig, build_train_loader, mask_tokens, pack_rows

REPO = Path(__file__).resolve().parents[1]
PAD_ID = formats.PAD_ID


def make_shards(fasta: Path, out: Path) -> Path:
    from tinydnabert.prep.preprocess import PreprocessConfig, run_preprocess

    t = time.perf_counter()
    run_preprocess(PreprocessConfig(fasta=[str(fasta)], out=str(out), seed=0, progress=False))
    print(f"preprocessed {fasta.name} in {time.perf_counter() - t:.1f} s", flush=True)
    return out


def time_batches(make: Callable[[], Iterable[dict[str, torch.Tensor]]], n: int) -> dict[str, float]:
    """Wall and CPU seconds for the first n batches, from building the loader on.

    Start-up and the first shard reads are included on purpose: ours makes a worker's batches in
    bursts (it reads a group of shards, then serves ~36 batches from memory while reading the next),
    so timing from a warm start would count already-read groups as free. Over n = 200 batches
    (~5 groups) that start-up is a few percent. CPU seconds are this process's: with workers = 0 they
    are the whole pipeline's cost, independent of how busy the machine is.
    """
    real = positions = 0
    t, c = time.perf_counter(), time.process_time()
    it = iter(make())
    for _ in range(n):
        b = next(it)
        positions += b["input_ids"].numel()
        real += int(b["attention_mask"].sum())
    dt, dc = time.perf_counter() - t, time.process_time() - c
    # Ours reads the next group of shards in a background thread; one still running now would be charged
    # to the next measurement's CPU-seconds (process_time counts every thread): let it end first.
    if hasattr(it, "close"):
        it.close()
    del it
    deadline = time.monotonic() + 30
    while any(th.name.startswith("tinydnabert-read") for th in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.01)
    return {"seconds": dt, "real_tokens_per_s": real / dt, "positions_per_s": positions / dt,
            "padding_fraction": 1 - real / positions, "real_tokens_per_cpu_s": real / dc}


def ours(data: Path, cfg: DataConfig, batch: int) -> Iterable[dict[str, torch.Tensor]]:
    return build_train_loader(data, cfg, micro_batch_size=batch)


PIPELINES = ("baseline", "ours", "ours-unverified")


def baseline_examples(data: Path, cfg: DataConfig, n_samples: int) -> list[dict[str, list[int]]]:
    """The same segments as tokenizer(padding="max_length") returns them: one per row, padded."""
    examples: list[dict[str, list[int]]] = []
    for path in formats.shard_paths(data, "train"):
        for ids in (sample.ids for sample in read_shard(path, meta=False)):
            row = [0, *ids.tolist(), 2][: cfg.seq_len]
            pad = cfg.seq_len - len(row)
            examples.append({"input_ids": row + [PAD_ID] * pad, "attention_mask": [1] * len(row) + [0] * pad})
            if len(examples) >= n_samples:
                break
        if len(examples) >= n_samples:
            break
    return examples


def hf_collator(data: Path, cfg: DataConfig):
    from transformers import DataCollatorForLanguageModeling

    from tinydnabert.prep.tokenizer import load_tokenizer

    return DataCollatorForLanguageModeling(load_tokenizer(data), mlm=True, mlm_probability=cfg.mlm_probability)


def baseline(examples: list[dict[str, list[int]]], collator, cfg: DataConfig, batch: int
             ) -> Iterable[dict[str, torch.Tensor]]:
    """The reference recipe's loader: shuffled DataLoader + HF MLM collator over padded rows."""
    def forever():
        while True:  # re-shuffled passes, like epochs
            yield from torch.utils.data.DataLoader(examples, batch_size=batch, shuffle=True, drop_last=True,
                                                   collate_fn=collator, num_workers=cfg.num_workers)
    return forever()


def stage_breakdown(data: Path, cfg: DataConfig) -> dict[str, float]:
    """Tokens per CPU-second of each step of ours, on the first train shard (median of 5): read + decode
    (unverified), the sha256 of the shard's bytes, the token-id range check, pack, mask."""
    import hashlib

    path = formats.shard_paths(data, "train")[0]
    vocab = formats.load_manifest(data)["tokenizer"]["vocab_size"]
    out: dict[str, list[float]] = {"read+decode": [], "sha256": [], "id check": [], "pack": [], "mask": []}
    for rep in range(5):
        t0 = time.process_time()
        ids = [sample.ids for sample in read_shard(path, meta=False)]
        t1 = time.process_time()
        hashlib.sha256(path.read_bytes()).hexdigest()
        t2 = time.process_time()
        flat = np.concatenate(ids)
        bool(flat.min() < formats.NUM_SPECIAL or flat.max() >= vocab)
        t3 = time.process_time()
        rows = pack_rows(ids, cfg.seq_len)
        t4 = time.process_time()
        mask_tokens(rows, np.random.default_rng(rep), vocab, cfg)
        t5 = time.process_time()
        for k, dt in zip(out, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
            out[k].append(rows.size / max(dt, 1e-6))
    return {k: statistics.median(v) for k, v in out.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, help="shards directory (output of `tinydnabert preprocess`); "
                   "default: preprocess --fasta into a temporary directory")
    p.add_argument("--fasta", type=Path, default=data_dir() / "genome" / "grch37_chr20.fa.gz",
                   help="FASTA to preprocess when --data is not given")
    p.add_argument("--workers", type=int, nargs="+", default=[0, min(2, os.cpu_count() or 1)],
                   help="DataLoader worker counts to measure (0 = in-process: one worker's throughput)")
    p.add_argument("--micro-batch", type=int, default=128)
    p.add_argument("--batches", type=int, default=200, help="timed batches per measurement (a worker makes "
                   "its batches in bursts, one group of shards at a time: time several groups)")
    p.add_argument("--repeats", type=int, default=3, help="measurements per configuration (median reported)")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "data_pipeline.json")
    args = p.parse_args(argv)
    # DataLoader workers run torch with one thread; the in-process (workers = 0) measurement must too,
    # or the baseline's small tensor ops pay for thread hand-offs (4x slower on a 2-core machine).
    torch.set_num_threads(1)
    load_start = os.getloadavg()[0]  # a busy machine slows every row alike; the ratios still hold

    with tempfile.TemporaryDirectory(prefix="tinydnabert-bench-") as tmp:
        data = args.data or make_shards(args.fasta, Path(tmp) / "shards")
        manifest = formats.load_manifest(data)
        train = manifest["splits"]["train"]
        n_need = args.batches * args.micro_batch
        results: dict[str, Any] = {"rows": []}
        def add_row(name: str, w: int, runs: list[dict[str, float]]) -> None:
            row = {"pipeline": name, "workers": w,
                   **{k: statistics.median(r[k] for r in runs) for k in runs[0]},
                   "real_tokens_per_s_runs": [r["real_tokens_per_s"] for r in runs],
                   "real_tokens_per_cpu_s_runs": [r["real_tokens_per_cpu_s"] for r in runs]}
            if w:  # the workers' CPU time is in other processes: this process's says nothing
                row["real_tokens_per_cpu_s"] = row["real_tokens_per_cpu_s_runs"] = None
            results["rows"].append(row)
            print(f"  measured {name:15s} workers={w}: {row['real_tokens_per_s'] / 1e6:.2f} M real tokens/s",
                  flush=True)

        for w in args.workers:
            cfg = DataConfig(num_workers=w)
            runs: dict[str, list[dict[str, float]]] = {name: [] for name in PIPELINES}
            for _ in range(args.repeats):
                # pre-tokenized outside the timing, as `datasets.map` caches it
                examples, collator = baseline_examples(data, cfg, n_need), hf_collator(data, cfg)
                runs["baseline"].append(time_batches(
                    lambda e=examples, c=collator, cfg=cfg: baseline(e, c, cfg, args.micro_batch), args.batches))
                # verified and unverified in turn, each first every other time, so that a change in the
                # machine's load hits both alike
                pair = ("ours", "ours-unverified") if len(runs["ours"]) % 2 == 0 else ("ours-unverified", "ours")
                for name in pair if w == 0 else ("ours",):
                    c = dataclasses.replace(cfg, verify_shards=name == "ours")
                    runs[name].append(time_batches(lambda c=c: ours(data, c, args.micro_batch), args.batches))
            for name in PIPELINES:
                if runs[name]:
                    add_row(name, w, runs[name])
        stages = stage_breakdown(data, DataConfig())

    rows = results["rows"]
    for w in args.workers:
        b = next(r for r in rows if r["pipeline"] == "baseline" and r["workers"] == w)
        for o in (r for r in rows if r["pipeline"].startswith("ours") and r["workers"] == w):
            o["ratio_real_tokens_vs_baseline"] = o["real_tokens_per_s"] / b["real_tokens_per_s"]
            o["ratio_positions_vs_baseline"] = o["positions_per_s"] / b["positions_per_s"]
    verified = next((r for r in rows if r["pipeline"] == "ours" and r["workers"] == 0), None)
    unverified = next((r for r in rows if r["pipeline"] == "ours-unverified"), None)
    if verified and unverified:
        results["verification"] = {
            "tokens_per_cpu_s_verified": verified["real_tokens_per_cpu_s"],
            "tokens_per_cpu_s_unverified": unverified["real_tokens_per_cpu_s"],
            "ratio_verified_vs_unverified": verified["real_tokens_per_cpu_s"] / unverified["real_tokens_per_cpu_s"],
            "runs_verified": verified["real_tokens_per_cpu_s_runs"],
            "runs_unverified": unverified["real_tokens_per_cpu_s_runs"], "note": "medians of --repeats runs, workers 0"}
    results.update({
        "data": str(args.data or f"{args.fasta} (preprocessed, default settings)"),
        "train_tokens": train["tokens"], "train_samples": train["samples"],
        "micro_batch": args.micro_batch, "seq_len": 512, "batches": args.batches, "repeats": args.repeats,
        "stages_tokens_per_cpu_s": stages,
        "machine": {"python": platform.python_version(), "torch": torch.__version__,
                    "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "loadavg_1min_start_end": [load_start, os.getloadavg()[0]]},
    })
    print(f"\ndata-pipeline throughput: micro-batch {args.micro_batch} x 512, {args.batches} batches, "
          f"median of {args.repeats}; {train['tokens']:,} train tokens in {len(train['shards'])} shards; "
          f"{os.cpu_count()} cores, load {load_start:.1f} -> {os.getloadavg()[0]:.1f}")
    print(f"{'pipeline':<16}{'workers':>8}{'real tok/s':>14}{'positions/s':>14}{'padding':>9}"
          f"{'ratio (real)':>14}{'real tok/CPU-s':>16}")
    for r in rows:
        ratio = f"{r['ratio_real_tokens_vs_baseline']:.1f}x" if "ratio_real_tokens_vs_baseline" in r else ""
        cpu = f"{r['real_tokens_per_cpu_s'] / 1e6:.2f} M" if r["workers"] == 0 else "-"
        print(f"{r['pipeline']:<16}{r['workers']:>8}{r['real_tokens_per_s'] / 1e6:>12.2f} M"
              f"{r['positions_per_s'] / 1e6:>12.2f} M{100 * r['padding_fraction']:>8.1f}%{ratio:>14}{cpu:>16}")
    print("stages of ours (tokens per CPU-second): "
          + ", ".join(f"{k} {v / 1e6:.1f} M" for k, v in stages.items()))
    if "verification" in results:
        v = results["verification"]
        print(f"shard verification (sha256) on / off, workers 0: {v['tokens_per_cpu_s_verified'] / 1e6:.2f} M / "
              f"{v['tokens_per_cpu_s_unverified'] / 1e6:.2f} M real tokens per CPU-second "
              f"(ratio {v['ratio_verified_vs_unverified']:.3f})")
    atomic_write_json(args.out, results)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

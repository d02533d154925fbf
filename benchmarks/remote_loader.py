"""Training loader throughput with the shards over HTTP vs on local disk (tinydnabert.pretrain.sources).

    python benchmarks/remote_loader.py                          # preprocesses chr20 into a temp dir first (~25 s)
    python benchmarks/remote_loader.py --data SHARDS_DIR --batches 200 --rounds 3

The same shards, in the same run, read by build_train_loader (pack, mask, sha256 checked) from
  local        the directory on disk;
  http         http://127.0.0.1 (`python -m http.server` in its own process), each shard fetched into memory;
  http-cached  the same URL with a --cache-dir that an earlier pass filled: shards read from the cache (verified);
in rounds that alternate the three (this machine is noisy), with workers = 0 (the loader in this process, so
CPU-seconds are its whole cost, HTTP client included; the server's CPU is not) and workers = 1. The figure
is real tokens per second (rows are packed full); ratios are to local in the same round, then the median.
Writes a table to stdout and JSON to --out.
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from data_pipeline import make_shards, time_batches  # benchmarks/ is on sys.path when run as a script

from tinydnabert.io import atomic_write_json, data_dir
from tinydnabert.pretrain import sources
from tinydnabert.pretrain.data import DataConfig, build_train_loader

REPO = Path(__file__).resolve().parents[1]


def serve(root: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory",
                             str(root)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return proc, url
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("error: the local HTTP server did not start")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, help="a shards directory (default: preprocess chr20 into a temp dir)")
    p.add_argument("--batches", type=int, default=200, help="micro-batches timed per measurement")
    p.add_argument("--micro-batch", type=int, default=32)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1])
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "remote_loader.json")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="tinydnabert-remote-bench-") as tmp:
        data = args.data or make_shards(data_dir() / "genome" / "grch37_chr20.fa.gz", Path(tmp) / "chr20")
        server, base = serve(data.parent)
        try:
            url = f"{base}/{data.name}"
            cache = Path(tmp) / "cache"
            cached = sources.resolve(url, cache)
            rows: dict[tuple[str, int], list[dict]] = {}
            for w in args.workers:
                cfg = DataConfig(seq_len=512, num_workers=w)
                loader = functools.partial(build_train_loader, cfg=cfg, micro_batch_size=args.micro_batch)
                time_batches(functools.partial(loader, cached), args.batches)  # a first pass fills the cache
                for r in range(args.rounds):
                    for name, where in (("local", data), ("http", url), ("http-cached", cached)):
                        got = time_batches(functools.partial(loader, where), args.batches)
                        rows.setdefault((name, w), []).append(got)
                        print(f"  round {r + 1} workers={w} {name:12s} {got['real_tokens_per_s'] / 1e6:6.2f} M tok/s "
                              f"{got['real_tokens_per_cpu_s'] / 1e6:6.2f} M tok/CPU-s", flush=True)
        finally:
            server.kill()
    table = []
    for (name, w), runs in rows.items():
        local = rows["local", w]
        table.append({"loader": name, "workers": w,
                      "tokens_per_s": statistics.median(x["real_tokens_per_s"] for x in runs),
                      "tokens_per_cpu_s": statistics.median(x["real_tokens_per_cpu_s"] for x in runs),
                      "ratio_to_local": statistics.median(x["real_tokens_per_s"] / y["real_tokens_per_s"]
                                                          for x, y in zip(runs, local)),
                      "runs": runs})
    print(f"\nloader over HTTP vs local: micro-batch {args.micro_batch} x 512, {args.batches} batches, "
          f"median of {args.rounds} rounds, {os.cpu_count()} cores")
    print(f"{'loader':<14}{'workers':>8}{'tok/s':>12}{'tok/CPU-s':>12}{'vs local':>10}")
    for t in table:
        print(f"{t['loader']:<14}{t['workers']:>8}{t['tokens_per_s'] / 1e6:>10.2f} M"
              f"{t['tokens_per_cpu_s'] / 1e6:>10.2f} M{t['ratio_to_local']:>9.2f}x")
    atomic_write_json(args.out, {"machine": platform.platform(), "cores": os.cpu_count(), "date": time.strftime("%F"),
                                 "batches": args.batches, "micro_batch": args.micro_batch, "rows": table})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

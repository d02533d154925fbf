"""Preprocessing benchmark: tinydnabert's stage vs the reference recipe's way, in the same run.

    python benchmarks/preprocess.py                        # chr20 (GRCh37), all cores
    python benchmarks/preprocess.py --fasta X.fa.gz --workers 2 --slow-lines 300 --out results.json

Every phase runs in its own subprocess; the parent polls the RSS of that process *and all its
children* (psutil) every 20 ms, so "peak RSS" is the real footprint of the phase, worker pools
included (and is cross-checked against getrusage(RUSAGE_CHILDREN).ru_maxrss, the largest single
process, reported by each phase for itself). Phases:

  ours/tokenizer   scan (read + segment + seeded 1/10 sample) and BPE training       [target <= 30 s]
  ours/shards      scan + tokenize (encode_batch) + write WebDataset shards            [target <= 30 s]
  ref/lines        the reference recipe's data prep: segments written as text lines
  ref/train        its tokenizer: ByteLevelBPETokenizer.train() on a 1/10 lines file
  ref/tokenize     its tokenization: line by line with a slow (pure-Python) RobertaTokenizer built
                   from OUR vocab/merges. transformers 5 no longer ships slow tokenizers, so the
                   BPE below is the transformers 4.x RobertaTokenizer.bpe() algorithm, verbatim in
                   substance. It needs ~0.1 s per 1 kbp line, so it runs on a fixed, evenly spaced
                   subsample of --slow-lines lines and is EXTRAPOLATED to all lines (reported as such).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------------------------
# Child phases (each in its own process)


def _cpu() -> tuple[float, float]:
    """(this process, its reaped children) CPU seconds."""
    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime, b.ru_utime + b.ru_stime


def _cfg(args, out: str):
    from tinydnabert.prep.preprocess import PreprocessConfig, resolve

    return resolve(PreprocessConfig(fasta=[args.fasta], out=out, workers=args.workers, seed=0, progress=False))


def phase_ours_tokenizer(args, work: Path) -> dict:
    from tinydnabert.prep.fasta import RecordSelector
    from tinydnabert.prep.preprocess import scan
    from tinydnabert.prep.tokenizer import save_tokenizer, train_tokenizer

    cfg = _cfg(args, str(work / "ours"))
    t0 = time.perf_counter()
    sc = scan(cfg, RecordSelector())
    texts = [e[3] for e in sorted(sc.sample, key=lambda e: (e[1], e[2]))]
    t1, c1 = time.perf_counter(), _cpu()
    tok = train_tokenizer(texts, cfg.vocab_size, cfg.min_frequency, length=len(texts))
    t2, c2 = time.perf_counter(), _cpu()
    save_tokenizer(tok, work / "ours_tokenizer")
    tok.model.save(str(work / "ours_tokenizer"))  # vocab.json + merges.txt for the slow baseline
    return {"scan_s": t1 - t0, "train_s": t2 - t1, "train_cpu_s": c2[0] - c1[0], "sample_bp": sum(map(len, texts)),
            "sample_segments": len(texts), "acgt_bp": sc.input_acgt_bases, "vocab": tok.get_vocab_size()}


def phase_ours_shards(args, work: Path) -> dict:
    from tinydnabert.prep.fasta import RecordSelector
    from tinydnabert.prep.preprocess import scan, write_shards
    from tinydnabert.prep.shards import split_summary

    cfg = _cfg(args, str(work / "ours"))
    out = work / "ours_shards"
    out.mkdir()
    t0, c0 = time.perf_counter(), _cpu()
    sel = RecordSelector()
    sc = scan(cfg, sel)
    t1, c1 = time.perf_counter(), _cpu()
    shards = write_shards(cfg, sel, sc, out, work / "ours_tokenizer" / "tokenizer.json", cfg.workers)
    t2, c2 = time.perf_counter(), _cpu()
    s = {k: split_summary(v) for k, v in shards.items()}
    # Main-process CPU in pass 2 (read, segment, slice, pickle) is the serial part that bounds
    # scaling to many workers; worker CPU (tokenize, write tars) divides by the worker count.
    return {"scan_s": t1 - t0, "shard_s": t2 - t1, "total_s": t2 - t0, "workers": cfg.workers,
            "scan_cpu_s": c1[0] - c0[0], "shard_main_cpu_s": c2[0] - c1[0], "shard_worker_cpu_s": c2[1] - c1[1],
            "bases": s["train"]["bases"] + s["val"]["bases"], "tokens": s["train"]["tokens"] + s["val"]["tokens"],
            "samples": s["train"]["samples"] + s["val"]["samples"],
            "shards": len(shards["train"]) + len(shards["val"]),
            "bytes": sum(p.stat().st_size for p in out.rglob("*.tar"))}


def phase_ref_lines(args, work: Path) -> dict:
    """Segments as text lines, one per line, plus a 1/10 lines file for tokenizer training.
    The same seeded segments as ours, so the comparison is about the pipeline, not the cut."""
    import numpy as np

    from tinydnabert.prep.fasta import acgt_runs, iter_records
    from tinydnabert.prep.segment import segment_record

    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    n = bases = 0
    with open(work / "lines.txt", "w") as f, open(work / "lines_sample.txt", "w") as fs:
        for rec in iter_records([args.fasta]):
            seq = rec.seq.decode("ascii")
            segs = segment_record(rec.name, acgt_runs(rec.seq), seed=0, min_len=256, max_len=1024,
                                  reverse_complement=False, val_fraction=0.0, val_record=False)
            for s, e in zip(segs.starts.tolist(), segs.ends.tolist()):
                line = seq[s:e]
                f.write(line + "\n")
                if rng.random() < 0.1:
                    fs.write(line + "\n")
                n += 1
                bases += e - s
    return {"lines_s": time.perf_counter() - t0, "lines": n, "bases": bases}


def phase_ref_train(args, work: Path) -> dict:
    from tokenizers.implementations import ByteLevelBPETokenizer

    t0 = time.perf_counter()
    tok = ByteLevelBPETokenizer()
    tok.train(files=[str(work / "lines_sample.txt")], vocab_size=1024, min_frequency=4, show_progress=False,
              special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    return {"train_s": time.perf_counter() - t0, "vocab": tok.get_vocab_size()}


class SlowRobertaBPE:
    """transformers 4.x `RobertaTokenizer` (slow) encoding, reduced to what DNA lines exercise:
    the GPT-2 regex splits a line of letters into one word, the byte-to-unicode map is the identity
    on A/C/G/T, and `bpe()` below is its algorithm (lowest-rank pair first, merge all occurrences,
    recompute the pair set, per-word cache)."""

    def __init__(self, vocab_file: Path, merges_file: Path):
        self.encoder = json.loads(Path(vocab_file).read_text())
        merges = [m.split() for m in Path(merges_file).read_text().splitlines()
                  if m and not m.startswith("#version")]
        self.bpe_ranks = {tuple(m): i for i, m in enumerate(merges)}
        self.cache: dict[str, str] = {}

    @staticmethod
    def get_pairs(word):
        return set(zip(word, word[1:]))

    def bpe(self, token: str) -> str:
        if token in self.cache:
            return self.cache[token]
        word = tuple(token)
        pairs = self.get_pairs(word)
        if not pairs:
            return token
        while True:
            bigram = min(pairs, key=lambda pair: self.bpe_ranks.get(pair, float("inf")))
            if bigram not in self.bpe_ranks:
                break
            first, second = bigram
            new_word: list[str] = []
            i = 0
            while i < len(word):
                try:
                    j = word.index(first, i)
                except ValueError:
                    new_word.extend(word[i:])
                    break
                else:
                    new_word.extend(word[i:j])
                    i = j
                if word[i] == first and i < len(word) - 1 and word[i + 1] == second:
                    new_word.append(first + second)
                    i += 2
                else:
                    new_word.append(word[i])
                    i += 1
            word = tuple(new_word)
            if len(word) == 1:
                break
            pairs = self.get_pairs(word)
        out = " ".join(word)
        self.cache[token] = out
        return out

    def __call__(self, line: str, max_length: int = 512) -> list[int]:
        ids = [self.encoder[t] for t in self.bpe(line).split(" ")]
        return [0] + ids[: max_length - 2] + [2]  # <s> ... </s>, truncation=True


def phase_ref_tokenize(args, work: Path) -> dict:
    from tokenizers import Tokenizer

    tok_dir = work / "ours_tokenizer"
    slow = SlowRobertaBPE(tok_dir / "vocab.json", tok_dir / "merges.txt")
    with open(work / "lines.txt") as f:
        lines = f.read().splitlines()  # LineByLineTextDataset reads every line into memory
    step = max(1, len(lines) // args.slow_lines)
    sub = lines[::step][: args.slow_lines]
    t0, c0 = time.perf_counter(), time.process_time()
    ids = [slow(line) for line in sub]
    dt, dc = time.perf_counter() - t0, time.process_time() - c0
    fast = Tokenizer.from_file(str(tok_dir / "tokenizer.json"))
    same = all(a == b.ids for a, b in zip(ids, fast.encode_batch(sub)))
    sub_bp, all_bp = sum(map(len, sub)), sum(map(len, lines))
    return {"subsample_lines": len(sub), "subsample_bp": sub_bp, "subsample_s": dt, "all_lines": len(lines),
            "all_bp": all_bp, "extrapolated_s": dt * all_bp / sub_bp,
            "subsample_cpu_s": dc, "extrapolated_cpu_s": dc * all_bp / sub_bp, "ids_match_fast_tokenizer": same}


PHASES = {
    "ours/tokenizer": phase_ours_tokenizer,
    "ours/shards": phase_ours_shards,
    "ref/lines": phase_ref_lines,
    "ref/train": phase_ref_train,
    "ref/tokenize": phase_ref_tokenize,
}


# ----------------------------------------------------------------------------------------------
# Parent: run each phase in a subprocess, measure wall time and peak RSS of the process tree


def run_phase(name: str, args, work: Path) -> dict:
    import psutil

    out_json = work / (name.replace("/", "_") + ".json")
    cmd = [sys.executable, __file__, "--child", name, "--work", str(work), "--fasta", args.fasta,
           "--workers", str(args.workers), "--slow-lines", str(args.slow_lines)]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env)
    ps = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        try:
            procs = [ps, *ps.children(recursive=True)]
            rss = 0
            for p in procs:
                try:
                    rss += p.memory_info().rss
                except psutil.Error:
                    pass
            peak = max(peak, rss)
        except psutil.Error:
            pass
        time.sleep(0.02)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"phase {name} failed with exit status {proc.returncode}")
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    res = json.loads(out_json.read_text())
    # CPU seconds of the phase's whole process tree (workers are reaped by their pool, so their
    # time is included): a contention-proof measure on a shared machine, where wall time is not.
    res.update(process_wall_s=wall, process_cpu_s=(ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime),
               peak_rss_tree_mib=peak / 2**20)
    return res


def git_commit() -> str:
    try:
        return subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> int:
    from tinydnabert.io import data_dir

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--fasta", default=str(data_dir() / "genome" / "grch37_chr20.fa.gz"))
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--slow-lines", type=int, default=300, help="lines the slow baseline tokenizes (extrapolated)")
    p.add_argument("--repeat", type=int, default=1, help="run every phase N times; the table shows medians")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "preprocess.json"))
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--work", help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.child:
        work = Path(args.work)
        res = PHASES[args.child](args, work)
        # Cross-check for the parent's psutil tree peak: the largest single process of this phase.
        res["self_maxrss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        res["children_maxrss_mib"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        (work / (args.child.replace("/", "_") + ".json")).write_text(json.dumps(res))
        return 0

    runs: dict[str, list[dict]] = {name: [] for name in PHASES}
    for r in range(args.repeat):
        work = Path(tempfile.mkdtemp(prefix="tdb-bench-prep-"))
        try:
            for name in PHASES:
                print(f"[{r + 1}/{args.repeat}] running {name} ...", file=sys.stderr, flush=True)
                runs[name].append(run_phase(name, args, work))
        finally:
            shutil.rmtree(work, ignore_errors=True)
    # Medians over repeats (wall times on a shared machine are noisy; CPU seconds much less so).
    results = {name: {k: (statistics.median(x[k] for x in rs) if isinstance(rs[0][k], (int, float))
                          and not isinstance(rs[0][k], bool) else rs[0][k]) for k in rs[0]}
               for name, rs in runs.items()}

    ot, osh = results["ours/tokenizer"], results["ours/shards"]
    rl, rt, rk = results["ref/lines"], results["ref/train"], results["ref/tokenize"]
    mbp = osh["bases"] / 1e6
    ref_tok_total = rl["lines_s"] + rk["extrapolated_s"]
    rows = [
        # (what, ours seconds, ours RSS, ref seconds, ref RSS, note)
        ("tokenizer training (1/10 sample)", ot["train_s"], ot["peak_rss_tree_mib"], rt["train_s"],
         rt["peak_rss_tree_mib"], f"sample {ot['sample_bp'] / 1e6:.2f} Mbp; ref = ByteLevelBPE on a lines file"),
        ("segment+tokenize+shard", osh["total_s"], osh["peak_rss_tree_mib"], ref_tok_total,
         max(rl["peak_rss_tree_mib"], rk["peak_rss_tree_mib"]),
         f"ref = text lines + slow RobertaTokenizer, EXTRAPOLATED from {rk['subsample_lines']} lines "
         f"({rk['subsample_bp'] / 1e3:.0f} kbp, {rk['subsample_s']:.1f} s)"),
    ]
    print(f"\npreprocessing benchmark: {Path(args.fasta).name}, {mbp:.1f} Mbp in segments, "
          f"median of {args.repeat} run(s), {args.workers} workers, {os.cpu_count()} cores, "
          f"load avg {os.getloadavg()[0]:.1f}")
    print(f"{'phase':<34} {'ours s':>8} {'Mbp/s':>7} {'RSS MiB':>8} | "
          f"{'ref s':>9} {'Mbp/s':>7} {'RSS MiB':>8} | {'speedup':>8}")
    for what, s_ours, r_ours, s_ref, r_ref, note in rows:
        bp = ot["sample_bp"] / 1e6 if what.startswith("tokenizer") else mbp
        print(f"{what:<34} {s_ours:8.2f} {bp / s_ours:7.2f} {r_ours:8.0f} | {s_ref:9.1f} {bp / s_ref:7.3f} "
              f"{r_ref:8.0f} | {s_ref / s_ours:7.1f}x")
        print(f"  note: {note}")
    print(f"ours/shards detail: scan {osh['scan_s']:.2f} s + tokenize+shard {osh['shard_s']:.2f} s, "
          f"{osh['samples']:,} samples, {osh['tokens']:,} tokens ({osh['bases'] / osh['tokens']:.2f} bp/token), "
          f"{osh['shards']} shards, {osh['bytes'] / 2**20:.0f} MiB")
    print(f"CPU seconds (contention-proof): ours/tokenizer train {ot['train_cpu_s']:.1f}; ours/shards scan "
          f"{osh['scan_cpu_s']:.1f} + pass-2 main {osh['shard_main_cpu_s']:.1f} + "
          f"workers {osh['shard_worker_cpu_s']:.1f}; "
          f"phase trees: " + ", ".join(f"{k} {v['process_cpu_s']:.1f}" for k, v in results.items()))
    ours_cpu = osh["scan_cpu_s"] + osh["shard_main_cpu_s"] + osh["shard_worker_cpu_s"]
    ref_cpu = rl["process_cpu_s"] + rk["extrapolated_cpu_s"]
    print(f"segment+tokenize+shard in CPU seconds: ours {ours_cpu:.1f} ({mbp / ours_cpu:.2f} Mbp/s per core) vs ref "
          f"{ref_cpu:.0f} (extrapolated) = {ref_cpu / ours_cpu:.0f}x less CPU")
    print(f"slow baseline ids == fast tokenizer ids on the subsample: {rk['ids_match_fast_tokenizer']}")
    summary = {
        "fasta": args.fasta, "mbp": mbp, "workers": args.workers, "cores": os.cpu_count(),
        "machine": platform.platform(), "cpu": platform.processor(), "commit": git_commit(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "load_avg_1m_at_end": os.getloadavg()[0],
        "targets": {"shards_s<=30": osh["total_s"] <= 30, "train_s<=30": ot["train_s"] <= 30,
                    "peak_rss<=2GiB": max(ot["peak_rss_tree_mib"], osh["peak_rss_tree_mib"]) <= 2048},
        "speedup_shards_vs_ref": ref_tok_total / osh["total_s"],
        "cpu_s_shards": {"ours": ours_cpu, "ref_extrapolated": ref_cpu, "ratio": ref_cpu / ours_cpu},
        "speedup_train_vs_ref": rt["train_s"] / ot["train_s"],
        "repeat": args.repeat,
        "phases": results,
        "runs": runs,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

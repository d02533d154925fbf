"""Pretraining throughput: our DeepSpeed engine vs. the reference recipe's HF Trainer, in one run.

    python benchmarks/throughput.py --threads 1 --rounds 5     # CPU (2 cores, shared): small model, fp32, ~3 min
    python benchmarks/throughput.py --hidden 512 --layers 6 --heads 8 --micro-batch 64 --block 20   # GPU, bf16
    python benchmarks/throughput.py ... --compile               # GPU: also torch.compile (ours and the Trainer)
    python benchmarks/throughput.py --overhead                  # host time per step: our engine vs a plain loop

Four measurements on the same model (RobertaForMaskedLM, SDPA), the same shards and precision
(fp32 on CPU, bf16 on GPU), the same micro batch and optimizer (AdamW 1e-4, wd 1e-5):

  ours       our engine: DeepSpeed initialised from the shipped ds_configs JSON (ZeRO-1, DeepSpeed's
             FusedAdam), train.train_step and the packed 512-token rows of tinydnabert.pretrain.data
             (on CPU the LM head runs on the masked positions only).
  reference  the reference recipe: transformers Trainer + DataCollatorForLanguageModeling (15 %),
             one segment per row (<s> ids </s>) padded to 512 (the reference tokenized with
             padding="max_length").
  longest    the same, but the collator pads only to the batch's longest row (kinder to it).
  packed     the same Trainer + collator on our packed rows: separates the engine's gain from
             the data layout's.

The four run in interleaved blocks (--rounds x --block steps, the first step of each block dropped)
so that a shared machine's changing load hits all of them alike. Reported: medians of step time;
tokens/s counts real tokens (not padding), positions/s counts every row position computed;
samples/s = rows/s; MFU = analytic FLOPs per position (tinydnabert.pretrain.model.flops_per_token) x
positions/s / peak (measured fp32 matmul rate on CPU, bf16 datasheet on GPU); data wait % = time
waiting for the next batch (ours: loader; Trainer: dataset fetch + collator) / step time.
Ratios are ours / baseline tokens/s. Writes a table to stdout and JSON to --out.

--overhead measures something else: the host time of one optimizer step with a negligible model (hidden 16,
1 layer, micro-batch 1 x 32 tokens, so compute is ~nothing) -- what the engine costs the host per step, which
on a GPU must stay well under a step (~23 ms for the reference model at 40 % MFU) or the GPU waits for it.
It compares our engine (tinydnabert.pretrain.train.train_step on a DeepSpeed engine from the shipped JSON: zero1.json
as on a GPU, bf16, TensorBoard on; and zero1-cpu-fp32.json) with a plain PyTorch loop doing the same work
(the same MaskedLMObjective, torch.optim.AdamW, clip_grad_norm_ 1.0, a LambdaLR warmup, the same batches),
in one process, in interleaved blocks; then profiles each over the same steps and groups the host time by
top-level module, so the difference says where the engine's time goes. The loader's hand-off (taking the
next batch from a worker) is timed on its own. Writes benchmarks/results/overhead.json (--out to change).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from tinydnabert.io import data_dir
from tinydnabert.pretrain.model import ModelConfig, build_model, flops_per_token

REPO = Path(__file__).resolve().parents[1]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="", help="shards dir (default: preprocess the real hg38 slice into a temp dir)")
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--micro-batch", type=int, default=4)
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the four configurations")
    p.add_argument("--block", type=int, default=4, help="timed steps per configuration per round")
    p.add_argument("--num-workers", type=int, default=1, help="our loader's worker processes")
    p.add_argument("--compile", action="store_true", help="torch.compile our model (GPU path)")
    p.add_argument("--threads", type=int, default=0,
                   help="OMP_NUM_THREADS for every configuration (0 = torch's default, one per core); on a busy "
                        "CPU 1 avoids OpenMP threads spinning against other jobs")
    p.add_argument("--out", default="", help="JSON results (default benchmarks/results/throughput.json, or "
                                             "overhead.json with --overhead)")
    p.add_argument("--overhead", action="store_true",
                   help="host time per optimizer step of our engine vs a plain PyTorch loop (negligible model)")
    p.add_argument("--worker", choices=("ours", "reference", "longest", "packed"), help=argparse.SUPPRESS)
    p.add_argument("--tmp", help=argparse.SUPPRESS)
    p.add_argument("--peak", type=float, help=argparse.SUPPRESS)
    return p.parse_args()


def make_shards(tmp: Path) -> Path:
    from tinydnabert.prep.preprocess import PreprocessConfig, run_preprocess

    out = tmp / "shards"
    run_preprocess(PreprocessConfig(fasta=[str(data_dir() / "genome" / "hg38_chr2_1-2333275.fa.gz")], out=str(out),
                                    samples_per_shard=256, val_fraction=0.05, seed=0, workers=2))
    return out


def peak_flops(device: torch.device) -> tuple[float, str]:
    from tinydnabert.pretrain.metrics import peak_flops_per_device

    return peak_flops_per_device(0.0, device)


# ------------------------------------------------------------------------------------------------ ours


class Ours:
    """Our engine in this process (world size 1): DeepSpeed initialised from the shipped JSON, the
    training loop's own train_step() and data loader, so each block of steps is timed like the run."""

    name = "ours: DeepSpeed engine, packed rows"

    def __init__(self, a, shards: Path, gpu: bool, peak: float):
        import deepspeed

        from tinydnabert.prep.tokenizer import load_tokenizer
        from tinydnabert.pretrain import data as data_mod
        from tinydnabert.pretrain import distributed, ds_config
        from tinydnabert.pretrain.model import MaskedLMObjective

        distributed.bootstrap_env()  # world size 1; MASTER_PORT comes from the parent
        base = ds_config.shipped(ds_config.GPU_CONFIG if gpu else ds_config.CPU_CONFIG)
        cfg = ds_config.derive(base, batch=a.micro_batch, micro=a.micro_batch, warmup=1, steps=10**6)  # no accumulation
        cfg["tensorboard"] = {"enabled": False}
        self.mcfg = ModelConfig(hidden_size=a.hidden, num_hidden_layers=a.layers, num_attention_heads=a.heads,
                                intermediate_size=4 * a.hidden).with_tokenizer(load_tokenizer(shards))
        torch.manual_seed(0)
        deepspeed.init_distributed()
        model = MaskedLMObjective(build_model(self.mcfg))
        self.engine, *_ = deepspeed.initialize(model=model, model_parameters=model.parameters(), config=cfg)
        if a.compile:
            self.engine.compile()
        dcfg = data_mod.DataConfig(seq_len=a.seq_len, num_workers=a.num_workers)
        self.batches = distributed.rng_neutral(data_mod.build_train_loader(shards, dcfg, a.micro_batch, 0, 1))
        self.acc = torch.zeros(3, dtype=torch.float64, device=self.engine.device)
        self.a, self.gpu, self.peak = a, gpu, peak
        self.steps: list[dict] = []

    def run(self, n: int) -> None:
        from tinydnabert.pretrain.train import train_step

        self.engine.train()
        for i in range(n):
            t = time.perf_counter()
            wait = train_step(self.engine, self.batches, 1, self.engine.device, self.acc)
            self.acc.tolist()  # a sync per step, for timing only (the training loop syncs per log interval)
            dt = time.perf_counter() - t
            if i:  # the first step of a block warms caches after the other configurations ran
                tokens = self.a.micro_batch * self.a.seq_len
                self.steps.append({"dt": dt, "wait": wait, "real": tokens, "positions": tokens})


# ------------------------------------------------------------------------------------------- baseline


class HFTrainer:
    """The reference recipe: transformers Trainer + DataCollatorForLanguageModeling (15 % masking)."""

    NAMES = {"reference": "reference: HF Trainer + collator, padded to 512",
             "longest": "HF Trainer + collator, padded to batch's longest",
             "packed": "HF Trainer + collator, packed rows"}

    def __init__(self, a, shards: Path, gpu: bool, peak: float, layout: str, tmp: Path):
        from transformers import DataCollatorForLanguageModeling, TrainerCallback, TrainingArguments

        from tinydnabert import formats
        from tinydnabert.prep.shards import read_shard
        from tinydnabert.prep.tokenizer import load_tokenizer

        self.name = self.NAMES[layout]
        packed = layout == "packed"
        tok = load_tokenizer(shards)
        rows: list[list[int]] = []
        for shard in formats.shard_paths(shards, "train"):
            ids = [sample.ids for sample in read_shard(shard, meta=False)]
            segs = [[tok.bos_token_id, *x.tolist(), tok.eos_token_id][: a.seq_len] for x in ids]
            if packed:  # our layout: concatenate and cut into full rows
                flat = [t for seg in segs for t in seg]
                rows += [flat[i:i + a.seq_len] for i in range(0, len(flat) - a.seq_len + 1, a.seq_len)]
            else:  # one segment per row, padded by the collator (to 512, or to the batch's longest row)
                rows += segs
        self.dataset = [{"input_ids": r} for r in rows]
        self.mcfg = ModelConfig(hidden_size=a.hidden, num_hidden_layers=a.layers, num_attention_heads=a.heads,
                                intermediate_size=4 * a.hidden).with_tokenizer(tok)
        torch.manual_seed(0)
        self.model = build_model(self.mcfg)
        # The reference tokenized with padding="max_length" (every row 512 positions); "longest" is the
        # kinder dynamic padding of the collator, for comparison.
        collator = DataCollatorForLanguageModeling(
            tok, mlm_probability=0.15, pad_to_multiple_of=a.seq_len if layout == "reference" else None)
        self.cur = {"collate": 0.0, "real": 0, "positions": 0}
        self.steps: list[dict] = []
        outer = self

        def timed_collate(features):
            t = time.perf_counter()
            batch = collator(features)
            outer.cur["collate"] += time.perf_counter() - t
            return batch

        class Clock(TrainerCallback):
            """Step time = between consecutive step ends: it includes the batch fetch + collate, which
            the Trainer does before on_step_begin."""

            def on_train_begin(self, args, state, control, **kw):
                self.t, self.first = time.perf_counter(), True
                outer.cur.update(collate=0.0, real=0, positions=0)

            def on_step_end(self, args, state, control, **kw):
                if gpu:
                    torch.cuda.synchronize()
                t = time.perf_counter()
                if not self.first:
                    outer.steps.append({"dt": t - self.t, "wait": outer.cur["collate"], "real": outer.cur["real"],
                                        "positions": outer.cur["positions"]})
                self.t, self.first = t, False
                outer.cur.update(collate=0.0, real=0, positions=0)

        self.collate, self.callback = timed_collate, Clock()
        self.a, self.offset = a, 0
        self.args = TrainingArguments(
            output_dir=str(tmp / f"trainer-{layout}"),
            per_device_train_batch_size=a.micro_batch, max_steps=1, learning_rate=1e-4, weight_decay=1e-5,
            adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8, warmup_steps=1, lr_scheduler_type="linear",
            max_grad_norm=1.0, logging_steps=10**6, save_strategy="no", report_to=[], disable_tqdm=True,
            use_cpu=not gpu, bf16=gpu, dataloader_num_workers=0, torch_compile=a.compile, seed=0)
        assert self.args.world_size == 1 and self.args.parallel_mode.value == "not_parallel", self.args.parallel_mode

    def run(self, n: int) -> None:
        from transformers import Trainer

        outer = self

        class CountingTrainer(Trainer):
            """Counts the tokens of the batch each step trains on (the loader collates one batch ahead)."""

            def training_step(self, model, inputs, *args, **kw):
                outer.cur["real"] += int(inputs["attention_mask"].sum())
                outer.cur["positions"] += inputs["input_ids"].numel()
                return super().training_step(model, inputs, *args, **kw)

        # each block continues on other rows (seeded shuffle) with the same model
        args = dataclasses.replace(self.args, max_steps=n, seed=self.offset)
        trainer = CountingTrainer(model=self.model, args=args, train_dataset=self.dataset, data_collator=self.collate,
                          callbacks=[self.callback])
        trainer.train()
        self.offset += 1


def summarize(name: str, steps: list[dict], fpt: float, micro_batch: int, peak: float) -> dict:
    step_s = statistics.median(s["dt"] for s in steps)
    real = statistics.median(s["real"] / s["dt"] for s in steps)
    pos = statistics.median(s["positions"] / s["dt"] for s in steps)
    return {"name": name, "timed_steps": len(steps), "step_ms": 1000 * step_s, "tokens_per_sec": real,
            "positions_per_sec": pos, "samples_per_sec": micro_batch / step_s, "mfu": fpt * pos / peak,
            "data_wait_pct": 100 * statistics.median(s["wait"] / s["dt"] for s in steps),
            "padding_pct": 100 * (1 - sum(s["real"] for s in steps) / sum(s["positions"] for s in steps))}


WORKERS = ("ours", "reference", "longest", "packed")


def worker(a) -> int:
    """One configuration in its own process (our engine initialises torch.distributed, which would turn
    a Trainer in the same process into a 1-rank DDP): reads "run N" lines, answers one JSON line each."""
    # answers go to the original stdout; everything libraries print (at any level) goes to stderr
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    gpu = torch.cuda.is_available()
    shards, tmp, peak = Path(a.data), Path(a.tmp), a.peak
    if a.worker == "ours":
        cfg = Ours(a, shards, gpu, peak)
    else:
        cfg = HFTrainer(a, shards, gpu, peak, a.worker, tmp)
    for line in sys.stdin:
        cfg.steps = []
        cfg.run(int(line.split()[1]))
        out.write(json.dumps({"name": cfg.name, "steps": cfg.steps,
                              "flops_per_token": flops_per_token(cfg.mcfg, a.seq_len)}) + "\n")
        out.flush()
    return 0


def main() -> int:
    a = parse_args()
    if a.worker:
        return worker(a)
    a.out = a.out or str(REPO / "benchmarks" / "results" / ("overhead.json" if a.overhead else "throughput.json"))
    if a.overhead:
        from overhead import overhead_main  # benchmarks/overhead.py

        return overhead_main(a, make_shards)
    gpu = torch.cuda.is_available()
    device = torch.device("cuda" if gpu else "cpu")
    tmp = Path(tempfile.mkdtemp(prefix="tdb-throughput-"))
    procs = []
    try:
        shards = Path(a.data) if a.data else make_shards(tmp)
        if a.threads:
            torch.set_num_threads(a.threads)  # the peak is that of the threads each configuration gets
        peak, peak_src = peak_flops(device)
        passthrough = [f"--{k.replace('_', '-')}={v}" for k, v in vars(a).items()
                       if k in ("hidden", "layers", "heads", "seq_len", "micro_batch", "num_workers")]
        for name in WORKERS:
            procs.append(subprocess.Popen(
                [sys.executable, __file__, "--worker", name, "--data", str(shards), "--tmp", str(tmp),
                 "--peak", str(peak), *passthrough, *(["--compile"] if a.compile else [])],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=(tmp / f"{name}.log").open("w"), text=True,
                env={**os.environ, "MASTER_PORT": str(29533),
                     **({"OMP_NUM_THREADS": str(a.threads)} if a.threads else {})}))
        # Interleaved blocks: on a shared machine the load changes over minutes; alternating the
        # configurations exposes each to the same conditions. The first step of each block is dropped.
        steps: dict[str, list] = {n: [] for n in WORKERS}
        names, fpt = {}, {}
        load = [os.getloadavg()[0]]
        for _ in range(a.rounds):
            for name, p in zip(WORKERS, procs):
                p.stdin.write(f"run {a.block + 1}\n")
                p.stdin.flush()
                line = p.stdout.readline()
                if not line:
                    sys.exit(f"benchmark worker {name} died:\n{(tmp / f'{name}.log').read_text()[-3000:]}")
                reply = json.loads(line)
                steps[name] += reply["steps"]
                names[name], fpt[name] = reply["name"], reply["flops_per_token"]
            load.append(os.getloadavg()[0])
        results = [summarize(names[n], steps[n], fpt[n], a.micro_batch, peak) for n in WORKERS]
    finally:
        for p in procs:
            if p.stdin:
                p.stdin.close()
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    ours = results[0]
    for r in results:
        r["ratio_ours_tokens_per_sec"] = ours["tokens_per_sec"] / r["tokens_per_sec"]
    n_params = sum(p.numel() for p in build_model(ModelConfig(
        hidden_size=a.hidden, num_hidden_layers=a.layers, num_attention_heads=a.heads, intermediate_size=4 * a.hidden,
        vocab_size=1024)).parameters())
    setup = {"device": torch.cuda.get_device_name() if gpu else f"CPU ({os.cpu_count()} cores)",
             "precision": "bf16" if gpu else "fp32",
             "model": f"L{a.layers}-H{a.hidden}-A{a.heads}, {n_params:,} params",
             "seq_len": a.seq_len, "micro_batch": a.micro_batch, "rounds": a.rounds, "timed_steps_per_block": a.block,
             "load_average_1min": load, "omp_num_threads": a.threads or os.environ.get("OMP_NUM_THREADS") or "default",
             "peak_tflops": peak / 1e12, "peak_source": peak_src, "torch": torch.__version__,
             "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    print(f"\n{setup['device']} | {setup['precision']} | {setup['model']} | micro batch {a.micro_batch} x "
          f"{a.seq_len} | medians of {a.rounds} x {a.block} interleaved steps | load {min(load):.1f}-{max(load):.1f} | "
          f"peak {peak / 1e12:.3f} TFLOP/s ({peak_src})\n")
    head = (f"| {'configuration':<50} | step ms | tokens/s | positions/s | samples/s |  MFU  | data wait | padding "
            "| ours / this |")
    print(head)
    print("|" + "|".join("-" * (len(c)) for c in head.split("|")[1:-1]) + "|")
    for r in results:
        print(f"| {r['name']:<50} | {r['step_ms']:7.0f} | {r['tokens_per_sec']:8.0f} | "
              f"{r['positions_per_sec']:11.0f} | "
              f"{r['samples_per_sec']:9.2f} | {100 * r['mfu']:4.1f}% | {r['data_wait_pct']:8.1f}% | "
              f"{r['padding_pct']:6.1f}% | {r['ratio_ours_tokens_per_sec']:10.2f}x |")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"setup": setup, "results": results}, indent=2) + "\n")
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

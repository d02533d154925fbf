"""Everything the GPU path needs checked, in one command of <= 8 minutes on one H100 / H200; writes a log and JSON.

    bash benchmarks/gpu_prepare.sh                      # here, with PyPI: wheels, real data, shards -> .gpu/
    python benchmarks/gpu_check.py --dry-run            # the plan, and whether .gpu/ is prepared
    python3 benchmarks/gpu_check.py --out $OUT          # on the GPU machine (no network): carry .gpu

With the device tool: run(command="python3 benchmarks/gpu_check.py --out $OUT", carry=[".gpu"], timeout_s=540).

Stages, in order of what they are worth, each a subprocess with its own time limit, all under one deadline
(--budget, default 470 s: whatever does not fit is reported "skipped (budget)", never cut half-way silently):

  env          GPU, driver, torch, CUDA, then (after install) deepspeed / transformers versions
  install      pip install --no-index the prepared wheels into a private target (the image lacks deepspeed,
               webdataset, pysam; transformers is pinned to the tested version)
  jit          DeepSpeed's FusedAdam CUDA op, JIT-compiled once (~1-2 min), cached for every later stage
  gpu-tests    pytest -m gpu: the sync test under torch.cuda.set_sync_debug_mode, among any others marked gpu
  pretrain     300 steps of real pretraining of the reference model (L6-H512-A8, 128 x 512 tokens a step,
               ds_configs/zero1.json as shipped, --masked-per-row 128) through the launcher: MFU, data wait %
  throughput   benchmarks/throughput.py at the reference shape (micro-batch 128 x 512, bf16, SDPA, fused
               AdamW, compile off) against the HF Trainer baseline (three layouts) in the same run
  sweep        the options that should move MFU, our engine in-process, 128 x 512 tokens a step: the micro-batch
               (32 x 4 accumulation, 64 x 2, 128 x 1: the JSON's train_micro_batch_size_per_gpu), the head
               (--masked-per-row 128 vs every position), clipping 1.0 vs 0 (what DeepSpeed's one sync per step
               costs), torch.compile; median step time, tokens/s, MFU, peak memory, OOM reported as such
  bf16-fp32    bf16 against fp32 (zero1.json with bf16 off): the same seed, data and 50 steps (lr 5e-4,
               warmup 10), loss at every 5th step and the largest relative difference
  compile      throughput.py again with --compile (ours: engine.compile(); the Trainer: torch_compile)

Not measured, with the reason: fused cross-entropy (no kernel in torch 2.13 or the image without a new
dependency such as liger-kernel; with --masked-per-row the logits are 64 MiB per micro-batch instead of 256)
and CUDA graphs (DeepSpeed's engine does host-side work between kernels every step -- grad hooks, bucket
bookkeeping, the clipping sync -- so the step cannot be captured; torch.compile's "reduce-overhead" mode
would need the same).

Results: OUT/gpu_check.json (one entry per stage: status, seconds, parsed figures) and OUT/gpu_check.log
(every command and its output); both rewritten after each stage, so a run cut short keeps what it had.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Wheels gpu_prepare.sh makes (distribution names as in the file names); the check needs each one.
WHEELS = ("deepspeed", "pydantic", "pydantic_core", "annotated_types", "typing_inspection", "hjson", "webdataset",
          "braceexpand", "pysam", "transformers")
GENOME = "hg38_chr2_1-2333275.fa.gz"
# name, estimated seconds on an H100/H200 (what the budget plans with), time limit
# (guesses from the CPU runs and the image's speed: replace them with the first run's measured "seconds")
STAGES = [("env", 5, 60), ("install", 15, 120), ("jit", 100, 240), ("gpu-tests", 40, 180), ("pretrain", 50, 150),
          ("throughput", 70, 180), ("sweep", 100, 180), ("bf16-fp32", 60, 150), ("compile", 120, 200)]
STEP_LINE = re.compile(r"^step (\d{6})/\d{6} \| loss (\S+) \| lr \S+ \| (\d+) ms \| ([\d.]+)k tok/s \| mfu ([\d.]+)% "
                       r"\| data wait ([\d.]+)%", re.M)


def check_prepared(prepared: Path) -> list[str]:
    """What is missing from the prepared folder (empty = ready)."""
    missing = []
    wheels = prepared / "wheels"
    for name in WHEELS:
        if not list(wheels.glob(f"{name}-*.whl")):
            missing.append(f"{wheels}/{name}-*.whl")
    if not (prepared / "shards" / "manifest.json").is_file():
        missing.append(f"{prepared}/shards/manifest.json")
    if not (prepared / "data" / "genome" / GENOME).is_file():
        missing.append(f"{prepared}/data/genome/{GENOME}")
    return missing


class Check:
    def __init__(self, a) -> None:
        self.a = a
        self.out = Path(a.out)
        self.prepared = Path(a.prepared).resolve()
        self.t0 = time.monotonic()
        self.results: dict[str, dict] = {}
        self.site = Path("/tmp/tdb-gpu-site")
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", "TINYDNABERT_DATA": str(self.prepared / "data"),
                    "PYTHONPATH": os.pathsep.join([str(self.site), str(REPO)]),
                    "PATH": os.pathsep.join([str(self.site / "bin"), os.environ.get("PATH", "")]),
                    "TORCH_EXTENSIONS_DIR": "/tmp/tdb-torch-extensions", "MASTER_PORT": "29555"}

    def left(self) -> float:
        return self.a.budget - (time.monotonic() - self.t0)

    def log(self, text: str) -> None:
        with (self.out / "gpu_check.log").open("a") as f:
            f.write(text if text.endswith("\n") else text + "\n")
        print(text, flush=True)

    def save(self) -> None:
        (self.out / "gpu_check.json").write_text(json.dumps(
            {"budget_s": self.a.budget, "elapsed_s": time.monotonic() - self.t0, "stages": self.results}, indent=2))

    def sh(self, cmd: list[str], limit: float, cwd: Path = REPO) -> tuple[int, str]:
        self.log("$ " + " ".join(cmd))
        try:
            r = subprocess.run(cmd, cwd=cwd, env=self.env, capture_output=True, text=True,
                               timeout=max(5.0, min(limit, self.left())))
            out = r.stdout + r.stderr
            code = r.returncode
        except subprocess.TimeoutExpired as e:
            out = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
            out += "\n[timed out]"
            code = 124
        self.log(out[-20000:])
        return code, out

    def run(self) -> int:
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "gpu_check.log").write_text("")
        for name, estimate, limit in STAGES:
            if self.left() < estimate:
                self.results[name] = {"status": "skipped (budget)", "estimate_s": estimate, "left_s": self.left()}
                self.log(f"== {name}: skipped, {self.left():.0f} s left of the budget, needs ~{estimate} s")
                self.save()
                continue
            self.log(f"== {name} ({self.left():.0f} s left)")
            t = time.monotonic()
            try:
                res = getattr(self, "stage_" + name.replace("-", "_"))(limit)
            except Exception as e:  # noqa: BLE001 - one stage failing must not lose the others' results
                res = {"status": f"error: {type(e).__name__}: {e}"}
            res.setdefault("status", "ok")
            res["seconds"] = round(time.monotonic() - t, 1)
            self.results[name] = res
            self.log(f"== {name}: {res['status']} in {res['seconds']} s")
            self.save()
            if name in ("install", "jit") and res["status"] != "ok":
                self.log("stopping: nothing later can run without it")
                break
        return 0 if all(r["status"] == "ok" for r in self.results.values()) else 1

    # ------------------------------------------------------------------------------------------- stages
    def stage_env(self, limit: float) -> dict:
        code, smi = self.sh(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                            limit)
        code2, py = self.sh([sys.executable, "-c", "import sys, torch; print(sys.version.split()[0], "
                             "torch.__version__, torch.version.cuda, torch.cuda.get_device_name())"], limit)
        return {"status": "ok" if code == code2 == 0 else "error", "nvidia_smi": smi.strip(),
                "python_torch_cuda_gpu": py.strip().splitlines()[-1] if py.strip() else ""}

    def stage_install(self, limit: float) -> dict:
        missing = check_prepared(self.prepared)
        if missing:
            return {"status": f"error: not prepared, missing {missing}"}
        shutil.rmtree(self.site, ignore_errors=True)
        code, _ = self.sh([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                           "--no-cache-dir", "--target", str(self.site),
                           *map(str, sorted((self.prepared / "wheels").glob("*.whl")))], limit)
        _, versions = self.sh([sys.executable, "-c", "import deepspeed, transformers, webdataset, pysam, torch; "
                               "print(deepspeed.__version__, transformers.__version__, torch.__version__)"], 120)
        return {"status": "ok" if code == 0 else "error", "deepspeed_transformers_torch": versions.strip()[-200:]}

    def stage_jit(self, limit: float) -> dict:
        code, out = self.sh([sys.executable, "-c", "import torch; from deepspeed.ops.adam import FusedAdam; "
                             "p = torch.nn.Parameter(torch.zeros(8, device='cuda')); p.grad = torch.ones_like(p); "
                             "FusedAdam([p]).step(); print('fused adam ok')"], limit)
        return {"status": "ok" if code == 0 and "fused adam ok" in out else "error"}

    def stage_gpu_tests(self, limit: float) -> dict:
        code, out = self.sh([sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", "tests"],
                            limit)
        tail = out.strip().splitlines()[-1] if out.strip() else ""
        return {"status": "ok" if code == 0 else "failed", "summary": tail}

    def _pretrain(self, run: Path, ds: str, steps: int, limit: float, extra: list[str]) -> tuple[int, list[dict]]:
        shutil.rmtree(run, ignore_errors=True)
        code, out = self.sh(["deepspeed", "--num_gpus", "1", "--master_port", "29556", "launch/pretrain.py",
                             "--deepspeed_config", ds, "--data", str(self.prepared / "shards"), "--out", str(run),
                             "--max-steps", str(steps), "--eval-interval", "0", "--save-interval", str(steps),
                             "--val-batches", "2", "--num-workers", "4", *extra], limit)
        lines = [{"step": int(s), "loss": float(loss), "step_ms": int(ms), "ktok_s": float(k), "mfu_pct": float(m),
                  "data_wait_pct": float(w)} for s, loss, ms, k, m, w in STEP_LINE.findall(out)]
        return code, lines

    def stage_pretrain(self, limit: float) -> dict:
        code, lines = self._pretrain(Path("/tmp/tdb-gpu-pretrain"), "ds_configs/zero1.json", 300, limit,
                                     ["--log-interval", "50", "--masked-per-row", "128"])
        steady = lines[1:] or lines  # the first interval holds start-up and compilation of kernels
        med = (lambda k: statistics.median(x[k] for x in steady)) if steady else (lambda k: None)
        return {"status": "ok" if code == 0 and lines else "error", "log_lines": lines,
                "mfu_pct_median_after_first_interval": med("mfu_pct"), "data_wait_pct_median": med("data_wait_pct")}

    def _throughput(self, limit: float, compile_: bool) -> dict:
        out = self.out / ("throughput_compile.json" if compile_ else "throughput.json")
        code, text = self.sh([sys.executable, "benchmarks/throughput.py", "--data", str(self.prepared / "shards"),
                              "--hidden", "512", "--layers", "6", "--heads", "8", "--micro-batch", "128",
                              "--rounds", "2", "--block", "10", "--num-workers", "4", "--out", str(out),
                              *(["--compile"] if compile_ else [])], limit)
        res = json.loads(out.read_text()) if code == 0 and out.is_file() else {}
        return {"status": "ok" if res else "error", **res}

    def stage_throughput(self, limit: float) -> dict:
        return self._throughput(limit, False)

    def stage_compile(self, limit: float) -> dict:
        return self._throughput(limit, True)

    def stage_sweep(self, limit: float) -> dict:
        code, out = self.sh([sys.executable, __file__, "--sweep-worker", "--prepared", str(self.prepared)], limit)
        rows = [json.loads(x) for x in out.splitlines() if x.startswith("{")]
        return {"status": "ok" if code == 0 and rows else "error", "variants": rows}

    def stage_bf16_fp32(self, limit: float) -> dict:
        runs = {}
        for name, bf16 in (("bf16", True), ("fp32", False)):
            path = Path(f"/tmp/tdb-gpu-{name}.json")
            # zero1.json with a 50-step schedule, so that the loss moves; fp32 = the same with bf16 off
            self.sh([sys.executable, "-c", "import json, sys; from tinydnabert import ds_config; "
                     "ds = ds_config.derive(ds_config.shipped('zero1.json'), lr=5e-4, warmup=10, steps=50); "
                     f"ds['bf16'] = {{'enabled': {bf16}, 'check_grad_overflow': False}}; "
                     f"open({str(path)!r}, 'w').write(json.dumps(ds))"], 60)
            code, lines = self._pretrain(Path(f"/tmp/tdb-gpu-{name}"), str(path), 50, limit / 2,
                                         ["--log-interval", "5", "--masked-per-row", "128", "--seed", "0"])
            runs[name] = {"code": code, "losses": {x["step"]: x["loss"] for x in lines}}
        common = sorted(set(runs["bf16"]["losses"]) & set(runs["fp32"]["losses"]))
        rel = [abs(runs["bf16"]["losses"][s] - runs["fp32"]["losses"][s]) / runs["fp32"]["losses"][s] for s in common]
        ok = all(r["code"] == 0 for r in runs.values()) and len(common) == 10
        return {"status": "ok" if ok else "error", "steps": common, "max_rel_diff": max(rel) if rel else None,
                **{k: [runs[k]["losses"][s] for s in common] for k in ("bf16", "fp32")}}


# ----------------------------------------------------------------------------------------------- the sweep


SWEEP = [  # name, micro-batch (of 128 rows a step), --masked-per-row, gradient_clipping, compile
    ("micro32-gas4", 32, 128, 1.0, False), ("micro64-gas2", 64, 128, 1.0, False),
    ("micro128-gas1", 128, 128, 1.0, False), ("micro128-full-head", 128, 0, 1.0, False),
    ("micro128-no-clipping", 128, 128, 0.0, False), ("micro128-compile", 128, 128, 1.0, True)]


def sweep_worker(prepared: Path) -> int:
    """Our engine in this process, one variant after another: 5 warm-up steps, then 20 timed steps (each
    ended by a synchronize, for timing only). One JSON line per variant."""
    import deepspeed
    import torch

    from tinydnabert.prep.tokenizer import load_tokenizer
    from tinydnabert.pretrain import data as data_mod
    from tinydnabert.pretrain import distributed, ds_config, metrics
    from tinydnabert.pretrain.model import MaskedLMObjective, ModelConfig, build_model, flops_per_token
    from tinydnabert.pretrain.train import train_step

    distributed.bootstrap_env()
    deepspeed.init_distributed()
    shards = prepared / "shards"
    mcfg = ModelConfig().with_tokenizer(load_tokenizer(shards / "tokenizer"))
    peak, _ = metrics.peak_flops_per_device(0.0, torch.device("cuda"))
    for name, micro, per_row, clip, compile_ in SWEEP:
        row = {"variant": name, "micro": micro, "gas": 128 // micro, "masked_per_row": per_row, "clip": clip,
               "compile": compile_}
        engine = None
        try:
            ds = ds_config.derive(ds_config.shipped("zero1.json"), batch=128, micro=micro, warmup=10, steps=10**5)
            ds["gradient_clipping"] = clip
            ds["tensorboard"] = {"enabled": False}
            torch.manual_seed(0)
            obj = MaskedLMObjective(build_model(mcfg), masked_per_row=per_row)
            engine, *_ = deepspeed.initialize(model=obj, model_parameters=obj.parameters(), config=ds)
            if compile_:
                engine.compile()
            batches = distributed.rng_neutral(data_mod.build_train_loader(
                shards, data_mod.DataConfig(num_workers=4, masked_per_row=per_row), micro))
            acc = torch.zeros(3, dtype=torch.float64, device=engine.device)
            gas = engine.gradient_accumulation_steps()
            torch.cuda.reset_peak_memory_stats()
            times, waits = [], []
            for i in range(25):
                t = time.perf_counter()
                w = train_step(engine, batches, gas, engine.device, acc)
                torch.cuda.synchronize()
                if i >= 5:
                    times.append(time.perf_counter() - t)
                    waits.append(w)
            step = statistics.median(times)
            tok_s = 128 * 512 / step
            row.update(step_ms=1000 * step, tokens_per_sec=tok_s, mfu=flops_per_token(mcfg, 512) * tok_s / peak,
                       data_wait_pct=100 * statistics.median(waits) / step,
                       max_allocated_gib=torch.cuda.max_memory_allocated() / 2**30)
        except torch.cuda.OutOfMemoryError:
            row["error"] = "out of memory"
        except Exception as e:  # noqa: BLE001 - report and go on to the next variant
            row["error"] = f"{type(e).__name__}: {e}"[:300]
        print(json.dumps(row), flush=True)
        del engine
        torch.cuda.empty_cache()
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry-run", action="store_true", help="print the plan and check the prepared folder; run nothing")
    p.add_argument("--out", default=str(REPO / "out" / "gpu_check"), help="folder for gpu_check.json and .log")
    p.add_argument("--prepared", default=str(REPO / ".gpu"), help="what benchmarks/gpu_prepare.sh made")
    p.add_argument("--budget", type=float, default=470.0, help="seconds for all stages together")
    p.add_argument("--sweep-worker", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    prepared = Path(a.prepared)
    if a.sweep_worker:
        return sweep_worker(prepared)
    missing = check_prepared(prepared)
    if a.dry_run:
        print(f"gpu_check plan (budget {a.budget:.0f} s; estimates for one H100/H200):")
        total = 0
        for name, estimate, limit in STAGES:
            total += estimate
            print(f"  {name:<11} ~{estimate:>3} s (limit {limit} s)")
        print(f"  total       ~{total} s; stages past the budget are skipped and reported")
        print("  sweep: " + ", ".join(s[0] for s in SWEEP))
        if missing:
            print(f"NOT READY: {prepared} is not prepared; missing:\n  " + "\n  ".join(missing)
                  + "\nrun `bash benchmarks/gpu_prepare.sh` on a machine with PyPI first")
            return 1
        size = sum(f.stat().st_size for f in prepared.rglob("*") if f.is_file())
        print(f"READY: {prepared} holds every wheel, the shards and the genome ({size / 2**20:.1f} MiB to carry)")
        return 0
    if missing:
        sys.exit(f"error: {prepared} is not prepared (missing {missing[0]} ...); run benchmarks/gpu_prepare.sh")
    return Check(a).run()


if __name__ == "__main__":
    sys.exit(main())

"""Zero-shot variant scoring (`tinydnabert score-variants`): speed on CPU and a smoke signal of what it says.

    python benchmarks/variants.py --model RUN/export                       # the real chr20 VCFs, 3 repeats
    python benchmarks/variants.py --model RUN/export --reference-shape     # + a random 512x6x8 model, same tokenizer

For each model and each real VCF (data/variants/: 7 GoNL SNVs, 194 vt indels as given and normalized), the
variants are planned once (VCF x FASTA, not timed) and scored --repeats times on the CPU (the model loaded once,
not timed); the table shows the median variants per second, forward passes per variant, and the Spearman
correlation of the score (ALT - REF PLL difference, both strands) with the allele frequency from INFO (AF, else
AC/AN) over the scored rows, with n. On 7 or 194 rows, and allele frequency being shaped by much more than
sequence, the correlation is a smoke signal (the sign and whether it is far from 0), not a benchmark.
--reference-shape adds a randomly initialised model of the reference shape (pretrain.model.ModelConfig
defaults: hidden 512, 6 layers, 8 heads, 514 positions), saved in the export format, to time that shape and to
show what an untrained model's correlation looks like. Results: benchmarks/results/variants.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VCFS = ("gonl_chr20_release4.vcf.gz", "vt_chr20_indels.vcf.gz", "vt_chr20_indels.normalized.vcf.gz")


def git_commit() -> str:
    try:
        return subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def reference_shape_export(tokenizer_dir: Path, out: Path, seed: int = 0) -> Path:
    """A randomly initialised RobertaForMaskedLM of the reference shape with the given tokenizer, written the way
    `tinydnabert export` writes one (save_pretrained + the tokenizer files)."""
    import torch

    from tinydnabert.prep.tokenizer import load_tokenizer
    from tinydnabert.pretrain.model import ModelConfig, build_model

    tok = load_tokenizer(tokenizer_dir)
    torch.manual_seed(seed)
    build_model(ModelConfig().with_tokenizer(tok)).save_pretrained(str(out))
    tok.save_pretrained(str(out))
    return out


def measure(model_dir: Path, fasta: Path, vcf: Path, args) -> dict:
    import numpy as np
    import torch
    from scipy.stats import spearmanr

    from tinydnabert.eval.variants import load_masked_lm, plan_variants, score_variants
    from tinydnabert.prep.vcf import Reference, allele_frequency, read_vcf

    model, tok = load_masked_lm(model_dir, torch.device("cpu"))
    records = read_vcf(vcf)
    ref = Reference(fasta)
    seconds, passes = [], []
    for _ in range(args.repeats):
        variants = plan_variants(records, ref, args.window)
        stats = score_variants(model, tok, variants, args.strands, args.pll_tokens, args.batch_size)
        seconds.append(stats["seconds"])
        passes.append(stats["passes"])
    ok = [v for v in variants if v.status == "ok"]
    pairs = [(v.score, af) for v in ok if (af := allele_frequency(v.record, v.alt_index)) is not None]
    rho = float(spearmanr(*zip(*pairs)).statistic) if len(pairs) > 2 else float("nan")
    t = statistics.median(seconds)
    return {"vcf": vcf.name, "variants": len(variants), "scored": len(ok),
            "skipped": {s: sum(v.status == s for v in variants) for s in {v.status for v in variants} - {"ok"}},
            "seconds_median": t, "seconds": seconds, "variants_per_s": len(ok) / t if t else None,
            "passes_per_variant": passes[-1] / max(1, len(ok)),
            "spearman_score_af": None if np.isnan(rho) else rho, "n": len(pairs),
            "parameters": sum(p.numel() for p in model.parameters())}


def main() -> int:
    from tinydnabert.io import data_dir

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="an export directory (RUN/export)")
    p.add_argument("--reference-shape", action="store_true",
                   help="also time a random 512x6x8 model with the export's tokenizer")
    p.add_argument("--data", default=str(data_dir()), help="the shared data directory (genome/, variants/)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--window", type=int, default=512)
    p.add_argument("--strands", default="both", choices=["both", "forward"])
    p.add_argument("--pll-tokens", default="variant", choices=["variant", "window"])
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "variants.json"))
    args = p.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    data = Path(args.data)
    fasta = data / "genome" / "grch37_chr20.fa.gz"
    results = []
    with tempfile.TemporaryDirectory() as work:
        models = {"export": Path(args.model)}
        if args.reference_shape:
            models["random 512x6x8"] = reference_shape_export(Path(args.model), Path(work) / "random")
        for name, path in models.items():
            for vcf in VCFS:
                print(f"scoring {vcf} with {name} ...", file=sys.stderr, flush=True)
                results.append({"model": name, "path": str(path), **measure(path, fasta, data / "variants" / vcf,
                                                                           args)})
    print(f"{'model':<16} {'vcf':<36} {'scored':>9} {'var/s':>8} {'passes/var':>10} {'spearman(AF)':>12} {'n':>4}")
    for r in results:
        rho = "n/a" if r["spearman_score_af"] is None else f"{r['spearman_score_af']:+.3f}"
        print(f"{r['model']:<16} {r['vcf']:<36} {r['scored']:>4}/{r['variants']:<4} {r['variants_per_s']:>8.1f} "
              f"{r['passes_per_variant']:>10.1f} {rho:>12} {r['n']:>4}")
    summary = {"benchmark": "score-variants on the real chr20 VCFs (CPU)", "device": "cpu",
               "torch_threads": torch.get_num_threads(), "window": args.window, "strands": args.strands,
               "pll_tokens": args.pll_tokens, "batch_size": args.batch_size, "repeats": args.repeats,
               "machine": platform.platform(), "cpu": platform.processor(), "commit": git_commit(),
               "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "note": "Spearman of score with allele frequency on 7-194 rows: a smoke signal, not a benchmark",
               "results": results}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

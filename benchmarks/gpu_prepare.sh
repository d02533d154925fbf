#!/usr/bin/env bash
# Prepare, on a machine with PyPI, what the GPU machine lacks, into .gpu/ (gitignored; ~25 MiB, under the
# device tool's 64 MiB for the whole working tree):
#
#     bash benchmarks/gpu_prepare.sh          # then: python benchmarks/gpu_check.py --dry-run
#
#   .gpu/wheels/   Python 3.12 x86-64 wheels of what the GPU image (torch, transformers, tokenizers,
#                  tensorboard, accelerate, ...) has not: deepspeed (built here from its sdist, ops JIT-compiled
#                  there), its pydantic stack and hjson, webdataset + braceexpand, pysam; and transformers at
#                  the version this project is tested with (the image's may differ)
#   .gpu/data/genome/  the real hg38 slice (2.3 Mbp), so the tests' fixtures find real data there
#   .gpu/shards/   that slice preprocessed with the default recipe (vocab 1024), in 256-sample shards so that
#                  4 loader workers each get their own
#
# Versions are this machine's (pip show), so the GPU run uses what the CPU tests passed with.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=.gpu
mkdir -p "$OUT/wheels" "$OUT/data/genome"

version() { $PY -m pip show "$1" 2>/dev/null | sed -n 's/^Version: //p'; }
PLAT=(--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
      --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64
      --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
pkgs=()
for name in pydantic pydantic-core annotated-types typing-inspection hjson webdataset braceexpand pysam transformers; do
    v=$(version "$name")
    [ -n "$v" ] || { echo "error: $name is not installed here; run 'make install' first" >&2; exit 2; }
    pkgs+=("$name==$v")
done
echo "downloading: ${pkgs[*]}"
$PY -m pip download -q --no-deps "${PLAT[@]}" -d "$OUT/wheels" "${pkgs[@]}"

# DeepSpeed publishes an sdist only: build a pure-Python wheel from it (DS_BUILD_OPS=0: its CUDA ops are
# JIT-compiled on the GPU machine at first use, ~1-2 min, which gpu_check does first).
ds=$(version deepspeed)
if ! ls "$OUT/wheels"/deepspeed-"$ds"-*.whl >/dev/null 2>&1; then
    tmp=$(mktemp -d)
    $PY -m pip download -q --no-deps --no-binary :all: -d "$tmp" "deepspeed==$ds"
    DS_BUILD_OPS=0 $PY -m pip wheel -q --no-deps --no-build-isolation -w "$OUT/wheels" "$tmp"/deepspeed-*.tar.gz
    rm -rf "$tmp"
fi

DATA=${TINYDNABERT_DATA:-$(cd .. && pwd)/shared/data}
cp -f "$DATA"/genome/hg38_chr2_1-2333275.fa.gz* "$OUT/data/genome/"
if [ ! -f "$OUT/shards/manifest.json" ]; then
    $PY -m tinydnabert.cli preprocess --fasta "$OUT/data/genome/hg38_chr2_1-2333275.fa.gz" --out "$OUT/shards" \
        --samples-per-shard 256 --val-fraction 0.05 --seed 0 --no-progress
fi
du -sh "$OUT"/* | sed 's/^/prepared: /'

"""Shared fixtures: the real-data directory and a repository root, independent of the cwd."""

from __future__ import annotations

from pathlib import Path

import pytest

from tinydnabert.common import data_dir

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def real_data() -> Path:
    """$TINYDNABERT_DATA or ../shared/data. Missing real data is a failure, not a skip:
    every stage must be tested on the real files."""
    d = data_dir()
    if not (d / "genome").is_dir():
        pytest.fail(f"real data not found at {d}: set TINYDNABERT_DATA to the shared data directory")
    return d


@pytest.fixture(scope="session")
def genome_dir(real_data: Path) -> Path:
    return real_data / "genome"


@pytest.fixture(scope="session")
def benchmark_dir(real_data: Path) -> Path:
    return real_data / "benchmark"


@pytest.fixture(scope="session")
def hg38_shards(tmp_path_factory, genome_dir: Path) -> Path:
    """Shards + tokenizer made by the real preprocessing stage from the real soft-masked hg38 slice
    (2.3 Mbp non-N): a small vocab and small shards, so that 2 ranks x 2 workers all get shards."""
    from tinydnabert.preprocess import PreprocessConfig, run_preprocess

    out = tmp_path_factory.mktemp("hg38") / "shards"
    run_preprocess(PreprocessConfig(
        fasta=[str(genome_dir / "hg38_chr2_1-2333275.fa.gz")], out=str(out),
        vocab_size=256, min_frequency=2, samples_per_shard=256, val_fraction=0.05, seed=0, workers=2,
    ))
    return out

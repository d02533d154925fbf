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

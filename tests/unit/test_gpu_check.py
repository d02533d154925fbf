"""benchmarks/gpu_check.py --dry-run on a CPU: it prints the plan and says whether the GPU run is prepared
(benchmarks/gpu_prepare.sh's wheels, genome and shards); it needs no wheels to exist to say so."""

from __future__ import annotations

import runpy
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "gpu_check.py"
STAGES = ("env", "install", "jit", "gpu-tests", "pretrain", "throughput", "sweep", "bf16-fp32", "compile")


def dry_run(prepared: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--prepared", str(prepared)],
                          capture_output=True, text=True, timeout=60)


def test_dry_run_without_preparation_says_what_is_missing_and_how_to_make_it(tmp_path):
    r = dry_run(tmp_path / "nothing-prepared")
    assert r.returncode == 1, r.stdout + r.stderr
    assert all(f"  {s} " in r.stdout for s in STAGES), r.stdout
    assert "NOT READY" in r.stdout and "bash benchmarks/gpu_prepare.sh" in r.stdout
    assert "wheels/deepspeed-*.whl" in r.stdout and "shards/manifest.json" in r.stdout


def test_dry_run_with_everything_prepared_is_ready(tmp_path):
    prepared = tmp_path / "gpu"
    (prepared / "wheels").mkdir(parents=True)
    for name in ("deepspeed-0.19.8-py3-none-any", "pydantic-2.13.4-py3-none-any",
                 "pydantic_core-2.46.4-cp312-cp312-manylinux_2_17_x86_64", "annotated_types-0.7.0-py3-none-any",
                 "typing_inspection-0.4.2-py3-none-any", "hjson-3.1.0-py3-none-any", "webdataset-1.0.2-py3-none-any",
                 "braceexpand-0.1.7-py2.py3-none-any", "pysam-0.24.1-cp312-cp312-manylinux_2_28_x86_64",
                 "transformers-5.24.0-py3-none-any"):
        (prepared / "wheels" / f"{name}.whl").write_bytes(b"")  # names only: the dry run installs nothing
    (prepared / "shards").mkdir()
    (prepared / "shards" / "manifest.json").write_text("{}")
    (prepared / "data" / "genome").mkdir(parents=True)
    (prepared / "data" / "genome" / "hg38_chr2_1-2333275.fa.gz").write_bytes(b"")
    r = dry_run(prepared)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "READY" in r.stdout and "NOT READY" not in r.stdout
    (prepared / "wheels" / "pysam-0.24.1-cp312-cp312-manylinux_2_28_x86_64.whl").unlink()
    r = dry_run(prepared)
    assert r.returncode == 1 and "wheels/pysam-*.whl" in r.stdout and "deepspeed" not in r.stdout.split("NOT READY")[1]


def test_prepare_script_makes_what_the_check_looks_for():
    """gpu_prepare.sh fetches every wheel gpu_check needs (by name), the genome and the shards."""
    text = (REPO / "benchmarks" / "gpu_prepare.sh").read_text()
    gpu_check = runpy.run_path(str(SCRIPT))  # its names, without running main()
    for name in gpu_check["WHEELS"]:
        assert name.replace("_", "-") in text, name
    assert gpu_check["GENOME"] in text and '"$OUT/shards"' in text
    assert "/.gpu/" in (REPO / ".gitignore").read_text()

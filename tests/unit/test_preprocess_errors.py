"""Bad input through the `tinydnabert preprocess` CLI: exit status 2, a message naming the file
(and record or line), and no output directory (or temporary directory) left behind."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tinydnabert.app import cli

HG38 = "hg38_chr2_1-2333275.fa.gz"
SMALL = ["--vocab-size", "64", "--min-frequency", "1", "--min-len", "8", "--max-len", "32",
         "--tokenizer-sample", "1", "--min-shards", "1", "--workers", "1", "--no-progress",
         "--val-fraction", "0.2"]


def _gz(path: Path, data: bytes) -> Path:
    with gzip.open(path, "wb") as f:
        f.write(data)
    return path


GOOD = b">ok\n" + b"ACGTTGCAAGGCTTAACCGGATATCGCG" * 20 + b"\n"

CASES = {
    "missing": (None, ["not found"]),
    "empty": (b"", ["empty file"]),
    "leading_text": (b"some notes\n" + GOOD, ["line 1", "'>' FASTA header"]),
    "no_sequence": (GOOD + b">lonely\n" + GOOD.replace(b"ok", b"ok2"), ["record 'lonely'", "no sequence"]),
    "digit": (GOOD + b">r9\nACGT7ACGT\n", ["record 'r9'", "position 5", "'7'"]),
    "star": (b">rs\nAC*GT\n", ["record 'rs'", "'*'"]),
    "dash": (b">rd\nACGT\nAC-GT\n", ["record 'rd'", "position 7", "'-'"]),
}


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    rc = cli.main(["preprocess", *argv])
    return rc, capsys.readouterr().err


def assert_clean(parent: Path, out: Path) -> None:
    assert not out.exists()
    assert not [p for p in parent.iterdir() if p.name.startswith(f".{out.name}")]


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_fasta(tmp_path, capsys, case):
    data, needles = CASES[case]
    path = tmp_path / f"{case}.fa.gz"
    if data is not None:
        _gz(path, data) if case != "empty" else path.write_bytes(b"")
    out = tmp_path / "out"
    rc, err = run_cli(["--fasta", str(path), "--out", str(out), *SMALL], capsys)
    assert rc == 2
    assert err.startswith("error: ") and str(path) in err
    for n in needles:
        assert n in err, (n, err)
    assert "Traceback" not in err
    assert_clean(tmp_path, out)


@pytest.mark.parametrize("source,cut,needle", [
    (HG38, 3, "'chr2'"),                    # BGZF: htslib fails mid-record
    ("lambda_phage.fa.gz", 2, "truncated"),  # plain gzip: fails in the first 64 KiB
])
def test_truncated_gzip_second_file(tmp_path, capsys, genome_dir, source, cut, needle):
    """A truncated file after a good one: the whole run fails, nothing is left."""
    raw = (genome_dir / source).read_bytes()
    bad = tmp_path / "cut.fa.gz"
    bad.write_bytes(raw[: len(raw) // cut])
    out = tmp_path / "out"
    rc, err = run_cli(["--fasta", str(genome_dir / "human_chrM.fa.gz"), str(bad), "--out", str(out), *SMALL], capsys)
    assert rc == 2 and str(bad) in err and "truncated or corrupt" in err and needle in err, err
    assert_clean(tmp_path, out)


def test_existing_output_refused_then_overwritten(tmp_path, capsys):
    fa = _gz(tmp_path / "ok.fa.gz", GOOD)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    rc, err = run_cli(["--fasta", str(fa), "--out", str(out), *SMALL], capsys)
    assert rc == 2 and str(out) in err and "--overwrite" in err
    assert (out / "keep.txt").read_text() == "precious"
    rc, err = run_cli(["--fasta", str(fa), "--out", str(out), "--overwrite", *SMALL], capsys)
    assert rc == 0, err
    assert not (out / "keep.txt").exists() and (out / "manifest.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok.fa.gz", "out"]


@pytest.mark.parametrize("extra,needles", [
    (["--val-records", "nope", "--val-fraction", "0"], ["--val-records nope", "no such record"]),
    (["--include", "chr99"], ["no record selected"]),
    (["--include", "chr(1"], ["not a valid regular expression"]),
    (["--min-len", "40", "--max-len", "20"], ["--min-len 40"]),
    (["--val-records", "ok", "--val-fraction", "0.1"], ["not both"]),
    (["--min-len", "10000", "--max-len", "10000"], ["no training segments"]),
])
def test_bad_options(tmp_path, capsys, extra, needles):
    fa = _gz(tmp_path / "ok.fa.gz", GOOD)
    out = tmp_path / "out"
    rc, err = run_cli(["--fasta", str(fa), "--out", str(out), *SMALL, *extra], capsys)
    assert rc == 2 and err.startswith("error: ")
    for n in needles:
        assert n in err, (n, err)
    assert_clean(tmp_path, out)


def test_console_command_exit_status(tmp_path):
    """The installed entry point (a real subprocess) exits nonzero on bad input and 0 on good."""
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "tinydnabert.app.cli", "preprocess", "--out", str(out), *SMALL]
    r = subprocess.run([*cmd, "--fasta", str(tmp_path / "missing.fa")], capture_output=True, text=True, env=env)
    assert r.returncode == 2 and "missing.fa" in r.stderr and not out.exists()
    fa = _gz(tmp_path / "ok.fa.gz", GOOD)
    r = subprocess.run([*cmd, "--fasta", str(fa)], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert "train:" in r.stdout and (out / "manifest.json").is_file()

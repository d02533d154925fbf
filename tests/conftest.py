"""Shared fixtures: the real-data directory, a repository root (independent of the cwd), shards of the real
hg38 slice and a tiny pretrained export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tinydnabert.io import data_dir

REPO = Path(__file__).resolve().parents[1]  # tests/ is at the repository root


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
def chr20_slice(tmp_path_factory, genome_dir: Path) -> tuple[Path, str]:
    """A FASTA of 600 kbp of the real chr20 (GRCh37 20:30,000,001-30,600,000, no N; record '20' as the genome
    names it) and its sequence: the overlap and --exclude-from tests' genome (~900 segments, ~1 s to preprocess)."""
    import pysam

    with pysam.FastaFile(str(genome_dir / "grch37_chr20.fa.gz")) as fa:
        seq = fa.fetch("20", 30_000_000, 30_600_000)
    path = tmp_path_factory.mktemp("chr20") / "chr20_slice.fa"
    path.write_text(">20\n" + "\n".join(seq[i:i + 60] for i in range(0, len(seq), 60)) + "\n")
    return path, seq


@pytest.fixture(scope="session")
def hg38_shards(tmp_path_factory, genome_dir: Path) -> Path:
    """Shards + tokenizer made by the real preprocessing stage from the real soft-masked hg38 slice
    (2.3 Mbp non-N): a small vocab and small shards, so that 2 ranks x 2 workers all get shards."""
    from tinydnabert.prep.preprocess import PreprocessConfig, run_preprocess

    out = tmp_path_factory.mktemp("hg38") / "shards"
    run_preprocess(PreprocessConfig(
        fasta=[str(genome_dir / "hg38_chr2_1-2333275.fa.gz")], out=str(out),
        vocab_size=256, min_frequency=2, samples_per_shard=256, val_fraction=0.05, seed=0, workers=2,
    ))
    return out


def make_tiny_export(out: Path, genome_dir: Path, seed: int = 0) -> Path:
    """A tiny "pretrained export": BPE (vocab 128) trained on real hg38 segments with the project's
    tokenizer code, a 2-layer 32-wide RobertaForMaskedLM, save_pretrained + tokenizer in one dir
    (the layout `tinydnabert export` writes)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # see one_thread
    try:
        return _make_tiny_export(out, genome_dir, seed)
    finally:
        torch.set_num_threads(threads)


def _make_tiny_export(out: Path, genome_dir: Path, seed: int) -> Path:
    import pysam
    import torch

    from tinydnabert.prep.tokenizer import save_tokenizer, train_tokenizer
    from tinydnabert.pretrain.model import ModelConfig, build_model

    fa = pysam.FastaFile(str(genome_dir / "hg38_chr2_1-2333275.fa.gz"))
    seq = fa.fetch("chr2", 20_000, 420_000).upper()
    rng = np.random.default_rng(seed)
    segs = []
    for _ in range(300):
        s = int(rng.integers(0, len(seq) - 1024))
        segs.extend(p for p in seq[s:s + int(rng.integers(256, 1024))].split("N") if p)
    tok = save_tokenizer(train_tokenizer(segs, vocab_size=128, min_frequency=2), out)
    from tinydnabert.prep.tokenizer import load_tokenizer

    fast = load_tokenizer(tok)
    cfg = ModelConfig.tiny(hidden_size=32, intermediate_size=64, max_position_embeddings=258).with_tokenizer(fast)
    torch.manual_seed(seed + 1000)  # not the fine-tuning seeds: "scratch" must not start from these weights
    model = build_model(cfg)
    # A few MLM steps on real segments, so the export is (very briefly) pretrained, not a random init.
    ids = [fast(s[:400])["input_ids"] for s in segs[:64]]
    width = max(map(len, ids))
    x = torch.tensor([r + [cfg.pad_token_id] * (width - len(r)) for r in ids])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(seed)
    for _ in range(10):
        mask = (torch.rand(x.shape, generator=g) < 0.15) & (x > 4)
        labels = torch.where(mask, x, torch.full_like(x, -100))
        model(input_ids=torch.where(mask, torch.full_like(x, 4), x), attention_mask=(x != cfg.pad_token_id).long(),
              labels=labels).loss.backward()
        opt.step()
        opt.zero_grad()
    model.save_pretrained(str(out))
    return out


@pytest.fixture
def one_thread():
    """Tiny models gain nothing from a second thread, and on a busy 2-core CI box two spinning
    OpenMP threads per process make steps 10-50x slower."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def one_process_env(monkeypatch):
    """The environment of a launcher-less run (rank 0 of 1, a free port), set through monkeypatch so that it is
    undone after the test: an in-process pretrain() runs distributed.bootstrap_env, which would otherwise leave
    RANK & co. in os.environ for every later test. Returns the monkeypatch (e.g. to set WORLD_SIZE 2)."""
    from tinydnabert.pretrain.distributed import free_port

    for k, v in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"), ("MASTER_ADDR", "127.0.0.1"),
                 ("MASTER_PORT", str(free_port()))):
        monkeypatch.setenv(k, v)
    return monkeypatch


class _NoWait:
    """`time` as a retry loop sees it, without the backoff's sleeps (a forked DataLoader worker inherits it)."""

    def __getattr__(self, name):
        import time

        return getattr(time, name)

    @staticmethod
    def sleep(seconds: float) -> None:
        pass


@pytest.fixture
def no_backoff(monkeypatch):
    """Retries at once (tinydnabert.prep.download's and pretrain.sources' retry loops): a test that drops or
    refuses every shard's first GET, one after the other, would otherwise wait 0.25-1 s a shard. What is retried,
    and how, is unchanged."""
    from tinydnabert.prep import download
    from tinydnabert.pretrain import sources

    monkeypatch.setattr(download, "time", _NoWait())
    monkeypatch.setattr(sources, "time", _NoWait())


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory, genome_dir: Path) -> Path:
    """One tiny export per test session (building one takes seconds), shared by the fine-tuning tests."""
    return make_tiny_export(tmp_path_factory.mktemp("tiny") / "export", genome_dir)

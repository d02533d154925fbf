"""Genome mixtures on real genomes: human chr20 (GRCh37, 59.5 Mbp) + yeast (S288C chromosomes I-III, sharded with
chr20's tokenizer through `preprocess --tokenizer`), as `--data human=DIR:0.7 --data yeast=DIR:0.3`.

What must hold: each source's rows in the mixture are exactly that source's own stream (nothing lost, repeated
or mixed up), the mixture's rows per step do not depend on the world size or on a resume, the shares of rows
are the weights (exact at every 128-row block of a lane: data.Mixture), and a real launcher run reports tokens
and validation loss per source in TensorBoard.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import MODEL_FLAGS, launch_ranks, scalars, wait
from tinydnabert.errors import InputError
from tinydnabert.pretrain import sources
from tinydnabert.pretrain.data import MIX_BLOCK, DataConfig, build_train_loader, source_seed

WEIGHTS = {"human": 0.7, "yeast": 0.3}
GLOBAL, MICRO, LANES, SEQ = 16, 4, 4, 128  # 4 slots = 4 lanes: slot s of step k is lane s, positions 4k .. 4k+3


@pytest.fixture(scope="module")
def chr20_shards(tmp_path_factory, genome_dir: Path) -> Path:
    """The whole of chr20 (~20 s on 2 cores): a small vocabulary, 45 shards."""
    from tinydnabert.prep.preprocess import PreprocessConfig, run_preprocess

    out = tmp_path_factory.mktemp("chr20") / "shards"
    run_preprocess(PreprocessConfig(
        fasta=[str(genome_dir / "grch37_chr20.fa.gz")], out=str(out), vocab_size=256, min_frequency=2,
        samples_per_shard=2048, val_fraction=0.01, seed=0, workers=2, progress=False))
    return out


@pytest.fixture(scope="module")
def yeast_shards(tmp_path_factory, genome_dir: Path, chr20_shards: Path) -> Path:
    from tinydnabert.prep.preprocess import PreprocessConfig, run_preprocess

    out = tmp_path_factory.mktemp("yeast") / "shards"
    run_preprocess(PreprocessConfig(
        fasta=[str(genome_dir / "yeast_S288C_R64-2-1.fa.gz")], out=str(out), include=[r"ref\|NC_00113[3-5]\|"],
        tokenizer=str(chr20_shards / "tokenizer"), samples_per_shard=256, val_fraction=0.05, seed=0, workers=2,
        progress=False))
    return out


def mixture(chr20_shards: Path, yeast_shards: Path) -> list:
    return sources.resolve([f"human={chr20_shards}:{WEIGHTS['human']}", f"yeast={yeast_shards}:{WEIGHTS['yeast']}"])


def cfg(seed: int = 0) -> DataConfig:
    return DataConfig(seq_len=SEQ, num_workers=0, lanes=LANES, mix_shards=2, seed=seed)


def take(loader, n: int) -> list[dict]:
    it = iter(loader)
    return [next(it) for _ in range(n)]


def digest(batch: dict, i: int) -> str:
    return hashlib.sha1(batch["input_ids"][i].numpy().tobytes() + batch["labels"][i].numpy().tobytes()).hexdigest()


def test_each_source_is_its_own_stream(chr20_shards, yeast_shards):
    """Lane by lane, the mixture's rows of source s, in order, are source s's own stream (its own seed)."""
    steps = 2 * MIX_BLOCK // (GLOBAL // LANES)  # two blocks of every lane
    mixed = take(build_train_loader(mixture(chr20_shards, yeast_shards), cfg(), MICRO, global_batch=GLOBAL),
                 steps * LANES)
    for i, (name, shards) in enumerate((("human", chr20_shards), ("yeast", yeast_shards))):
        alone = take(build_train_loader(shards, cfg(source_seed(0, i)), MICRO, global_batch=GLOBAL), steps * LANES)
        for lane in range(LANES):
            # micro-batch j = (step k, slot j % 4) holds lane (j % 4)'s positions 4k .. 4k+3, in order
            got = [digest(b, r) for b in mixed[lane::LANES] for r in range(MICRO) if int(b["source"][r]) == i]
            want = [digest(b, r) for b in alone[lane::LANES] for r in range(MICRO)][:len(got)]
            assert len(got) == 2 * round(WEIGHTS[name] * MIX_BLOCK), (name, lane, len(got))
            assert got == want, f"{name}: lane {lane} of the mixture is not {name}'s own stream"


def test_shares_and_counts(chr20_shards, yeast_shards):
    loader = build_train_loader(mixture(chr20_shards, yeast_shards), cfg(), MICRO, global_batch=GLOBAL)
    batches = take(loader, 128 * LANES)  # 128 steps x 16 rows: 4 blocks of each of the 4 lanes
    per_step = np.array([np.bincount(b["source"].numpy(), minlength=2) for b in batches]).reshape(-1, LANES, 2).sum(1)
    seen = per_step.cumsum(0)
    for k in (1, 7, 32, 100, 128):  # the stream's own count (TensorBoard's) is the rows the workers drew
        assert list(loader.rows_by_source(k).values()) == seen[k - 1].tolist(), k
    # at the end of every block (32 steps = 128 rows of each lane) the shares are the weights rounded to 1/128
    share = seen[31::32] / seen[31::32].sum(1, keepdims=True)
    np.testing.assert_allclose(share, np.broadcast_to([90 / 128, 38 / 128], share.shape))
    # inside a block it is a random order of the block: 0.7 +- 0.05 after 7 steps (112 rows: about 3 sd)
    assert abs(seen[6, 0] / seen[6].sum() - WEIGHTS["human"]) < 0.05


def test_elastic_and_resumable(chr20_shards, yeast_shards):
    """The rows of every step are the same on 1 and on 2 ranks, and after a resume on another world size."""
    srcs = mixture(chr20_shards, yeast_shards)
    steps = 12

    def by_step(world: int, start_state=None, first_step: int = 0) -> dict[tuple[int, int], str]:
        out = {}
        for rank in range(world):
            loader = build_train_loader(srcs, cfg(), MICRO, rank, world, global_batch=GLOBAL)
            if start_state is not None:
                loader.load_state_dict(start_state)
            gas, first = loader.layout.gas, loader.batches_consumed
            for j, b in enumerate(take(loader, (steps - first_step) * gas), first):
                step, slot = loader.layout.micro_batch(j)
                out[step, slot] = "".join(digest(b, r) for r in range(MICRO)) + str(b["source"].tolist())
        return out

    one, two = by_step(1), by_step(2)
    assert one == two and len(one) == steps * (GLOBAL // MICRO)
    saver = build_train_loader(srcs, cfg(), MICRO, 0, 2, global_batch=GLOBAL)
    for _ in take(saver, 5 * saver.layout.gas):  # 5 steps on 2 ranks, then on 1
        pass
    resumed = by_step(1, saver.state_dict(), first_step=5)
    assert resumed == {k: v for k, v in one.items() if k[0] >= 5}


def test_refuses_another_tokenizer_and_unweighted(chr20_shards, tmp_path, genome_dir):
    from tinydnabert.prep.preprocess import PreprocessConfig, run_preprocess

    own = tmp_path / "phage"
    run_preprocess(PreprocessConfig(fasta=[str(genome_dir / "lambda_phage.fa.gz")], out=str(own), vocab_size=128,
                                    min_frequency=2, samples_per_shard=16, val_fraction=0.1, workers=1,
                                    progress=False))
    with pytest.raises(InputError, match="a mixture needs one tokenizer"):
        build_train_loader(sources.resolve([f"human={chr20_shards}:0.9", f"phage={own}:0.1"]), cfg(), MICRO,
                           global_batch=GLOBAL)
    with pytest.raises(InputError, match="needs a name and a weight"):
        sources.resolve([str(chr20_shards), f"phage={own}:0.1"])
    with pytest.raises(InputError, match="rounds to no row"):
        build_train_loader(sources.resolve([f"human={chr20_shards}:0.999", f"human2={chr20_shards}:0.001"]), cfg(),
                           MICRO, global_batch=GLOBAL)


def test_launcher_reports_each_source(tmp_path, chr20_shards, yeast_shards):
    """A real run: the console names the mixture, TensorBoard has tokens seen and val loss per source, and the
    tokens it shows are the rows the workers drew (the --log-rows counts), in the weights' proportion."""
    steps = 2 * MIX_BLOCK * LANES // GLOBAL  # 64 steps: two whole blocks of every lane
    run = tmp_path / "run"
    log = tmp_path / "log.txt"
    from tinydnabert.pretrain import ds_config

    ds = tmp_path / "ds.json"
    ds.write_text(json.dumps(ds_config.derive(ds_config.shipped(ds_config.CPU_CONFIG), batch=GLOBAL, micro=MICRO,
                                              lr=2e-3, warmup=5, steps=steps)))
    args = ["--deepspeed_config", str(ds), "--out", str(run),
            "--data", f"human={chr20_shards}:0.7", "--data", f"yeast={yeast_shards}:0.3", "--max-steps", str(steps),
            *MODEL_FLAGS, "--seq-len", str(SEQ), "--num-workers", "1", "--val-batches", "2", "--log-interval", "16",
            "--eval-interval", "32", "--save-interval", "64", "--log-rows", "--no-export"]
    text = wait(launch_ranks(1, args, log), log, timeout=600)
    assert "mixture: human 0.7031" in text and "yeast 0.2969" in text, text[-2000:]
    drawn = np.zeros((steps + 1, 2), np.int64)
    for line in (run / "rows" / "rank00000.tsv").read_text().splitlines():
        step, _, _, counts = line.split("\t")
        drawn[int(step)] += [int(c) for c in counts.split(",")]
    (events,) = (run / "tensorboard" / "pretrain").glob("events.out.tfevents.*")
    s = scalars(events)
    for k in (16, 32, 48, 64):
        want = drawn[:k + 1].sum(0) * SEQ
        assert [s["train/tokens_seen/human"][k], s["train/tokens_seen/yeast"][k]] == want.tolist(), k
    assert drawn.sum(0).tolist() == [2 * LANES * 90, 2 * LANES * 38]  # 0.7 and 0.3 of 128, rounded: 90 + 38
    for name in WEIGHTS:
        assert set(s[f"val/{name}/loss"]) == {32, 64}
    # the two genomes are different languages to the model: their val losses differ, and val/loss is their
    # mean weighted as the mixture is
    for k in (32, 64):
        h, y = s["val/human/loss"][k], s["val/yeast/loss"][k]
        assert h != y
        assert s["val/loss"][k] == pytest.approx(90 / 128 * h + 38 / 128 * y, rel=1e-6)

"""tinydnabert.pretrain.data: packing, masking, rank/worker splits, fixed validation, exact resume, bad shards.

Synthetic shards (random ids, written per formats.py with webdataset.TarWriter) give full control of
the edge cases; the real hg38 shards made by the preprocessing stage check the same on real data.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds

from tinydnabert import formats
from tinydnabert.errors import InputError
from tinydnabert.formats import BOS_ID, EOS_ID, IGNORE_INDEX, MASK_ID, NUM_SPECIAL
from tinydnabert.prep.shards import read_shard
from tinydnabert.pretrain.data import (
    DataConfig,
    build_train_loader,
    build_val_loader,
    check_tokenizer,
    mask_tokens,
    pack_rows,
    rows_in_shard,
)

VOCAB = 64
L = 64  # short rows keep the synthetic tests fast; the real-data tests use the default 512


def _ids(path) -> list[np.ndarray]:
    return [sample.ids for sample in read_shard(path, meta=False)]


# --------------------------------------------------------------------------- synthetic shards

def write_dataset(out: Path, shards: dict[str, list[list[np.ndarray]]], vocab_size: int = VOCAB) -> Path:
    """A shards directory per formats.py: tokenizer/tokenizer.json, SPLIT/shard-*.tar, manifest.json."""
    (out / formats.TOKENIZER_DIR).mkdir(parents=True)
    tok = out / formats.TOKENIZER_DIR / formats.TOKENIZER_FILE
    tok.write_text(json.dumps({"model": {"type": "BPE"}, "vocab_size": vocab_size}))
    splits = {}
    for split, split_shards in shards.items():
        (out / split).mkdir()
        entries = []
        for i, samples in enumerate(split_shards):
            name = formats.shard_name(i)
            with wds.TarWriter(str(out / split / name)) as w:
                for j, ids in enumerate(samples):
                    key = formats.sample_key("chrS", 1000 * (i * 1000 + j), 1000 * (i * 1000 + j) + 500, "+")
                    w.write({"__key__": key, formats.IDS_MEMBER: formats.encode_ids(ids),
                             formats.META_MEMBER: {"record": "chrS", "start": 0, "end": 500, "strand": "+"}})
            entries.append({"name": name, "samples": len(samples), "bases": 0,
                            "tokens": int(sum(len(a) for a in samples))})
        splits[split] = {"samples": sum(e["samples"] for e in entries), "shards": entries}
    manifest = {"format": formats.FORMAT_VERSION, "config": {"samples_per_shard": 40},
                "tokenizer": {"sha256": formats.tokenizer_fingerprint(out / formats.TOKENIZER_DIR),
                              "vocab_size": vocab_size,
                              "special_tokens": {t: i for i, t in enumerate(formats.SPECIAL_TOKENS)}},
                "splits": splits}
    (out / formats.MANIFEST).write_text(json.dumps(manifest))
    return out


def random_shards(rng: np.random.Generator, n_shards: int, samples: int | list[int]) -> list[list[np.ndarray]]:
    counts = [samples] * n_shards if isinstance(samples, int) else samples
    return [[rng.integers(NUM_SPECIAL, VOCAB, size=int(rng.integers(15, 60))).astype(np.uint16)
             for _ in range(c)] for c in counts]


@pytest.fixture
def synth(tmp_path: Path) -> Path:
    """8 train shards of uneven size (the last one small, as preprocessing leaves it) + 2 val shards."""
    rng = np.random.default_rng(1)
    return write_dataset(tmp_path / "shards", {"train": random_shards(rng, 8, [40] * 7 + [13]),
                                                "val": random_shards(rng, 2, 40)})


def cfg(**kw) -> DataConfig:
    return DataConfig(**{"seq_len": L, "num_workers": 0, **kw})


def take(loader, n: int) -> list[dict[str, torch.Tensor]]:
    it = iter(loader)
    return [next(it) for _ in range(n)]


def original_tokens(batch: dict[str, torch.Tensor]) -> np.ndarray:
    """The unmasked tokens of a batch: labels where a token was chosen, the input elsewhere."""
    ids, labels = batch["input_ids"].numpy(), batch["labels"].numpy()
    return np.where(labels != IGNORE_INDEX, labels, ids)


def segments(tokens: np.ndarray) -> list[tuple[int, ...]]:
    """The complete <s> ... </s> segments in rows of tokens."""
    out = []
    for row in tokens:
        bos = np.flatnonzero(row == BOS_ID)
        for b in bos:
            e = np.flatnonzero(row[b:] == EOS_ID)
            if len(e):
                out.append(tuple(row[b + 1: b + e[0]].tolist()))
    return out


def same_batches(a: list[dict], b: list[dict]) -> bool:
    return len(a) == len(b) and all(
        torch.equal(x[k], y[k]) for x, y in zip(a, b) for k in ("input_ids", "labels", "attention_mask"))


# --------------------------------------------------------------------------- packing and masking

def test_config_validation():
    with pytest.raises(InputError, match="mlm-probability"):
        DataConfig(mlm_probability=1.5)
    with pytest.raises(InputError, match="exceed 1"):
        DataConfig(mask_replace_prob=0.9, random_replace_prob=0.2)
    with pytest.raises(InputError, match="num-workers"):
        DataConfig(num_workers=-1)


def test_pack_rows_are_full_and_reconstruct_the_samples():
    rng = np.random.default_rng(0)
    samples = [rng.integers(5, 300, size=n).astype(np.uint16) for n in rng.integers(60, 236, size=50)]
    rows = pack_rows(samples, 512)
    stream = np.concatenate([np.concatenate([[BOS_ID], s, [EOS_ID]]) for s in samples])
    assert rows.dtype == np.int32 and rows.shape == (rows_in_shard(50, sum(map(len, samples)), 512), 512)
    assert len(stream) - rows.size < 512  # only the partial last row is dropped
    assert np.array_equal(rows.ravel(), stream[: rows.size])


def test_masking_rates_and_specials():
    rng = np.random.default_rng(0)
    vocab = 1024
    rows = rng.integers(NUM_SPECIAL, vocab, size=(400, 512))
    rows[:, ::50] = BOS_ID  # specials sprinkled in: never chosen
    rows[:, 7::50] = EOS_ID
    rows[:, 9::97] = 3  # <unk>
    ids, labels = mask_tokens(rows, np.random.default_rng(1), vocab, DataConfig())
    special = rows < NUM_SPECIAL
    chosen = labels != IGNORE_INDEX
    assert not (chosen & special).any()
    assert np.array_equal(labels[chosen], rows[chosen])
    assert np.array_equal(ids[~chosen], rows[~chosen])  # unchosen tokens are untouched
    n = (~special).sum()  # ~190k: binomial sd of the 15% rate is ~0.0008
    assert abs(chosen.sum() / n - 0.15) < 0.004
    masked = chosen & (ids == MASK_ID)
    kept = chosen & (ids == rows)
    randomized = chosen & ~masked & ~kept
    k = chosen.sum()
    assert abs(masked.sum() / k - 0.8) < 0.01
    assert abs(randomized.sum() / k - 0.1) < 0.01  # (a random draw equal to the token counts as kept)
    assert abs(kept.sum() / k - 0.1) < 0.01
    assert (ids[randomized] >= NUM_SPECIAL).all() and (ids[randomized] < vocab).all()
    assert ids.dtype == labels.dtype == rows.dtype


def test_masked_per_row_caps_each_row_and_leaves_other_rows_alone():
    rng = np.random.default_rng(0)
    rows = rng.integers(NUM_SPECIAL, 1024, size=(400, 512))
    free = mask_tokens(rows, np.random.default_rng(1), 1024, DataConfig())[1] != IGNORE_INDEX
    # 0.15 x 512 = 77 chosen per row on average (sd 8): a cap of 70 binds on most rows, one of 128 on none
    capped = mask_tokens(rows, np.random.default_rng(1), 1024, DataConfig(masked_per_row=70))[1] != IGNORE_INDEX
    per_row = capped.sum(1)
    assert per_row.max() == 70 and (free.sum(1) > 70).any()
    assert (capped <= free).all()  # the cap only un-chooses tokens, the first 70 of a row stay
    assert np.array_equal(capped, free & (np.cumsum(free, axis=1) <= 70))
    loose = mask_tokens(rows, np.random.default_rng(1), 1024, DataConfig(masked_per_row=128))
    assert np.array_equal(loose[1] != IGNORE_INDEX, free) and free.sum(1).max() < 128
    with pytest.raises(InputError, match="masked-per-row"):
        DataConfig(seq_len=64, masked_per_row=65)


# --------------------------------------------------------------------------- train stream

@pytest.mark.parametrize("mix", [1, 3])
def test_rows_reconstruct_shards_in_order(synth, mix):
    """Unshuffled, 1 lane: the stream is the rows of each group of `mix` shards, in name
    order, full."""
    loader = build_train_loader(synth, cfg(shuffle=False, mix_shards=mix, lanes=1), micro_batch_size=4)
    shards = [_ids(p) for p in formats.shard_paths(synth, "train")]
    expect = np.concatenate([pack_rows([a for s in shards[i:i + mix] for a in s], L)
                             for i in range(0, len(shards), mix)])
    n = len(expect) // 4
    got = np.concatenate([original_tokens(b) for b in take(loader, n)])
    assert np.array_equal(got, expect[: n * 4])
    assert loader.batches_consumed == n


def test_ranks_read_disjoint_shards(synth):
    """With 4 lanes and 4 slots per step, rank 0 of 2 takes lanes 0 and 2, rank 1 lanes 1 and 3: in their first
    batches (less than one pass of a lane) the two ranks see segments of different shards."""
    owner = {tuple(a.tolist()): i for i, p in enumerate(formats.shard_paths(synth, "train"))
             for a in _ids(p)}
    seen, listed = [], []
    for r in range(2):
        loader = build_train_loader(synth, cfg(num_workers=2, mix_shards=1), micro_batch_size=2, rank=r,
                                    world_size=2, global_batch=8)
        assert loader.layout.rank_lanes() == [r, r + 2]
        toks = np.concatenate([original_tokens(b) for b in take(loader, 10)])
        seen.append({owner[s] for s in segments(toks) if s in owner})
        listed.append(set(loader.epoch0_shards()))
    assert seen[0] and seen[1] and not seen[0] & seen[1]
    assert listed[0] and listed[1] and not listed[0] & listed[1]


def by_step_and_slot(data, c, world_size, global_batch, micro, steps, start_step=0):
    """{(step, slot): batch} of all ranks of a world size, for steps [start_step, steps)."""
    out = {}
    for r in range(world_size):
        gas = global_batch // (micro * world_size)
        loader = build_train_loader(data, c, micro_batch_size=micro, rank=r, world_size=world_size,
                                    start_batch=start_step * gas, global_batch=global_batch)
        it = iter(loader)
        for j in range(start_step * gas, steps * gas):
            out[loader.layout.micro_batch(j)] = next(it)
    return out


@pytest.mark.timeout(120)
@pytest.mark.parametrize("lanes", [1, 3, 4])
def test_global_steps_hold_the_same_rows_for_any_world_size_and_workers(synth, lanes):
    """Elastic determinism: the micro-batch of (step, slot) is the same whatever the world size and the
    workers per rank, from the start and after a resume at a step boundary with another world size;
    20 steps x 12 rows is > 2 epochs of the 8 synthetic shards, so lanes cross epochs."""
    steps, batch, micro = 20, 12, 3
    reference = by_step_and_slot(synth, cfg(lanes=lanes), 1, batch, micro, steps)
    assert sorted(reference) == [(k, s) for k in range(steps) for s in range(4)]
    for world, workers in ((2, 0), (4, 2), (2, 1)):
        got = by_step_and_slot(synth, cfg(lanes=lanes, num_workers=workers), world, batch, micro, steps)
        assert sorted(got) == sorted(reference)
        assert all(same_batches([got[key]], [reference[key]]) for key in reference), (world, workers)
    resumed = by_step_and_slot(synth, cfg(lanes=lanes, num_workers=2), 2, batch, micro, steps, start_step=7)
    assert sorted(resumed) == [(k, s) for k in range(7, steps) for s in range(4)]
    assert all(same_batches([resumed[key]], [reference[key]]) for key in resumed)


def test_elastic_state_round_trip_and_refusals(synth):
    one = build_train_loader(synth, cfg(), micro_batch_size=3, world_size=1, global_batch=12)
    take(one, 8)  # 2 steps of 4 micro-batches
    state = json.loads(json.dumps(one.state_dict()))
    two = build_train_loader(synth, cfg(num_workers=1), micro_batch_size=3, rank=1, world_size=2, global_batch=12)
    two.load_state_dict(state)
    assert two.batches_consumed == 4  # 2 steps of 2 micro-batches
    take(one, 1)
    with pytest.raises(InputError, match="inside an optimizer step"):
        two.load_state_dict(one.state_dict())
    other = build_train_loader(synth, cfg(), micro_batch_size=3, world_size=1, global_batch=24)
    with pytest.raises(InputError, match="global_batch: saved 12 vs now 24"):
        other.load_state_dict(state)
    with pytest.raises(InputError, match="per-rank stream .* version 1"):
        two.load_state_dict({**state, "version": 1})


def test_every_rank_always_has_a_next_batch(synth):
    """Ranks hold different numbers of rows (uneven shards), yet both keep producing batches past
    several epochs: the trainer decides the number of steps, so no rank runs dry and hangs DDP."""
    for r in range(2):
        loader = build_train_loader(synth, cfg(), micro_batch_size=8, rank=r, world_size=2)
        per_epoch = loader.rows_per_epoch() // 2 // 8
        batches = take(loader, 3 * per_epoch + 5)
        assert all(b["input_ids"].shape == (8, L) for b in batches)
        assert all(bool((b["attention_mask"] == 1).all()) for b in batches)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("num_workers,mix", [(0, 1), (2, 1), (2, 4)])
def test_resume_gives_the_same_batches(synth, num_workers, mix):
    c = cfg(num_workers=num_workers, mix_shards=mix)
    reference = take(build_train_loader(synth, c, micro_batch_size=3, rank=1, world_size=2), 70)
    # 70 batches x 3 rows is > 1 epoch of this rank's shards: the resume crosses an epoch boundary.
    for k in (1, 5, 40):
        resumed = take(build_train_loader(synth, c, micro_batch_size=3, rank=1, world_size=2, start_batch=k), 8)
        assert same_batches(resumed, reference[k:k + 8]), f"start_batch={k}"
    # through state_dict, as the trainer does it
    first = build_train_loader(synth, c, micro_batch_size=3, rank=1, world_size=2)
    take(first, 23)
    state = json.loads(json.dumps(first.state_dict()))  # survives a JSON round trip
    again = build_train_loader(synth, c, micro_batch_size=3, rank=1, world_size=2)
    again.load_state_dict(state)
    assert same_batches(take(again, 10), reference[23:33])
    assert again.batches_consumed == 33
    # masks differ between batches (seeded per shard and epoch, not reset per batch)
    assert not torch.equal(reference[0]["labels"], reference[1]["labels"])


def test_resume_refuses_a_different_stream(synth):
    state = build_train_loader(synth, cfg(lanes=2), micro_batch_size=3).state_dict()
    other = build_train_loader(synth, cfg(lanes=3), micro_batch_size=3)
    with pytest.raises(InputError, match="lanes: saved 2 vs now 3"):
        other.load_state_dict(state)


# --------------------------------------------------------------------------- validation

@pytest.mark.timeout(60)
def test_val_is_fixed_and_equal_per_rank(synth):
    c = cfg(num_workers=0)
    loaders = [build_val_loader(synth, c, micro_batch_size=4, rank=r, world_size=2) for r in range(2)]
    assert len(loaders[0]) == len(loaders[1]) > 0
    runs = [list(ld) for ld in loaders]
    assert [len(r) for r in runs] == [len(loaders[0])] * 2
    assert same_batches(runs[0], list(loaders[0]))  # same every time
    assert not torch.equal(runs[0][0]["input_ids"], runs[1][0]["input_ids"])  # ranks: different rows
    with2 = build_val_loader(synth, cfg(num_workers=2), micro_batch_size=4, rank=1, world_size=2)
    assert same_batches(list(with2), runs[1])  # worker count does not change the set
    capped = build_val_loader(synth, cfg(val_batches=2), micro_batch_size=4)
    assert len(list(capped)) == 2
    # a val split smaller than one micro-batch per rank: one smaller batch per rank, not an error
    rows = sum(b["input_ids"].shape[0] for b in build_val_loader(synth, c, micro_batch_size=1))
    small = [build_val_loader(synth, c, micro_batch_size=10_000, rank=r, world_size=3) for r in range(3)]
    assert [len(v) for v in small] == [1, 1, 1]
    assert [next(iter(v))["input_ids"].shape[0] for v in small] == [rows // 3] * 3


# --------------------------------------------------------------------------- bad input

def test_tokenizer_mismatch_is_refused(synth, tmp_path):
    other = tmp_path / "other_tok"
    other.mkdir()
    (other / formats.TOKENIZER_FILE).write_text('{"model": "another"}')
    with pytest.raises(InputError, match="made with"):
        check_tokenizer(synth, other)
    assert check_tokenizer(synth) == formats.tokenizer_fingerprint(synth / "tokenizer")
    (synth / "tokenizer" / formats.TOKENIZER_FILE).write_text('{"changed": true}')
    with pytest.raises(InputError, match="made with"):
        build_train_loader(synth, cfg(), micro_batch_size=2)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("num_workers", [0, 2])
def test_corrupt_shard_is_named_not_hung(synth, num_workers):
    bad = synth / "train" / formats.shard_name(3)
    raw = bytearray(bad.read_bytes())
    raw[600:5000] = b"\xff" * 4400  # garbage over a tar header, size unchanged
    bad.write_bytes(bytes(raw))
    loader = build_train_loader(synth, cfg(shuffle=False, num_workers=num_workers), micro_batch_size=2)
    with pytest.raises(InputError, match=str(bad).replace("-", r"\-")):
        take(loader, 10_000)
    bad_val = synth / "val" / formats.shard_name(1)
    bad_val.write_bytes(bad.read_bytes())  # a val shard that is corrupt AND disagrees with the manifest
    with pytest.raises(InputError, match="val/shard-000001.tar"):
        list(build_val_loader(synth, cfg(num_workers=num_workers), micro_batch_size=2))


def test_truncated_and_missing_shards(synth):
    bad = synth / "train" / formats.shard_name(2)
    bad.write_bytes(bad.read_bytes()[:1000])  # cut mid-block
    with pytest.raises(InputError, match="shard-000002.tar: truncated"):
        build_train_loader(synth, cfg(), micro_batch_size=2)
    bad.write_bytes(bad.read_bytes()[:512])  # cut on a block boundary: caught by the manifest counts
    loader = build_train_loader(synth, cfg(shuffle=False), micro_batch_size=2)
    with pytest.raises(InputError, match="shard-000002.tar"):
        take(loader, 10_000)
    shutil.rmtree(synth / "val")
    (synth / "val").mkdir()
    with pytest.raises(InputError, match="no shard"):
        build_val_loader(synth, cfg(), micro_batch_size=2)
    manifest = json.loads((synth / formats.MANIFEST).read_text())
    manifest["splits"]["val"]["shards"] = []  # as preprocess writes it with --val-fraction 0
    (synth / formats.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(InputError, match="val split has no shards.*--val-fraction"):
        build_val_loader(synth, cfg(), micro_batch_size=2)


def _break_shard(data: Path, fault: str) -> None:
    """One fault in the second train shard of a real shards directory (and nothing else wrong)."""
    from tinydnabert.prep.shards import ShardSample, write_shard

    shard = formats.shard_paths(data, "train")[1]
    manifest = json.loads((data / formats.MANIFEST).read_text())
    entries = manifest["splits"]["train"]["shards"]
    if fault == "truncated":
        shard.write_bytes(shard.read_bytes()[:1000])
    elif fault == "missing":
        shard.unlink()
    elif fault == "unlisted":
        shutil.copy(shard, shard.with_name(formats.shard_name(999)))
    elif fault == "count":
        entries[1]["tokens"] += 1
        manifest["splits"]["train"]["tokens"] += 1
    elif fault == "token-id":  # a well-formed shard (its own size and sha256) holding an id past the vocabulary
        samples = read_shard(shard)
        ids = [x.ids.copy() for x in samples]
        ids[3][5] = manifest["tokenizer"]["vocab_size"] + 7
        entries[1] = write_shard(shard, [ShardSample(x.meta["record"], x.meta["start"], x.meta["end"],
                                                     x.meta["strand"], "") for x in samples], ids)
    (data / formats.MANIFEST).write_text(json.dumps(manifest))


@pytest.mark.timeout(120)
@pytest.mark.parametrize("fault", ["truncated", "missing", "unlisted", "count", "token-id"])
def test_loader_and_verify_name_a_bad_shard_in_the_same_words(hg38_shards, tmp_path, fault):
    """One owner of the shard checks (prep/shardcheck.py): what the loader raises is a line `verify` lists."""
    from tinydnabert.app.verify import verify_shards

    data = Path(shutil.copytree(hg38_shards, tmp_path / "shards"))
    assert verify_shards(data)[0] == []
    _break_shard(data, fault)
    problems = verify_shards(data)[0]
    assert problems
    with pytest.raises(InputError) as e:  # unshuffled, one shard a group: shard 1 is read second
        take(build_train_loader(data, DataConfig(num_workers=0, shuffle=False, mix_shards=1, lanes=1), 2), 10_000)
    said = str(e.value)
    assert said.endswith("re-run `tinydnabert preprocess` (`tinydnabert verify DIR` lists every bad file)"), said
    assert any(said.startswith(line + "; ") or said.startswith(line + " (and ") for line in problems), (said, problems)


# --------------------------------------------------------------------------- real shards

@pytest.mark.timeout(300)
def test_real_shards_feed_roberta(hg38_shards):
    """Real hg38 shards from the preprocessing stage: full 512-token rows that reconstruct the
    samples, 2 ranks x 2 workers, masking near 15%, and a RobertaForMaskedLM forward pass."""
    real_shards = hg38_shards
    from transformers import RobertaConfig, RobertaForMaskedLM

    manifest = formats.load_manifest(real_shards)
    vocab = manifest["tokenizer"]["vocab_size"]
    c = DataConfig(num_workers=2)
    batches = take(build_train_loader(real_shards, c, micro_batch_size=8, rank=1, world_size=2), 6)
    for b in batches:
        assert b["input_ids"].shape == b["labels"].shape == (8, 512)
        assert b["input_ids"].dtype == b["labels"].dtype == torch.int64
    toks = np.concatenate([original_tokens(b) for b in batches])
    chosen = np.concatenate([b["labels"].numpy() for b in batches]) != IGNORE_INDEX
    assert abs(chosen.sum() / (toks >= NUM_SPECIAL).sum() - 0.15) < 0.01
    assert not (chosen & (toks < NUM_SPECIAL)).any()
    # every complete segment in the rows is a real sample of the train split
    samples = {tuple(a.tolist()) for p in formats.shard_paths(real_shards, "train") for a in _ids(p)}
    segs = segments(toks)
    assert len(segs) > 8 and all(s in samples for s in segs)
    # unshuffled, the stream is exactly the first shard's packed samples
    first = take(build_train_loader(real_shards, DataConfig(num_workers=0, shuffle=False, mix_shards=1, lanes=1), 4), 2)
    expect = pack_rows(_ids(formats.shard_paths(real_shards, "train")[0]), 512)
    assert np.array_equal(np.concatenate([original_tokens(b) for b in first]), expect[:8])
    val = build_val_loader(real_shards, DataConfig(num_workers=0), micro_batch_size=4)
    assert len(val) >= 1
    model = RobertaForMaskedLM(RobertaConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=2,
                                             num_attention_heads=2, intermediate_size=64,
                                             max_position_embeddings=514, pad_token_id=1))
    with torch.no_grad():
        loss = model(**next(iter(val))).loss
    assert torch.isfinite(loss) and loss.item() > 0

"""--data specs (sources.parse_spec / resolve) and the mixture's arithmetic (data.Mixture), without any shards."""

from __future__ import annotations

import numpy as np
import pytest

from tinydnabert.errors import InputError
from tinydnabert.pretrain import sources
from tinydnabert.pretrain.data import MIX_BLOCK, Mixture


@pytest.mark.parametrize("spec, want", [
    ("runs/chr20", ("chr20", "runs/chr20", None)),
    ("human=runs/chr20:0.8", ("human", "runs/chr20", 0.8)),
    ("human=runs/chr20", ("human", "runs/chr20", None)),
    ("http://127.0.0.1:8000/shards/chr20", ("chr20", "http://127.0.0.1:8000/shards/chr20", None)),
    ("y=http://127.0.0.1:8000/yeast:0.25", ("y", "http://127.0.0.1:8000/yeast", 0.25)),
    ("y=http://127.0.0.1:8000", ("y", "http://127.0.0.1:8000", None)),  # a port, not a weight
    ("y=http://127.0.0.1:8000:0.25", ("y", "http://127.0.0.1:8000", 0.25)),  # a port, then a weight
    ("h=s3://bucket:0.5", ("h", "s3://bucket", 0.5)),  # a bucket root (s3 has no ports)
    ("h=s3://bucket/chr20:2", ("h", "s3://bucket/chr20", 2.0)),
    ("pipe:curl -fsS https://h/x/{path}", ("x", "pipe:curl -fsS https://h/x/{path}", None)),
])
def test_parse_spec(spec, want):
    assert sources.parse_spec(spec) == want


@pytest.mark.parametrize("spec, message", [
    ("runs/chr20:0.5", "a weight needs a name"),
    ("h=runs/chr20:0", "must be > 0"),
    ("h=runs/chr20:-1", "must be > 0"),
    ("pipe:curl -fsS https://h/x/manifest.json", "must hold {path}"),
    ("h=runs/chr20:inf", "must be > 0"),
])
def test_parse_spec_refuses(spec, message):
    with pytest.raises(InputError, match=message):
        sources.parse_spec(spec)


def test_pipe_placeholder_typo_is_an_input_error(monkeypatch):
    monkeypatch.setenv("TINYDNABERT_PIPE_S3", "cat /x/{path}")
    with pytest.raises(InputError, match=r"unknown placeholder 'path'.*\{url\}, \{bucket\} and \{key\}"):
        sources.read_remote("s3://bucket/chr20/manifest.json")


def test_resolve_normalises_and_refuses_duplicates(tmp_path):
    got = sources.resolve([f"a={tmp_path}:3", f"b={tmp_path}:1"])
    assert [(s.name, s.weight, s.remote) for s in got] == [("a", 0.75, False), ("b", 0.25, False)]
    with pytest.raises(InputError, match="given to two sources"):
        sources.resolve([f"a={tmp_path}:1", f"a={tmp_path}:1"])
    with pytest.raises(InputError, match="needs a name and a weight"):
        sources.resolve([str(tmp_path), f"b={tmp_path}:1"])


@pytest.mark.parametrize("weights", [[0.7, 0.3], [0.5, 0.3, 0.2], [0.01, 0.99]])
def test_mixture_assign_and_before_agree(weights):
    """Brute force over 3 blocks of 2 lanes: assign() numbers each source's positions 0, 1, 2, ... in order with
    no gap, before() counts them, and every block holds the same rows of each source."""
    mix = Mixture(weights, seed=5)
    assert mix.counts.sum() == MIX_BLOCK and np.abs(mix.shares - np.asarray(weights)).max() <= 0.5 / MIX_BLOCK
    for lane in range(2):
        pos = np.arange(3 * MIX_BLOCK)
        src, spos = mix.assign(lane, pos)
        for s in range(len(weights)):
            assert spos[src == s].tolist() == list(range(int((src == s).sum())))
        for block in src.reshape(3, MIX_BLOCK):
            assert np.bincount(block, minlength=len(weights)).tolist() == mix.counts.tolist()
        for t in (0, 1, 77, MIX_BLOCK, 2 * MIX_BLOCK + 5):
            assert mix.before(lane, t).tolist() == np.bincount(src[:t], minlength=len(weights)).tolist()
        # assigning a subset (what one micro-batch asks for) gives the same answer as the whole range
        some = np.array([3, 130, 131, 300])
        assert [a.tolist() for a in mix.assign(lane, some)] == [src[some].tolist(), spos[some].tolist()]
    # lanes and blocks are shuffled independently: not the same order everywhere
    assert mix.assign(0, np.arange(MIX_BLOCK))[0].tolist() != mix.assign(1, np.arange(MIX_BLOCK))[0].tolist()


def test_mixture_refuses_a_weight_that_rounds_to_nothing():
    with pytest.raises(InputError, match="rounds to no row"):
        Mixture([0.999, 0.001], seed=0, names=["human", "phage"])

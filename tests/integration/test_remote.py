"""Remote --data (pretrain/sources.py): shards read over HTTP from a server on 127.0.0.1, through
`pipe:` and s3:// commands, with and without --cache-dir, are the same micro-batches as the local directory; dropped
connections are resumed with a Range request (or restarted, when the server ignores Range); bad bytes, a missing
manifest, a server that is down and a failing command are InputErrors naming the URL or the command; and a real
launcher run streamed from the URL (stopped by --max-steps, then continued with --resume) makes every step of the
same rows as the local run (the session's `reference_run`, tests/integration/conftest.py).

The server serves the real `hg38_shards` (16 train + 16 val shards of the soft-masked hg38 slice, 450 KB and 30 KB
each), so the bytes, sizes and sha256 are the manifest's own.
"""

from __future__ import annotations

import gc
import hashlib
import http.server
import json
import re
import shlex
import shutil
import threading
import urllib.parse
from collections import defaultdict
from pathlib import Path

import pytest
import torch

from tests.helpers import REFERENCE_STEPS, RUN_FLAGS, free_port, launch_ranks, losses, rows, wait
from tinydnabert.errors import InputError
from tinydnabert.pretrain import sources
from tinydnabert.pretrain.data import DataConfig, build_train_loader, build_val_loader

MICRO, GLOBAL, WORLD = 4, 16, 2  # 2 ranks x accumulation 2 x micro 4, as the launcher tests' tiny config
N_TRAIN = 3  # micro-batches per rank: both micro-steps of step 1 and one of step 2 (4 lanes -> 8 shards a rank)


# ------------------------------------------------------------------------------------------------ the server

class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        srv: ShardServer = self.server.owner  # type: ignore[attr-defined]
        rel = urllib.parse.unquote(self.path).lstrip("/")
        rng = self.headers.get("Range")
        file = srv.root / rel
        if not file.is_file():
            srv.record(rel, rng, 404)
            self.send_error(404)
            return
        body = file.read_bytes()
        m = re.fullmatch(r"bytes=(\d+)-", rng or "")
        start = int(m.group(1)) if m and not srv.no_range else 0
        with srv.lock:
            busy = srv.busy_once and rel.endswith(".tar") and rel not in srv.busied
            if busy:
                srv.busied.add(rel)
            drop = not busy and srv.drop_once and rel.endswith(".tar") and rel not in srv.dropped
            if drop:
                srv.dropped.add(rel)
        if busy:  # a gateway under load: 503 once per shard
            srv.record(rel, rng, 503)
            self.send_error(503)
            return
        srv.record(rel, rng, 206 if start else 200)
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(body) - start))  # the full length, also when dropping
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.end_headers()
        if drop:  # half the body, then the connection closes: the client sees a short body
            self.wfile.write(body[:len(body) // 2])
            self.close_connection = True
        else:
            self.wfile.write(body[start:])

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass


class ShardServer:
    """`root` over HTTP on 127.0.0.1 with `Range: bytes=N-`. Switches: `drop_once` (each shard's first GET sends
    half its body, then hangs up), `no_range` (Range ignored: 200 and the whole file). `log[path]`: the
    (Range header, status) of every GET, in order."""

    def __init__(self, root: Path) -> None:
        self.root, self.drop_once, self.no_range, self.busy_once = Path(root), False, False, False
        self.lock = threading.Lock()
        self.dropped: set[str] = set()
        self.busied: set[str] = set()
        self.log: dict[str, list[tuple[str | None, int]]] = defaultdict(list)
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.owner = self  # type: ignore[attr-defined]
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/shards"
        self.root_url = self.url.rsplit("/", 1)[0]
        # polled every 50 ms (not 0.5 s): shutdown() waits for the next poll, once per test
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def record(self, rel: str, rng: str | None, status: int) -> None:
        with self.lock:
            self.log[rel.removeprefix("shards/")].append((rng, status))

    def shard_gets(self) -> int:
        return sum(len(v) for p, v in self.log.items() if p.endswith(".tar"))

    def stop(self) -> None:
        if self.thread.is_alive():
            self.httpd.shutdown()
            self.httpd.server_close()
            self.thread.join()


@pytest.fixture
def server(tmp_path, hg38_shards):
    """A fresh server per test (a new port, so a new URL: sources' per-process manifest cache never carries
    over). It serves tmp/shards, a link to hg38_shards that a test may point at a damaged copy."""
    (tmp_path / "srv").mkdir()
    (tmp_path / "srv" / "shards").symlink_to(hg38_shards)
    srv = ShardServer(tmp_path / "srv")
    yield srv
    srv.stop()


def serve_copy(server: ShardServer, src: Path, dst: Path) -> Path:
    """Point the server at a copy of `src` (to damage it) and return the copy."""
    shutil.copytree(src, dst)
    (server.root / "shards").unlink()
    (server.root / "shards").symlink_to(dst)
    return dst


# ------------------------------------------------------------------------------------------------ loaders

def cfg(**kw) -> DataConfig:
    return DataConfig(**{"seq_len": 128, "num_workers": 0, **kw})


def drain_readers() -> None:
    """Wait for the loaders' background shard readers (data._Lane reads the next group ahead), so that every
    fetch a stopped loader started has finished before the server's log is checked or the next loader starts."""
    gc.collect()
    for t in threading.enumerate():
        if t.name.startswith("tinydnabert-read"):
            t.join(timeout=120)


def train_batches(data, rank: int = 0, n: int = N_TRAIN, world: int = WORLD, **kw) -> list[dict[str, torch.Tensor]]:
    it = iter(build_train_loader(data, cfg(**kw), MICRO, rank, world, global_batch=GLOBAL))
    out = [{k: b[k] for k in ("input_ids", "labels")} for b in (next(it) for _ in range(n))]
    it.close()
    drain_readers()
    return out


def val_batches(data, rank: int = 0, world: int = WORLD, **kw) -> list[dict[str, torch.Tensor]]:
    return [{k: b[k] for k in ("input_ids", "labels")} for b in build_val_loader(data, cfg(**kw), MICRO, rank, world)]


def assert_same(got: list[dict], want: list[dict]) -> None:
    assert len(got) == len(want) > 0
    for i, (a, b) in enumerate(zip(got, want)):
        assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["labels"], b["labels"]), f"batch {i}"


@pytest.fixture(scope="module")
def local(hg38_shards):
    """The reference: every rank's train and val micro-batches read from the local directory."""
    return {"train": [train_batches(hg38_shards, r) for r in range(WORLD)],
            "val": [val_batches(hg38_shards, r) for r in range(WORLD)]}


def assert_same_as_local(data, local, workers: int = 0) -> None:
    for r in range(WORLD):
        assert_same(train_batches(data, r, num_workers=workers), local["train"][r])
        assert_same(val_batches(data, r, num_workers=workers), local["val"][r])


def manifest_shards(root: Path, split: str) -> dict[str, str]:
    m = json.loads((root / "manifest.json").read_text())
    return {e["name"]: e["sha256"] for e in m["splits"][split]["shards"]}


@pytest.fixture
def few_retries(monkeypatch):
    """1 retry (0.25 s backoff) instead of 5 (~8 s), so the failure tests are quick."""
    monkeypatch.setattr(sources, "RETRIES", 1)


# ------------------------------------------------------------------------------------------------ HTTP

def test_url_gives_the_local_batches(server, local):
    # through a DataLoader worker, as training reads it
    assert_same_as_local(server.url, local, workers=1)
    assert len([p for p in server.log if p.startswith("train/")]) >= 8  # really streamed: a rank reads 8 shards
    assert server.log["manifest.json"] == [(None, 200)]  # fetched once per process, for train and val alike


def test_busy_server_is_retried(server, local, no_backoff):
    """503 (a gateway or object store under load) is retried like a dropped connection; a 404 is not (below)."""
    server.busy_once = True
    assert_same_as_local(server.url, local)
    tars = {p: v for p, v in server.log.items() if p.endswith(".tar")}
    assert len(tars) >= 16 + 8 and all(v[:2] == [(None, 503), (None, 200)] for v in tars.values())


@pytest.mark.parametrize("no_range", [False, True], ids=["resumed", "range-ignored"])
def test_dropped_connections_are_resumed_or_restarted(server, hg38_shards, local, no_range, no_backoff):
    server.drop_once, server.no_range = True, no_range
    assert_same_as_local(server.url, local)  # workers=0: drain_readers can wait for every fetch
    tars = {p: v for p, v in server.log.items() if p.endswith(".tar")}
    assert len(tars) >= 16 + 8  # every val shard, a rank's 8 train shards at least
    for path, gets in tars.items():
        half = (hg38_shards / path).stat().st_size // 2
        # the first GET got half the body; the retry asked for the rest, and got it (206) or the whole file (200)
        assert gets[:2] == [(None, 200), (f"bytes={half}-", 200 if no_range else 206)], path
        assert all(g == (None, 200) for g in gets[2:]), path  # a later reader (other rank, next epoch): one GET


def test_cache_dir_keeps_verified_shards_and_is_read_back(server, hg38_shards, tmp_path, few_retries):
    # lanes 1 x mix 16: the first micro-batch reads every train shard as one group, and the read-ahead (epoch 1's
    # group, the same 16 shards) finds them cached, so the GET counts below are exact.
    kw = dict(lanes=1, mix_shards=16)
    cache = tmp_path / "cache"
    want = train_batches(hg38_shards, world=1, n=2, **kw)
    assert_same(train_batches(sources.resolve(server.url, cache), world=1, n=2, **kw), want)
    (local_dir,) = cache.iterdir()  # one folder per remote root
    assert (local_dir / "manifest.json").read_bytes() == (hg38_shards / "manifest.json").read_bytes()
    expected = manifest_shards(hg38_shards, "train")
    cached = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (local_dir / "train").glob("*.tar")}
    assert cached == expected and len(expected) == 16
    assert server.shard_gets() == 16  # once each: the read-ahead read them from the cache

    # A second loader: from the cache alone
    assert_same(train_batches(sources.resolve(server.url, cache), world=1, n=2, **kw), want)
    assert server.shard_gets() == 16

    # A cached copy damaged by hand is fetched again (and the good bytes replace it), never used
    bad = local_dir / "train" / "shard-000003.tar"
    raw = bytearray(bad.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    bad.write_bytes(raw)
    assert_same(train_batches(sources.resolve(server.url, cache), world=1, n=2, **kw), want)
    assert server.log["train/shard-000003.tar"] == [(None, 200)] * 2 and server.shard_gets() == 17
    assert hashlib.sha256(bad.read_bytes()).hexdigest() == expected["shard-000003.tar"]

    # With the server gone: still the same batches (a fetch would fail after 1 retry)
    server.stop()
    assert_same(train_batches(sources.resolve(server.url, cache), world=1, n=2, **kw), want)


def test_served_bytes_unlike_the_manifest_name_the_shard_url(server, hg38_shards, tmp_path):
    copy = serve_copy(server, hg38_shards, tmp_path / "damaged")
    shard = copy / "train" / "shard-000005.tar"
    raw = bytearray(shard.read_bytes())
    raw[len(raw) // 2] ^= 0x01  # one flipped bit in the token ids: same size, another sha256
    shard.write_bytes(raw)
    cache = tmp_path / "cache"
    # global = micro (world 1): the first micro-batch draws rows from all 4 lanes, i.e. all 16 shards of epoch 0
    loader = build_train_loader(sources.resolve(server.url, cache), cfg(num_workers=1), MICRO, 0, 1,
                                global_batch=MICRO)
    with pytest.raises(InputError, match=re.escape(f"{server.url}/train/shard-000005.tar: sha256 ")):
        next(iter(loader))
    assert not list(cache.glob("*/train/shard-000005.tar"))  # bad bytes are never cached


def test_missing_manifest_and_server_down(server, few_retries):
    with pytest.raises(InputError, match=re.escape(f"{server.root_url}/elsewhere/manifest.json: HTTP 404")):
        build_train_loader(server.root_url + "/elsewhere", cfg(), MICRO, 0, 1)
    assert server.log["elsewhere/manifest.json"] == [(None, 404)]  # a 404 is not retried

    # nothing listens on the port: the manifest fetch gives up after the retry
    down = f"http://127.0.0.1:{free_port()}/shards"
    with pytest.raises(InputError, match=re.escape(f"{down}/manifest.json: cannot fetch after 1 retries")):
        build_train_loader(down, cfg(), MICRO, 0, 1)

    # the server goes away mid-run: the shard fetch in the worker gives up, naming the shard
    loader = build_train_loader(server.url, cfg(num_workers=1), MICRO, 0, 1, global_batch=MICRO)
    server.stop()
    with pytest.raises(InputError, match=re.escape(f"{server.url}/train/shard-") + r"\d+\.tar: cannot fetch after 1"):
        next(iter(loader))


# ------------------------------------------------------------------------------------------------ pipe: and s3://

def test_pipe_and_s3_commands(hg38_shards, local, monkeypatch, tmp_path, few_retries):
    assert_same_as_local(f"pipe:cat {shlex.quote(str(hg38_shards))}/{{path}}", local, workers=1)

    # s3:// through $TINYDNABERT_PIPE_S3; `test` fails the command unless {bucket} and {key} are filled in right
    monkeypatch.setenv("TINYDNABERT_PIPE_S3", f"test {{bucket}} = tiny-bucket && cat {hg38_shards.parent}/{{key}}")
    url = f"s3://tiny-bucket/{hg38_shards.name}"
    assert_same(train_batches(url, 0, num_workers=1), local["train"][0])
    with pytest.raises(InputError, match=re.escape("s3://other/")):
        build_train_loader(f"s3://other/{hg38_shards.name}", cfg(), MICRO, 0, 1)

    # a command that fails (the shards are not where it looks): the error names the command, through a worker
    empty = tmp_path / "no-shards"
    empty.mkdir()
    shutil.copy(hg38_shards / "manifest.json", empty)
    shutil.copytree(hg38_shards / "tokenizer", empty / "tokenizer")
    loader = build_train_loader(f"pipe:cat {empty}/{{path}}", cfg(num_workers=1), MICRO, 0, 1)
    with pytest.raises(InputError, match=re.escape(f"`cat {empty}/train/shard-") + r"\d+\.tar` failed 2 times "
                                         r"\(exit status 1: cat: .*No such file"):
        next(iter(loader))


# ------------------------------------------------------------------------------------------------ the launcher

STEPS = 5  # streamed to STEPS (its first checkpoint), resumed to 2 x STEPS; the reference runs on in one go


@pytest.mark.timeout(1200)
def test_pretraining_streamed_from_a_url_and_resumed_matches_the_local_run(server, hg38_shards, tmp_path,
                                                                           reference_run, tiny_ds):
    def run(name: str, data: str, steps: int, *extra: str) -> str:
        log = tmp_path / f"{name}.txt"
        args = ["--deepspeed_config", str(tiny_ds), "--data", data, "--max-steps", str(steps), *RUN_FLAGS, *extra]
        return wait(launch_ranks(2, args, log), log)

    ref, _ = reference_run
    assert REFERENCE_STEPS >= 2 * STEPS
    server.drop_once = True
    streamed, cache = tmp_path / "streamed", tmp_path / "cache"
    first = run("first", server.url, STEPS, "--out", str(streamed), "--cache-dir", str(cache))
    assert "manifest and tokenizer fetched into" in first
    ranged = sum(g[0] is not None for v in server.log.values() for g in v)
    assert ranged >= 8  # every shard a rank read was dropped once, then resumed
    cached = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in cache.glob("*/train/*.tar")}
    expected = manifest_shards(hg38_shards, "train")
    assert cached and all(expected[n] == h for n, h in cached.items())  # only verified bytes were kept

    server.dropped.clear()  # the resumed run (no cache: it streams again) has its connections dropped too
    second = run("second", server.url, 2 * STEPS, "--out", str(streamed), "--resume")
    assert f"resumed from {streamed / 'checkpoints' / f'step{STEPS:08d}'}" in second
    assert sum(g[0] is not None for v in server.log.values() for g in v) > ranged

    # every step's rows, slot by slot, before and after the resume
    want = {s: r for s, r in rows(ref).items() if s <= 2 * STEPS}
    assert sorted(want) == list(range(1, 2 * STEPS + 1)) and all(len(v) == GLOBAL // MICRO for v in want.values())
    assert rows(streamed) == want
    # Streaming changes only where the bytes come from: every loss is the local run's to the bit, before and after
    # the resume (at step 5, where DeepSpeed's CPU Adam needs checkpoint._replay_cpu_adam_steps to stay exact).
    ref_loss, loss = losses(ref), losses(streamed)
    assert sorted(loss) == list(range(1, 2 * STEPS + 1))
    assert loss == {s: ref_loss[s] for s in loss}

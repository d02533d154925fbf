"""Where pretraining shards come from: `--data` specs, shards directories on this disk or remote, mixtures.

    --data runs/chr20                                   one local shards directory (`tinydnabert preprocess`)
    --data https://host/shards/chr20                    the same directory served over HTTP(S)
    --data s3://bucket/shards/chr20                     object storage, through a command per scheme (below)
    --data "pipe:curl -fsS https://host/chr20/{path}"   any command that prints one file ({path}: relative path)
    --data human=runs/chr20:0.8 --data yeast=https://host/yeast:0.2   a mixture: NAME=WHERE:WEIGHT

A remote directory is read the way a local one is: its manifest.json and tokenizer/ (a few hundred KB) are
fetched once per process into a local folder (--cache-dir, or a temporary one removed at exit), and the
DataLoader workers fetch each shard when they reach it, into memory: no full local copy. A dropped connection
is retried and resumed (download.fetch_bytes); every shard is checked against the manifest's size and
sha256 as for a local one. With --cache-dir, a shard's verified bytes are also kept there and read from
there next time (a cached copy that no longer matches its sha256 is fetched again).

s3:// and gs:// go through webdataset's `pipe:` convention: a command that writes the object to stdout.
The defaults are the vendors' CLIs; $TINYDNABERT_PIPE_S3 / $TINYDNABERT_PIPE_GS replace them, with {url},
{bucket} and {key} filled in (e.g. TINYDNABERT_PIPE_S3='mc cat minio/{bucket}/{key}').
"""

from __future__ import annotations

import atexit
import hashlib
import json
import math
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from tinydnabert.console import print0
from tinydnabert.errors import InputError
from tinydnabert.io import atomic_write_bytes

PIPE_COMMANDS = {"s3": "aws s3 cp {url} -", "gs": "gcloud storage cat {url}"}
RETRIES = 5        # a remote read is tried 1 + RETRIES times (backoff 0.25 s doubling, capped at 10 s)
TIMEOUT = 60.0     # seconds without data before an HTTP read gives up and is retried
_NAME = re.compile(r"^([A-Za-z][A-Za-z0-9_.-]*)=(.+)$")


@dataclass(frozen=True)
class Source:
    """One shards directory of a run: `root` as given (a path or a remote location), `local` where its
    manifest.json and tokenizer/ are on this machine (root itself when local), `cache` where read shards
    are kept (remote with --cache-dir only)."""
    name: str
    root: str
    weight: float
    local: Path
    cache: Path | None = None

    @property
    def remote(self) -> bool:
        return is_remote(self.root)

    def location(self, rel: str) -> str:
        """Where the file `rel` (e.g. "train/shard-000000.tar") of this directory is."""
        return join(self.root, rel)


def is_remote(root: str) -> bool:
    return root.startswith(("http://", "https://", "s3://", "gs://", "pipe:"))


def join(root: str, rel: str) -> str:
    if root.startswith("pipe:"):
        return root.replace("{path}", rel)
    if is_remote(root):
        return root.rstrip("/") + "/" + rel
    return str(Path(root) / rel)


def parse_spec(spec: str) -> tuple[str, str, float | None]:
    """NAME=WHERE:WEIGHT, NAME=WHERE or WHERE -> (name, where, weight or None). The weight is the text after the
    last ':' when it is a number and what is left is not a bare scheme://host (a port, as in http://h:8000)."""
    m = _NAME.match(spec)
    name, where = (m.group(1), m.group(2)) if m else ("", spec)
    weight = None
    head, sep, tail = where.rpartition(":")
    is_port = re.fullmatch(r"https?://[^/:]*", head) is not None  # http://host:8000 (a port), not a weight
    if sep and head and not is_port and head not in ("pipe", "s3", "gs", "http", "https"):
        try:
            weight = float(tail)
        except ValueError:
            pass
        else:
            where = head
    if where.startswith("pipe:") and "{path}" not in where:
        raise InputError(f"--data {spec!r}: a pipe: command must hold {{path}}, where each file's path in the shards "
                         "directory goes, e.g. pipe:curl -fsS https://host/shards/chr20/{path}")
    if weight is not None and not m:
        raise InputError(f"--data {spec!r}: a weight needs a name, as in human={where}:{tail}")
    if weight is not None and not (weight > 0 and math.isfinite(weight)):
        raise InputError(f"--data {spec!r}: weight {tail} must be > 0")
    if not name:
        tail = where.replace("{path}", "") if where.startswith("pipe:") else urllib.parse.urlparse(where).path
        name = Path(tail.rstrip("/")).name if is_remote(where) else Path(where).name
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", name) or "data"
    return name, where, weight


def resolve(data: str | os.PathLike | Sequence[str | os.PathLike] | Sequence[Source],
            cache_dir: str | os.PathLike | None = None) -> list[Source]:
    """The run's sources from its --data values (a path, a spec or a list of them; Sources pass through):
    weights normalised to sum to 1, remote manifests and tokenizers staged locally."""
    items = [data] if isinstance(data, (str, os.PathLike)) else list(data)
    if items and all(isinstance(x, Source) for x in items):
        return list(items)  # type: ignore[arg-type]
    if not items:
        raise InputError("--data is required: the shards directory made by `tinydnabert preprocess`")
    parsed = [parse_spec(str(x)) for x in items]
    if len(parsed) > 1:
        unweighted = [spec for spec, (_, _, w) in zip(items, parsed) if w is None]
        if unweighted:
            raise InputError(f"--data {unweighted[0]}: a mixture needs a name and a weight for every source, as in "
                             "--data human=runs/chr20:0.8 --data yeast=runs/yeast:0.2")
        names = [n for n, _, _ in parsed]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise InputError(f"--data: the name {dup[0]!r} is given to two sources; give each its own")
    total = sum(w or 1.0 for _, _, w in parsed)
    out = []
    for name, where, w in parsed:
        cache = Path(cache_dir) / _cache_key(where) if cache_dir and is_remote(where) else None
        local = _stage(where, cache) if is_remote(where) else Path(where)
        out.append(Source(name, where, (w or 1.0) / total, local, cache))
    return out


def _cache_key(root: str) -> str:
    """A folder name per remote root: readable, and unique (a hash of the whole root)."""
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "_", root.split("://", 1)[-1])[-60:].strip("_")
    return f"{readable}-{hashlib.sha1(root.encode()).hexdigest()[:10]}"


_STAGED: dict[tuple[str, str], Path] = {}


def _stage(root: str, cache: Path | None) -> Path:
    """The remote directory's manifest.json and tokenizer/ in a local folder (fetched once per process)."""
    from tinydnabert.formats import MANIFEST, TOKENIZER_CONFIG_FILE, TOKENIZER_DIR, TOKENIZER_FILE

    key = (root, str(cache))
    if key in _STAGED:
        return _STAGED[key]
    try:
        if cache is not None:
            local = cache
            local.mkdir(parents=True, exist_ok=True)
        else:
            local = Path(tempfile.mkdtemp(prefix="tinydnabert-remote-"))
            atexit.register(shutil.rmtree, local, True)
    except OSError as e:
        raise InputError(f"{cache or tempfile.gettempdir()}: cannot create the folder for {root}'s manifest and "
                         f"tokenizer ({e.strerror}); pass a writable --cache-dir") from e
    for rel in (MANIFEST, f"{TOKENIZER_DIR}/{TOKENIZER_FILE}", f"{TOKENIZER_DIR}/{TOKENIZER_CONFIG_FILE}"):
        raw = read_remote(join(root, rel))
        if rel == MANIFEST:
            try:
                json.loads(raw)
            except ValueError as e:
                raise InputError(f"{join(root, rel)}: not a JSON manifest ({e}); is {root} a shards directory "
                                 "written by `tinydnabert preprocess`?") from e
        try:
            atomic_write_bytes(local / rel, raw)
        except OSError as e:
            raise InputError(f"{local / rel}: cannot write ({e.strerror}); pass a writable --cache-dir") from e
    _STAGED[key] = local
    print0(f"{root}: manifest and tokenizer fetched into {local}")
    return local


def read_remote(location: str) -> bytes:
    """The bytes of one remote file: HTTP(S) through download.fetch_bytes; s3://, gs:// and pipe: through a
    command's stdout, retried like a dropped connection."""
    if location.startswith(("http://", "https://")):
        from tinydnabert.prep.download import fetch_bytes

        return fetch_bytes(location, RETRIES, TIMEOUT)
    if location.startswith("pipe:"):
        cmd = location[len("pipe:"):]
    else:
        scheme = location.split("://", 1)[0]
        template = os.environ.get(f"TINYDNABERT_PIPE_{scheme.upper()}", PIPE_COMMANDS[scheme])
        u = urllib.parse.urlparse(location)
        try:
            cmd = template.format(url=shlex.quote(location), bucket=shlex.quote(u.netloc),
                                  key=shlex.quote(u.path.lstrip("/")))
        except (KeyError, IndexError, ValueError) as e:
            raise InputError(f"$TINYDNABERT_PIPE_{scheme.upper()}={template!r}: unknown placeholder {e}; it may use "
                             "{url}, {bucket} and {key}") from e
    for attempt in range(RETRIES + 1):
        try:
            done = subprocess.run(cmd, shell=True, capture_output=True, timeout=30 * TIMEOUT)
        except subprocess.TimeoutExpired:
            why = f"no result in {30 * TIMEOUT:.0f} s"
        else:
            if done.returncode == 0:
                return done.stdout
            why = f"exit status {done.returncode}: {done.stderr.decode(errors='replace').strip()[-300:]}"
        if attempt == RETRIES:
            raise InputError(f"{location}: `{cmd}` failed {RETRIES + 1} times ({why}); check the command (see "
                             f"tinydnabert/sources.py for $TINYDNABERT_PIPE_<SCHEME>) and your credentials")
        print0(f"{location}: {why}; retry {attempt + 1}/{RETRIES}")
        time.sleep(min(0.25 * 2 ** attempt, 10))
    raise AssertionError("unreachable")


def fetch_shard(location: str, cache_file: Path | None, size: int | None, sha256: str | None) -> tuple[bytes, bool]:
    """A remote shard's bytes and whether they were checked against `sha256` here. With a cache, a copy that
    matches is read from it; what is fetched is checked before it is kept (never a bad shard in the cache)."""
    if cache_file is not None and cache_file.is_file():
        raw = cache_file.read_bytes()
        if (size is None or len(raw) == size) and sha256 is not None and hashlib.sha256(raw).hexdigest() == sha256:
            return raw, True
        cache_file.unlink(missing_ok=True)  # stale or damaged: fetch it again
    raw = read_remote(location)
    if cache_file is None or sha256 is None or (size is not None and len(raw) != size) \
            or hashlib.sha256(raw).hexdigest() != sha256:
        return raw, False  # read_shard checks it and names `location` if it is wrong
    try:
        atomic_write_bytes(cache_file, raw)
    except OSError as e:
        raise InputError(f"{cache_file}: cannot keep {location} in the cache ({e.strerror}); free some space or "
                         "pass another --cache-dir") from e
    return raw, True

"""`tinydnabert download NAME`: fetch a reference genome, resumably, checksum-verified, atomically.

    tinydnabert download grch38                 # NCBI GRCh38.p14 RefSeq, GCF_000001405.40 (~0.97 GB gz)
    tinydnabert download hg38-chr21             # one UCSC hg38 chromosome (chr21: ~12 MB gz), for trying things
    tinydnabert download --list                 # every name, with its URL

How a download runs:
  1. the source's published checksum list (NCBI `md5checksums.txt`, UCSC `md5sum.txt`) is fetched
     first, so a wrong name or an unreachable mirror fails before gigabytes move;
  2. bytes go to `OUT/FILE.part`; if that exists (an interrupted run) the request asks for the rest
     with an HTTP `Range: bytes=N-` header and appends (a server that ignores Range answers 200, and
     the part file is restarted from zero); a dropped connection is retried `--retries` times,
     each retry resuming where the last stopped;
  3. the finished part file's MD5 is compared with the published one; on a mismatch the part file is
     deleted (resuming a corrupt file cannot fix it) and nothing appears under the final name;
  4. only then is `FILE.part` renamed to `FILE`, so the final name always means "complete and verified".

`--base-url` (or $TINYDNABERT_DOWNLOAD_BASE_URL) replaces the directory the files are fetched from:
a local mirror, or a test server on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import os
import re
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from tinydnabert.config import add_dataclass_args, dataclass_from_args
from tinydnabert.console import print0
from tinydnabert.errors import InputError, disk_full_error, disk_full_reason, megabytes
from tinydnabert.io import OutputLock, data_dir

BASE_URL_ENV = "TINYDNABERT_DOWNLOAD_BASE_URL"
CHUNK = 1 << 20  # 1 MiB reads: few syscalls, and the progress bar still moves smoothly

NCBI_GRCH38 = "https://ftp.ncbi.nlm.nih.gov/genomes/all/GCF/000/001/405/GCF_000001405.40_GRCh38.p14"
UCSC_HG38_CHROMOSOMES = "https://hgdownload.soe.ucsc.edu/goldenPath/hg38/chromosomes"
UCSC_HG38_BIGZIPS = "https://hgdownload.soe.ucsc.edu/goldenPath/hg38/bigZips"


@dataclass(frozen=True)
class Source:
    """One downloadable file: where it lives, what it is, and where its checksum is published."""
    base_url: str          # the directory, without a trailing slash
    filename: str          # the file inside it; also the local file name
    checksums: str | None  # md5 list in the same directory (lines "<md5>  [./]<filename>"), or None
    description: str
    approx_bytes: int      # for the listing only; the server's Content-Length is what is checked


def _hg38_chromosomes() -> dict[str, Source]:
    # Approximate gzipped sizes (MB) of the UCSC hg38 per-chromosome files, for `--list` only.
    sizes_mb = {"chr1": 73, "chr2": 78, "chr3": 64, "chr4": 61, "chr5": 58, "chr6": 55, "chr7": 51,
                "chr8": 47, "chr9": 39, "chr10": 42, "chr11": 42, "chr12": 42, "chr13": 31, "chr14": 28,
                "chr15": 26, "chr16": 26, "chr17": 26, "chr18": 25, "chr19": 18, "chr20": 20,
                "chr21": 12, "chr22": 12, "chrX": 49, "chrY": 17, "chrM": 0.006}
    return {f"hg38-{c}": Source(UCSC_HG38_CHROMOSOMES, f"{c}.fa.gz", "md5sum.txt",
                                f"UCSC hg38 {c} alone (soft-masked), for trying things out",
                                int(mb * 1e6))
            for c, mb in sizes_mb.items()}


GENOMES: dict[str, Source] = {
    "grch38": Source(NCBI_GRCH38, "GCF_000001405.40_GRCh38.p14_genomic.fna.gz", "md5checksums.txt",
                     "NCBI RefSeq GRCh38.p14 (GCF_000001405.40), all 705 sequences: the reference recipe's genome",
                     970_000_000),
    "hg38": Source(UCSC_HG38_BIGZIPS, "hg38.fa.gz", "md5sum.txt",
                   "UCSC hg38 whole genome (soft-masked, chr names)", 940_000_000),
    **_hg38_chromosomes(),
}

# The chromosome the quickstart fetches when the shared GRCh37 chr20 is not there: one of the two
# smallest autosomes (12 MB gz, 40 Mbp non-N), so the download takes seconds on a normal link.
DEFAULT_SMALL = "hg38-chr21"


@dataclass
class DownloadConfig:
    out: str = field(default="", metadata={
        "help": "directory to write into (default: $TINYDNABERT_DATA/genome, where the quickstart looks)"})
    base_url: str = field(default="", metadata={
        "help": f"fetch from this directory URL instead of the source's (a mirror; tests use 127.0.0.1); "
                f"also ${BASE_URL_ENV}"})
    verify: bool = field(default=True, metadata={
        "help": "check the MD5 the source publishes (--no-verify skips it: only for mirrors without one)"})
    retries: int = field(default=3, metadata={"help": "resume attempts after a dropped connection"})
    timeout: float = field(default=60.0, metadata={"help": "seconds without data before a read gives up"})
    overwrite: bool = field(default=False, metadata={"help": "fetch again even if the file is already there"})
    progress: bool = field(default=True, metadata={"help": "show a tqdm progress bar on stderr"})

    def __post_init__(self) -> None:
        if self.retries < 0:
            raise InputError(f"--retries {self.retries}: must be >= 0")
        if self.timeout <= 0:
            raise InputError(f"--timeout {self.timeout}: must be > 0 seconds")
        if self.base_url and urllib.parse.urlparse(self.base_url).scheme not in ("http", "https", "file"):
            raise InputError(f"--base-url {self.base_url!r}: expected an http://, https:// or file:// URL")


def resolve(name: str, base_url: str = "") -> tuple[str, Source]:
    """(file URL, Source) for a registry name or a plain URL; base_url overrides the directory."""
    if name in GENOMES:
        src = GENOMES[name]
    elif re.match(r"^(https?|file)://", name):
        head, _, filename = name.rstrip("/").rpartition("/")
        if not filename:
            raise InputError(f"{name}: the URL names no file")
        src = Source(head, urllib.parse.unquote(filename), None, "a URL given on the command line", 0)
    else:
        raise InputError(f"{name!r}: unknown genome; choose one of `tinydnabert download --list` "
                         f"(e.g. grch38, {DEFAULT_SMALL}) or give an http(s):// URL")
    base = (base_url or os.environ.get(BASE_URL_ENV, "") or src.base_url).rstrip("/")
    return f"{base}/{urllib.parse.quote(src.filename)}", Source(base, src.filename, src.checksums,
                                                                  src.description, src.approx_bytes)


def parse_checksums(text: str, filename: str, where: str) -> str:
    """The MD5 for `filename` in an md5sum-style list ("<hex>  ./name" or "<hex> *name")."""
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 2:
            continue
        digest, name = parts[0].lower(), parts[-1].lstrip("*")
        if name.startswith("./"):
            name = name[2:]
        if name == filename and re.fullmatch(r"[0-9a-f]{32}", digest):
            return digest
    raise InputError(f"{where}: no MD5 listed for {filename}; the mirror may be incomplete "
                     f"(pass --no-verify to download without a check)")


def _open(url: str, timeout: float, start: int = 0):
    req = urllib.request.Request(url, headers={"User-Agent": "tinydnabert-download/1"})
    if start:
        req.add_header("Range", f"bytes={start}-")
    return urllib.request.urlopen(req, timeout=timeout)


def _http_error(url: str, e: urllib.error.HTTPError) -> InputError:
    hint = ("check the name (`tinydnabert download --list`) and --base-url" if e.code == 404
            else "the server refused the request; try again later or use another --base-url")
    return InputError(f"{url}: HTTP {e.code} {e.reason}; {hint}")


def fetch_text(url: str, timeout: float) -> str:
    try:
        with _open(url, timeout) as r:
            return r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        raise _http_error(url, e) from e
    except (urllib.error.URLError, OSError) as e:
        raise InputError(f"{url}: cannot fetch ({getattr(e, 'reason', e)}); check the network or --base-url") from e


def md5_file(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def _transfer(url: str, part: Path, cfg: DownloadConfig, log: Callable[[str], None]) -> None:
    """Append the rest of `url` to `part` (resuming from its size); returns when the body is complete."""
    start = part.stat().st_size if part.exists() else 0
    try:
        resp = _open(url, cfg.timeout, start)
    except urllib.error.HTTPError as e:
        if e.code == 416 and start:
            # "Range not satisfiable": the part file is already as long as (or longer than) the file.
            # Start over rather than trust it; the checksum would catch a bad one, but a clean restart
            # is cheaper than a confusing mismatch.
            log(f"server rejected resuming at byte {start}; starting {part.name} again")
            part.unlink()
            return _transfer(url, part, cfg, log)
        raise _http_error(url, e) from e
    except (urllib.error.URLError, OSError) as e:
        raise InputError(f"{url}: cannot connect ({getattr(e, 'reason', e)}); "
                         f"check the network or --base-url") from e
    with resp:
        status = getattr(resp, "status", 200)
        if start and status != 206:
            log(f"server ignored the Range request (HTTP {status}); restarting {part.name} from byte 0")
            start = 0
        elif start:
            log(f"resuming {part.name} at byte {start:,}")
        length = resp.headers.get("Content-Length")
        total = start + int(length) if length is not None else None
        bar = None
        if cfg.progress:
            from tqdm import tqdm
            bar = tqdm(total=total, initial=start, unit="B", unit_scale=True, unit_divisor=1024,
                       desc=part.name[:-len(".part")], file=sys.stderr, dynamic_ncols=True)
        try:
            with open(part, "ab" if start else "wb") as f:
                while block := resp.read(CHUNK):
                    f.write(block)
                    if bar is not None:
                        bar.update(len(block))
        except OSError as e:
            reason = disk_full_reason(e)  # the errno only: a dropped connection is an OSError too
            if reason is None:
                raise
            have = part.stat().st_size if part.exists() else 0
            raise disk_full_error(part, reason, megabytes(total - have) if total is not None else "unknown MB",
                                  f"the {have:,} bytes downloaded so far are kept: free some space and run the "
                                  "same command again to resume") from e
        finally:
            if bar is not None:
                bar.close()
    size = part.stat().st_size
    if total is not None and size != total:
        raise http.client.IncompleteRead(b"", total - size)


def download(name: str, cfg: DownloadConfig | None = None, log: Callable[[str], None] = print0) -> Path:
    """Fetch genome `name` (a GENOMES key or a URL) into cfg.out; returns the verified final path."""
    cfg = cfg or DownloadConfig()
    url, src = resolve(name, cfg.base_url)
    out_dir = Path(cfg.out) if cfg.out else data_dir() / "genome"
    final = out_dir / src.filename

    expected = None
    if cfg.verify and src.checksums:
        sums_url = f"{src.base_url}/{src.checksums}"
        expected = parse_checksums(fetch_text(sums_url, cfg.timeout), src.filename, sums_url)

    if final.exists() and not cfg.overwrite:
        if expected is None or md5_file(final) == expected:
            log(f"{final}: already downloaded{' and verified' if expected else ''}; nothing to do")
            return final
        raise InputError(f"{final}: exists but its MD5 is not the published {expected}; "
                         f"delete it or pass --overwrite to fetch it again")

    t0 = time.time()
    fetch_file(url, final, cfg, expected, src.checksums or "", log)
    size = final.stat().st_size
    dt = max(time.time() - t0, 1e-9)
    log(f"wrote {final} ({size / 1e6:,.1f} MB in {dt:.1f} s)\n"
        f"next: tinydnabert preprocess --fasta {final} --out shards/")
    return final


def fetch_file(url: str, final: Path, cfg: DownloadConfig, expected_md5: str | None = None,
               checksums_name: str = "", log: Callable[[str], None] = print0) -> Path:
    """The one HTTP client of the package: `url` into `final` through `final.part` (resumed with a Range
    request after a dropped connection, `cfg.retries` times), MD5-checked when `expected_md5` is given,
    renamed into place only when complete. Genome downloads and task files (`--data URL`) both use it."""
    final.parent.mkdir(parents=True, exist_ok=True)
    with OutputLock(final):  # two downloads appending to one .part file would interleave their bytes
        return _fetch_locked(url, final, cfg, expected_md5, checksums_name, log)


def _fetch_locked(url: str, final: Path, cfg: DownloadConfig, expected_md5: str | None, checksums_name: str,
                  log: Callable[[str], None]) -> Path:
    part = final.with_name(final.name + ".part")
    if cfg.overwrite and part.exists():
        part.unlink()
    log(f"downloading {url}\n        -> {final}")
    expected = expected_md5
    for attempt in range(cfg.retries + 1):
        try:
            _transfer(url, part, cfg, log)
            break
        except (http.client.IncompleteRead, ConnectionError, socket.timeout, TimeoutError) as e:
            have = part.stat().st_size if part.exists() else 0
            if attempt == cfg.retries:
                raise InputError(f"{url}: connection dropped after {have:,} bytes ({type(e).__name__}) "
                                 f"and {cfg.retries} retries; run the same command again to resume "
                                 f"from {part}") from e
            log(f"connection dropped at {have:,} bytes ({type(e).__name__}); retry {attempt + 1}/{cfg.retries}")
            time.sleep(min(2 ** attempt, 10))

    if expected is not None:
        got = md5_file(part)
        if got != expected:
            part.unlink()  # a corrupt part file cannot be repaired by resuming; make the rerun start clean
            raise InputError(f"{url}: MD5 mismatch (got {got}, {checksums_name} says {expected}); "
                             f"the partial file was deleted and {final} was not written; run the command "
                             f"again, or try another --base-url if it keeps failing")
        log(f"MD5 {got} matches {checksums_name}")
    os.replace(part, final)
    return final


def fetch_bytes(url: str, retries: int = 5, timeout: float = 60.0, log: Callable[[str], None] = print0) -> bytes:
    """`url`'s body in memory (a shard streamed for training, a manifest): a dropped connection or a refused
    one is retried `retries` times with backoff, a dropped body resumed with a Range request where it stopped
    (a server that ignores Range answers 200 and the body starts over). A 4xx/5xx answer is not retried."""
    buf = bytearray()
    for attempt in range(retries + 1):
        try:
            with _open(url, timeout, len(buf)) as resp:
                if buf and getattr(resp, "status", 200) != 206:
                    buf.clear()
                length = resp.headers.get("Content-Length")
                total = len(buf) + int(length) if length is not None else None
                while block := resp.read(CHUNK):
                    buf += block
            if total is not None and len(buf) != total:
                raise http.client.IncompleteRead(b"", total - len(buf))
            return bytes(buf)
        except urllib.error.HTTPError as e:
            if e.code not in (429, 500, 502, 503, 504) or attempt == retries:  # busy / gateway: worth a retry
                raise InputError(f"{url}: HTTP {e.code} {e.reason}; check the URL (the shards directory, as "
                                 f"`tinydnabert preprocess --out` wrote it) and that the server serves it") from e
            why = f"HTTP {e.code} {e.reason}"
            log(f"{url}: {why}; retry {attempt + 1}/{retries}")
            time.sleep(min(0.25 * 2 ** attempt, 10))
        except (http.client.HTTPException, urllib.error.URLError, ConnectionError, socket.timeout, TimeoutError,
                OSError) as e:
            why = f"{type(e).__name__}: {getattr(e, 'reason', None) or e}"
            if attempt == retries:
                raise InputError(f"{url}: cannot fetch after {retries} retries ({why}, {len(buf):,} bytes read); "
                                 "check the server and the network, then run again (--resume continues)") from e
            log(f"{url}: {why} at byte {len(buf):,}; retry {attempt + 1}/{retries}")
            time.sleep(min(0.25 * 2 ** attempt, 10))
    raise AssertionError("unreachable")


def list_genomes() -> str:
    rows = [f"{'name':<12} {'size':>9}  description / URL"]
    for name, src in GENOMES.items():
        size = f"~{src.approx_bytes / 1e6:,.0f} MB" if src.approx_bytes >= 1e6 else f"~{src.approx_bytes / 1e3:.0f} kB"
        rows.append(f"{name:<12} {size:>9}  {src.description}\n{'':<24}{src.base_url}/{src.filename}")
    return "\n".join(rows)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("genome", nargs="?", help=f"a name from --list (grch38, {DEFAULT_SMALL}, ...) or a URL")
    parser.add_argument("--list", action="store_true", help="list the genomes this command knows and exit")
    add_dataclass_args(parser, DownloadConfig)


def main(args: argparse.Namespace) -> int:
    if args.list:
        print(list_genomes())
        return 0
    if not args.genome:
        raise InputError("name a genome to download, e.g. `tinydnabert download grch38` "
                         "(see `tinydnabert download --list`)")
    download(args.genome, dataclass_from_args(DownloadConfig, args))
    return 0

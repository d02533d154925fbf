"""`tinydnabert download` against a Range-capable HTTP server on 127.0.0.1 serving real genome files.

The server maps the names the registry asks for (chrM.fa.gz, chr21.fa.gz, md5sum.txt) to the bytes of
real files from the shared data, so every path of the real client runs: checksum list first, Range
resume, restart when Range is ignored, retry after a dropped connection, MD5 mismatch, 404.
"""

from __future__ import annotations

import hashlib
import http.server
import threading
from pathlib import Path

import pytest

from tinydnabert.app import cli
from tinydnabert.errors import InputError
from tinydnabert.prep.download import DownloadConfig, download, parse_checksums, resolve


class _Handler(http.server.BaseHTTPRequestHandler):
    timeout = 10  # a stuck client cannot hold a server thread past the test
    files: dict[str, bytes] = {}
    log: list[tuple[str, str | None]] = []  # (path, Range header) per GET
    honour_range = True
    truncate_next: set[str] = set()  # paths whose next response stops halfway and drops the connection

    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        name = self.path.lstrip("/")
        rng = self.headers.get("Range")
        self.log.append((name, rng))
        body = self.files.get(name)
        if body is None:
            self.send_error(404, "Not Found")
            return
        start = 0
        if rng and self.honour_range:
            start = int(rng.removeprefix("bytes=").split("-")[0])
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        payload = body[start:]
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if name in self.truncate_next:
            self.truncate_next.discard(name)
            self.wfile.write(payload[: len(payload) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(payload)

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass


@pytest.fixture
def server(genome_dir: Path):
    chrM = (genome_dir / "human_chrM.fa.gz").read_bytes()
    slice_ = (genome_dir / "hg38_chr2_1-2333275.fa.gz").read_bytes()
    files = {"chrM.fa.gz": chrM, "chr21.fa.gz": slice_}
    # UCSC's md5sum.txt layout: "<md5>  <name>"
    files["md5sum.txt"] = "".join(f"{hashlib.md5(b).hexdigest()}  {n}\n" for n, b in files.items()).encode()
    handler = type("Handler", (_Handler,), {"files": files, "log": [], "honour_range": True,
                                             "truncate_next": set()})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)  # shutdown() waits a poll
    thread.start()
    try:
        yield httpd, handler, f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def _cfg(out: Path, base: str, **kw) -> DownloadConfig:
    return DownloadConfig(out=str(out), base_url=base, progress=False, timeout=10, **kw)


@pytest.mark.timeout(60)
def test_full_download_verified_and_idempotent(server, tmp_path, genome_dir):
    _, handler, base = server
    path = download("hg38-chrM", _cfg(tmp_path, base), log=lambda s: None)
    assert path == tmp_path / "chrM.fa.gz"
    assert path.read_bytes() == (genome_dir / "human_chrM.fa.gz").read_bytes()
    assert not (tmp_path / "chrM.fa.gz.part").exists()
    assert [p for p, _ in handler.log] == ["md5sum.txt", "chrM.fa.gz"]  # checksum list first
    # A second run verifies the file on disk and transfers nothing.
    handler.log.clear()
    download("hg38-chrM", _cfg(tmp_path, base), log=lambda s: None)
    assert [p for p, _ in handler.log] == ["md5sum.txt"]


@pytest.mark.timeout(60)
def test_resume_from_partial_part_file(server, tmp_path, genome_dir):
    _, handler, base = server
    real = (genome_dir / "hg38_chr2_1-2333275.fa.gz").read_bytes()
    have = 300_001
    (tmp_path / "chr21.fa.gz.part").write_bytes(real[:have])
    messages: list[str] = []
    path = download("hg38-chr21", _cfg(tmp_path, base), log=messages.append)
    assert path.read_bytes() == real
    assert ("chr21.fa.gz", f"bytes={have}-") in handler.log  # only the rest was requested
    assert any(f"resuming chr21.fa.gz.part at byte {have:,}" in m for m in messages)


@pytest.mark.timeout(60)
def test_dropped_connection_is_retried_by_resuming(server, tmp_path, genome_dir, no_backoff):
    _, handler, base = server
    handler.truncate_next.add("chr21.fa.gz")
    path = download("hg38-chr21", _cfg(tmp_path, base), log=lambda s: None)
    assert path.read_bytes() == (genome_dir / "hg38_chr2_1-2333275.fa.gz").read_bytes()
    gets = [r for p, r in handler.log if p == "chr21.fa.gz"]
    assert len(gets) == 2 and gets[0] is None and gets[1].startswith("bytes=")


@pytest.mark.timeout(60)
def test_server_ignoring_range_restarts_cleanly(server, tmp_path, genome_dir):
    _, handler, base = server
    handler.honour_range = False
    real = (genome_dir / "hg38_chr2_1-2333275.fa.gz").read_bytes()
    (tmp_path / "chr21.fa.gz.part").write_bytes(b"garbage that must not survive")
    path = download("hg38-chr21", _cfg(tmp_path, base), log=lambda s: None)
    assert path.read_bytes() == real


@pytest.mark.timeout(60)
def test_checksum_mismatch_leaves_no_file(server, tmp_path):
    _, handler, base = server
    handler.files = dict(handler.files, **{"md5sum.txt": b"0123456789abcdef0123456789abcdef  chrM.fa.gz\n"})
    with pytest.raises(InputError, match=r"MD5 mismatch .*chrM\.fa\.gz was not written"):
        download("hg38-chrM", _cfg(tmp_path, base), log=lambda s: None)
    assert list(tmp_path.iterdir()) == []  # neither the final file nor a corrupt .part


@pytest.mark.timeout(60)
def test_404_is_a_clear_error(server, tmp_path, capsys):
    _, handler, base = server
    with pytest.raises(InputError, match=r"HTTP 404 .*tinydnabert download --list"):
        download("hg38-chr1", _cfg(tmp_path, base, verify=False), log=lambda s: None)
    # Through the CLI: `error: ...` on stderr, exit status 2, nothing written.
    rc = cli.main(["download", "hg38-chr1", "--out", str(tmp_path), "--base-url", base, "--no-progress",
                   "--no-verify"])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "chr1.fa.gz: HTTP 404" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.timeout(60)
def test_cli_download_and_env_base_url(server, tmp_path, genome_dir, monkeypatch):
    _, _, base = server
    monkeypatch.setenv("TINYDNABERT_DOWNLOAD_BASE_URL", base)
    rc = cli.main(["download", "hg38-chrM", "--out", str(tmp_path), "--no-progress"])
    assert rc == 0
    assert (tmp_path / "chrM.fa.gz").read_bytes() == (genome_dir / "human_chrM.fa.gz").read_bytes()


def test_registry_and_checksum_formats():
    url, src = resolve("grch38")
    assert url == ("https://ftp.ncbi.nlm.nih.gov/genomes/all/GCF/000/001/405/GCF_000001405.40_GRCh38.p14/"
                   "GCF_000001405.40_GRCh38.p14_genomic.fna.gz")
    assert src.checksums == "md5checksums.txt"
    assert resolve("hg38-chr21")[0] == "https://hgdownload.soe.ucsc.edu/goldenPath/hg38/chromosomes/chr21.fa.gz"
    # NCBI's md5checksums.txt prefixes names with "./"; UCSC's md5sum.txt does not.
    ncbi = ("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa  ./GCF_000001405.40_GRCh38.p14_assembly_report.txt\n"
            "0123456789abcdef0123456789ABCDEF  ./GCF_000001405.40_GRCh38.p14_genomic.fna.gz\n")
    assert parse_checksums(ncbi, src.filename, "x") == "0123456789abcdef0123456789abcdef"
    with pytest.raises(InputError, match="no MD5 listed for chr9.fa.gz"):
        parse_checksums("bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb  chr1.fa.gz\n", "chr9.fa.gz", "md5sum.txt")
    with pytest.raises(InputError, match="unknown genome"):
        resolve("grch99")

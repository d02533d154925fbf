"""NT tasks from the Hugging Face hub, read file by file, against a local hub on 127.0.0.1.

The stand-in is laid out like the real repositories (InstaDeepAI/nucleotide_transformer_downstream_tasks and
..._revised): a `datasets` loading script, a README.md whose metadata is `{}` (no configs) and one folder per
task holding train.fna and test.fna ('>chr:start-end|label' headers). `datasets` >= 4 refuses such a repository
(it holds a script), so tinydnabert fetches the two FASTA files with `huggingface_hub.hf_hub_download` and parses
them itself. The server answers the hub's file-resolve URLs `/datasets/{repo}/resolve/{revision}/{path}` (HEAD
and GET, with the X-Repo-Commit / ETag / Content-Length headers hf_hub_download checks, and the hub's
X-Error-Code on a 404), and logs every request, so the tests can tell the script was never asked for.

Rows are real: the NT revised sample (shared/data/benchmark/nt_revised_sample) for the revised tasks; where it
has too few rows, or none (it only holds revised tasks), real GUE rows of the same kind of task (SOURCES.md)."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import http.server
import json
import re
import shutil
import subprocess
import threading
import urllib.parse
from pathlib import Path

import pytest

from tinydnabert.app import cli
from tinydnabert.errors import InputError
from tinydnabert.eval.tasks import NT_ORIGINAL_HUB, NT_REVISED_HUB, get_task, load_task_data
from tinydnabert.io import sha256_file

pytestmark = pytest.mark.usefixtures("one_thread")

SCRIPTS = {NT_REVISED_HUB: "nucleotide_transformer_downstream_tasks_revised.py",
           NT_ORIGINAL_HUB: "nucleotide_transformer_downstream_tasks.py"}
# Commit shas of the stand-in repositories: main of each, and an older commit of the revised one.
MAIN = {repo: hashlib.sha1(f"{repo}@main".encode()).hexdigest() for repo in SCRIPTS}
OLD = hashlib.sha1(f"{NT_REVISED_HUB}@old".encode()).hexdigest()
# A loading script that fails loudly if anything ever runs it.
SCRIPT = '''"""Stand-in for the repository's `datasets` loading script: tinydnabert must never execute it."""
import datasets  # noqa: F401

raise RuntimeError("a dataset loading script was executed")
'''
README = "---\n{}\n---\n\n# Nucleotide Transformer downstream tasks (stand-in with real rows)\n"
TINY = ["--steps", "4", "--batch-size", "8", "--warmup-steps", "1", "--eval-every", "2", "--log-every", "2"]


# ---------------------------------------------------------------------------------- the repositories

Record = tuple[str, str, int]  # header (without '>'), sequence, label


def _nt_rows(real_data: Path, task: str) -> list[Record]:
    with open(real_data / "benchmark/nt_revised_sample/train.tsv", newline="") as f:
        return [(r["name"], r["sequence"], int(r["label"])) for r in csv.DictReader(f, delimiter="\t")
                if r["task"] == task]


def _gue_rows(real_data: Path, rel: str, per_label: int) -> list[Record]:
    """The first `per_label` rows of each label of a GUE csv, with an NT-style '|label' header naming the row."""
    out: list[Record] = []
    seen: dict[int, int] = {}
    with open(real_data / "benchmark/GUE" / rel, newline="") as f:
        for line, r in enumerate(csv.DictReader(f), start=2):
            lab = int(r["label"])
            if seen.get(lab, 0) < per_label:
                seen[lab] = seen.get(lab, 0) + 1
                out.append((f"GUE/{rel}:{line}|{lab}", r["sequence"], lab))
    return out


def _write_fasta(path: Path, records: list[Record]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="\n") as f:
        for header, seq, _ in records:
            f.write(f">{header}\n" + "\n".join(seq[i:i + 80] for i in range(0, len(seq), 80)) + "\n")


def _write_repo(root: Path, repo: str, tasks: dict[str, dict[str, list[Record]]]) -> Path:
    root.mkdir(parents=True)
    (root / SCRIPTS[repo]).write_text(SCRIPT)
    (root / "README.md").write_text(README)
    for task, splits in tasks.items():
        for split, records in splits.items():
            _write_fasta(root / task / f"{split}.fna", records)
    return root


@dataclasses.dataclass
class Layout:
    snapshots: dict[str, dict[str, Path]]          # repo -> commit -> directory holding that commit's files
    refs: dict[str, dict[str, str]]                # repo -> branch -> commit
    rows: dict[tuple[str, str], dict[str, list[Record]]]  # (commit, task) -> split -> records

    def files(self, repo: str, commit: str, task: str) -> dict[str, str]:
        """{path in the repository: sha256} of a task's two files, computed here from the served bytes."""
        root = self.snapshots[repo][commit]
        return {f"{task}/{n}": hashlib.sha256((root / task / n).read_bytes()).hexdigest()
                for n in ("train.fna", "test.fna")}


@pytest.fixture(scope="module")
def layout(tmp_path_factory, real_data: Path) -> Layout:
    base = tmp_path_factory.mktemp("hub_repos")
    tata = _nt_rows(real_data, "promoter_tata")       # 9 real rows, 2 positive: too few to carve a validation set
    gue_tata = {s: _gue_rows(real_data, f"prom/prom_300_tata/{s}.csv", n) for s, n in (("train", 18), ("test", 6))}
    h3k4me3 = _nt_rows(real_data, "H3K4me3")          # 25 real rows
    revised = {
        # promoter_tata: the 9 NT rows, topped up with GUE prom_300_tata rows (human TATA promoters, 300 bp)
        "promoter_tata": {"train": tata[:5] + gue_tata["train"], "test": tata[5:] + gue_tata["test"]},
        "H3K4me3": {"train": h3k4me3[:17], "test": h3k4me3[17:]},
        # a task folder that lacks its test file
        "splice_sites_donors": {"train": _nt_rows(real_data, "splice_sites_donors")},
    }
    # the older commit: H3K4me3 had fewer training rows
    old = {**revised, "H3K4me3": {"train": h3k4me3[:12], "test": h3k4me3[17:]}}
    # The original repository's H3K4me3 is yeast H3K4me3 (500 bp); the sample has only the revised (human) task,
    # so these are real rows of GUE EMP H3K4me3, the same source as NT original H3K4me3 (SOURCES.md).
    original = {"H3K4me3": {"train": _gue_rows(real_data, "EMP/H3K4me3/dev.csv", 20),
                            "test": _gue_rows(real_data, "EMP/H3K4me3/test.csv", 8)}}
    snapshots = {
        NT_REVISED_HUB: {MAIN[NT_REVISED_HUB]: _write_repo(base / "revised-main", NT_REVISED_HUB, revised),
                         OLD: _write_repo(base / "revised-old", NT_REVISED_HUB, old)},
        NT_ORIGINAL_HUB: {MAIN[NT_ORIGINAL_HUB]: _write_repo(base / "original-main", NT_ORIGINAL_HUB, original)},
    }
    rows = {(MAIN[NT_REVISED_HUB], t): s for t, s in revised.items()}
    rows |= {(OLD, t): s for t, s in old.items()}
    rows |= {(MAIN[NT_ORIGINAL_HUB], t): s for t, s in original.items()}
    return Layout(snapshots, {repo: {"main": MAIN[repo]} for repo in SCRIPTS}, rows)


def make_clone(layout: Layout, dest: Path, repo: str = NT_REVISED_HUB) -> tuple[Path, str]:
    """A git clone of main of `repo` (script, README and all), as `git clone` + `git lfs pull` leave it."""
    shutil.copytree(layout.snapshots[repo][MAIN[repo]], dest)
    git = ["git", "-C", str(dest), "-c", "user.name=t", "-c", "user.email=t@example.org", "-c", "commit.gpgsign=false"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "snapshot"]):
        subprocess.run(git + args, check=True, capture_output=True)
    head = subprocess.run(git + ["rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
    return dest, head


# ---------------------------------------------------------------------------------- the local hub

class LocalHub:
    """The hub's file-resolve endpoint over `layout`, on 127.0.0.1 (a port of its own), in a thread."""

    def __init__(self, layout: Layout):
        self.layout = layout
        self.log: list[tuple[str, str]] = []          # (method, path) of every request
        self._srv: http.server.ThreadingHTTPServer | None = None

    def start(self) -> "LocalHub":
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_HEAD(self):
                self._answer(body=False)

            def do_GET(self):
                self._answer(body=True)

            def _fail(self, status: int, code: str, commit: str | None = None):
                self.send_response(status)
                self.send_header("X-Error-Code", code)
                self.send_header("X-Error-Message", code)
                if commit:
                    self.send_header("X-Repo-Commit", commit)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def _answer(self, body: bool):
                path = urllib.parse.unquote(self.path.split("?", 1)[0])
                hub.log.append((self.command, path))
                m = re.fullmatch(r"/datasets/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
                if not m or m.group(1) not in hub.layout.snapshots:
                    return self._fail(404, "RepoNotFound")  # (the real hub says 401 for unknown or private repos)
                repo, revision, rel = m.groups()
                commits = hub.layout.snapshots[repo]
                commit = hub.layout.refs[repo].get(revision, revision if revision in commits else None)
                if commit is None:
                    return self._fail(404, "RevisionNotFound")
                f = commits[commit] / rel
                if not f.is_file():
                    return self._fail(404, "EntryNotFound", commit)
                data = f.read_bytes()
                self.send_response(200)
                self.send_header("X-Repo-Commit", commit)
                self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')  # as for an LFS file
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.end_headers()
                if body:
                    self.wfile.write(data)

        self._srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._srv.serve_forever, daemon=True).start()
        return self

    @property
    def url(self) -> str:
        assert self._srv is not None
        return f"http://127.0.0.1:{self._srv.server_address[1]}"

    def stop(self) -> None:
        if self._srv is not None:
            self._srv.shutdown()
            self._srv.server_close()
            self._srv = None

    def paths(self) -> set[str]:
        return {p for _, p in self.log}


@pytest.fixture
def hub(layout: Layout, tmp_path: Path, monkeypatch):
    """The local hub, HF_ENDPOINT pointing at it, and a fresh huggingface_hub cache (no real cache touched)."""
    from huggingface_hub import constants

    server = LocalHub(layout).start()
    monkeypatch.setenv("HF_ENDPOINT", server.url)  # tinydnabert reads it per call and passes endpoint=
    home = tmp_path / "hf_home"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_CACHE", str(home / "hub"))
    # huggingface_hub read these at import; hf_hub_download falls back to the constants when cache_dir is None
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    yield server
    server.stop()


def _expected_provenance(layout: Layout, repo: str, task: str, revision: str, commit: str, endpoint: str):
    return {"kind": "hub", "repo": repo, "endpoint": endpoint, "revision": revision, "commit": commit,
            "files": layout.files(repo, commit, task)}


def _assert_rows(data, rows: dict[str, list[Record]]) -> None:
    for split, records in rows.items():
        assert data.splits[split].sequences == [s.upper() for _, s, _ in records]
        assert data.splits[split].labels == [lab for _, _, lab in records]


# ---------------------------------------------------------------------------------- loading

def test_hub_task_is_read_file_by_file_never_through_the_script(hub: LocalHub, layout: Layout):
    """The real layout (loading script, `{}` README, task folders of .fna): the two files of the task are
    fetched and parsed; nothing else of the repository is asked for. (The code before this read the task with
    `datasets.load_dataset(repo, task)`, which cannot load a repository holding a script: this failed.)"""
    data = load_task_data(get_task("promoter_tata"))
    commit = MAIN[NT_REVISED_HUB]
    _assert_rows(data, layout.rows[(commit, "promoter_tata")])
    assert data.counts() == {"train": 5 + 36, "test": 4 + 12} and data.labels == [0, 1]
    assert data.provenance == _expected_provenance(layout, NT_REVISED_HUB, "promoter_tata", "main", commit, hub.url)
    assert commit in data.source and commit in data.splits["test"].source
    # the train file at "main", then the test file at the commit main pointed to: one version, never two
    assert hub.paths() == {f"/datasets/{NT_REVISED_HUB}/resolve/main/promoter_tata/train.fna",
                           f"/datasets/{NT_REVISED_HUB}/resolve/{commit}/promoter_tata/test.fna"}
    assert not any(p.endswith((".py", "README.md")) for p in hub.paths())


def test_original_repository_task(hub: LocalHub, layout: Layout):
    data = load_task_data(get_task("nt_original/H3K4me3"))
    commit = MAIN[NT_ORIGINAL_HUB]
    _assert_rows(data, layout.rows[(commit, "H3K4me3")])
    assert data.provenance == _expected_provenance(layout, NT_ORIGINAL_HUB, "H3K4me3", "main", commit, hub.url)


def test_revision_pinning_and_an_unknown_revision(hub: LocalHub, layout: Layout):
    task = get_task("H3K4me3")                        # a bare NT name: the revised task
    assert task.hub_id == NT_REVISED_HUB
    old = load_task_data(task, revision=OLD)
    assert old.counts() == {"train": 12, "test": 8}
    assert old.provenance == _expected_provenance(layout, NT_REVISED_HUB, "H3K4me3", OLD, OLD, hub.url)
    main = load_task_data(task)
    assert main.counts() == {"train": 17, "test": 8} and main.provenance["commit"] == MAIN[NT_REVISED_HUB]
    assert main.provenance["files"]["H3K4me3/train.fna"] != old.provenance["files"]["H3K4me3/train.fna"]
    assert main.provenance["files"]["H3K4me3/test.fna"] == old.provenance["files"]["H3K4me3/test.fna"]
    with pytest.raises(InputError, match=f"hf://datasets/{NT_REVISED_HUB}@v9: revision 'v9' not found.*"
                                         f"--hub-revision"):
        load_task_data(task, revision="v9")


def test_missing_task_folder_file_or_repository_is_a_clear_error(hub: LocalHub):
    with pytest.raises(InputError) as e:
        load_task_data(get_task("enhancers"))        # registered, but no folder in this repository
    msg = str(e.value)
    assert f"hf://datasets/{NT_REVISED_HUB}@main: no file enhancers/train.fna" in msg and "--list-tasks" in msg
    # not the unreachable-hub phrase: the benchmark would skip every other hub task on it
    assert "Hugging Face hub" not in msg
    with pytest.raises(InputError, match="no file splice_sites_donors/test.fna"):
        load_task_data(get_task("splice_sites_donors"))
    nowhere = dataclasses.replace(get_task("promoter_tata"), hub_id="InstaDeepAI/no_such_repository")
    with pytest.raises(InputError, match="hf://datasets/InstaDeepAI/no_such_repository: repository not found at "
                                         + re.escape(hub.url)):
        load_task_data(nowhere)


def test_offline_after_a_first_download(hub: LocalHub, monkeypatch):
    task = get_task("H3K4me3")
    first = load_task_data(task)
    asked = len(hub.log)
    # HF_HUB_OFFLINE=1 (set after huggingface_hub was imported: read per call): the cache, no request
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    again = load_task_data(task)
    assert len(hub.log) == asked
    assert again.provenance == first.provenance and again.splits["train"].sequences == first.splits["train"].sequences
    # ... and a task never downloaded says what to do
    with pytest.raises(InputError) as e:
        load_task_data(get_task("promoter_tata"))
    msg = str(e.value)
    assert "HF_HUB_OFFLINE is set" in msg and "promoter_tata/train.fna" in msg and "--data CLONE" in msg
    assert "Hugging Face hub" in msg                  # the benchmark's cue to skip the other hub tasks quickly
    # the hub gone (server stopped, not offline mode): the cached files, the same commit and checksums
    monkeypatch.delenv("HF_HUB_OFFLINE")
    hub.stop()
    assert load_task_data(task).provenance == first.provenance


def test_clone_of_the_hub_repository_reads_the_same_files(layout: Layout, tmp_path: Path):
    """--data CLONE: a clone of the real layout (script and README too) is read file by file like the hub,
    never through `datasets` (which refuses it) and never running the script."""
    import datasets

    clone, head = make_clone(layout, tmp_path / "nucleotide_transformer_downstream_tasks_revised")
    with pytest.raises(RuntimeError, match="Dataset scripts are no longer supported"):
        datasets.load_dataset(str(clone), "promoter_tata", cache_dir=str(tmp_path / "ds_cache"))
    data = load_task_data(get_task("promoter_tata"), clone)
    commit = MAIN[NT_REVISED_HUB]
    _assert_rows(data, layout.rows[(commit, "promoter_tata")])
    assert data.provenance == {"kind": "clone", "path": str(clone.resolve()), "repo": NT_REVISED_HUB,
                               "commit": head, "files": layout.files(NT_REVISED_HUB, commit, "promoter_tata")}
    with pytest.raises(InputError) as e:
        load_task_data(get_task("enhancers"), clone)
    msg = str(e.value)
    assert f"{clone} (clone of {NT_REVISED_HUB}, git commit {head}): no task folder enhancers/" in msg
    assert "it has: H3K4me3, promoter_tata, splice_sites_donors" in msg
    with pytest.raises(InputError, match="no file splice_sites_donors/test.fna"):
        load_task_data(get_task("splice_sites_donors"), clone)
    # a clone made without git-lfs holds pointer files: say so instead of "not a FASTA file"
    pointer = clone / "H3K4me3" / "train.fna"
    pointer.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:" + "0" * 64 + "\nsize 17000\n")
    with pytest.raises(InputError, match="H3K4me3/train.fna: a Git LFS pointer.*git lfs pull"):
        load_task_data(get_task("H3K4me3"), clone)


# ---------------------------------------------------------------------------------- end to end

@pytest.mark.timeout(300)
def test_benchmark_end_to_end_against_the_local_hub(hub: LocalHub, layout: Layout, tiny_export: Path,
                                                    tmp_path: Path, capsys):
    out = tmp_path / "bench"
    argv = ["benchmark", "--model", str(tiny_export), "--tasks", "promoter_tata,H3K4me3",
            "--out", str(out), *TINY]
    assert cli.main(argv) == 0
    res = json.loads((out / "nt_benchmark.json").read_text())
    assert res["meta"]["hub_revision"] == "main"
    rows = {r["task"]: r for r in res["tasks"]}
    assert list(rows) == ["nt_revised/promoter_tata", "nt_revised/H3K4me3"]
    commit = MAIN[NT_REVISED_HUB]
    for name, r in rows.items():
        task = name.split("/")[1]
        want = _expected_provenance(layout, NT_REVISED_HUB, task, "main", commit, hub.url)
        assert r["status"] == "done" and r["data_provenance"] == want
        for kind in ("scratch", "pretrained"):
            run = json.loads((Path(r["runs"][kind]) / "results.json").read_text())
            assert run["data_provenance"] == want and commit in run["data_source"]
            files = {p: sha256_file(layout.snapshots[NT_REVISED_HUB][commit] / p) for p in want["files"]}
            assert run["data_provenance"]["files"] == files
    assert not any(p.endswith((".py", "README.md")) for p in hub.paths())
    # the data revision is part of the protocol: finished runs on "main" are not reused for another revision
    capsys.readouterr()
    assert cli.main([*argv, "--hub-revision", OLD]) == 2
    assert "finished under other settings" in capsys.readouterr().err


@pytest.mark.timeout(300)
def test_finetune_with_a_data_clone_and_with_a_pinned_revision(hub: LocalHub, layout: Layout,
                                                               tiny_export: Path, tmp_path: Path):
    clone, head = make_clone(layout, tmp_path / "clone")
    out = tmp_path / "ft_clone"
    assert cli.main(["finetune", "--model", str(tiny_export), "--task", "promoter_tata", "--data", str(clone),
                     "--out", str(out), *TINY]) == 0
    res = json.loads((out / "results.json").read_text())
    files = layout.files(NT_REVISED_HUB, MAIN[NT_REVISED_HUB], "promoter_tata")
    assert res["data_provenance"] == {"kind": "clone", "path": str(clone.resolve()), "repo": NT_REVISED_HUB,
                                      "commit": head, "files": files}
    assert res["counts"]["train"] + res["counts"]["val"] == 41 and res["counts"]["test"] == 16
    assert hub.log == []                              # a clone needs no hub
    # the same task from the hub at a pinned commit: the revision asked for and the commit read are recorded
    out = tmp_path / "ft_old"
    assert cli.main(["finetune", "--model", str(tiny_export), "--task", "H3K4me3", "--hub-revision", OLD,
                     "--out", str(out), *TINY]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["data_provenance"] == _expected_provenance(layout, NT_REVISED_HUB, "H3K4me3", OLD, OLD, hub.url)
    assert json.loads((out / "config.json").read_text())["finetune"]["hub_revision"] == OLD


# ---------------------------------------------------------------------------------- the probe at a pinned revision

PROBE = ["--task", "H3K4me3", "--seeds", "1", "--c-grid", "1"]


@pytest.mark.timeout(300)
def test_probe_reads_and_records_the_revision_asked_for(hub: LocalHub, layout: Layout, tiny_export: Path,
                                                        tmp_path: Path):
    """`probe --hub-revision` reads that revision's rows (12 training rows at OLD, 17 at main) and records it.
    (Before, ProbeConfig had no hub_revision: the probe always read main.)"""
    for revision, commit, n_train in ((OLD, OLD, 12), ("main", MAIN[NT_REVISED_HUB], 17)):
        hub.log.clear()
        out = tmp_path / f"probe-{revision}"
        assert cli.main(["probe", "--model", str(tiny_export), "--out", str(out), "--hub-revision", revision,
                         *PROBE]) == 0
        res = json.loads((out / "results.json").read_text())
        assert res["data_provenance"] == _expected_provenance(layout, NT_REVISED_HUB, "H3K4me3", revision, commit,
                                                              hub.url)
        assert res["counts"]["train"] + res["counts"]["val"] == n_train and res["counts"]["test"] == 8
        assert commit in res["data_source"]
        assert json.loads((out / "config.json").read_text())["probe"]["hub_revision"] == revision
        assert hub.paths() and all(f"/resolve/{revision}/" in p or f"/resolve/{commit}/" in p for p in hub.paths())


@pytest.mark.timeout(300)
def test_benchmark_probe_protocol_reads_the_pinned_revision(hub: LocalHub, layout: Layout, tiny_export: Path,
                                                            tmp_path: Path, capsys):
    """`benchmark --protocol probe --hub-revision SHA`: both arms probe the rows of SHA, and the table's provenance
    is what they read. (Before, the benchmark checked the task at SHA, probed main and said SHA.)"""
    out = tmp_path / "bench"
    argv = ["benchmark", "--model", str(tiny_export), "--tasks", "H3K4me3", "--protocol", "probe", "--seeds", "2",
            "--probe-c-grid", "1", "--out", str(out)]
    assert cli.main([*argv, "--hub-revision", OLD]) == 0
    res = json.loads((out / "nt_benchmark.json").read_text())
    assert res["meta"]["hub_revision"] == OLD
    (row,) = res["tasks"]
    want = _expected_provenance(layout, NT_REVISED_HUB, "H3K4me3", OLD, OLD, hub.url)
    assert row["status"] == "done" and row["protocol"] == "probe" and row["data_provenance"] == want
    assert row["counts"]["train"] + row["counts"]["val"] == 12    # OLD's rows; main has 17
    for kind in ("scratch", "pretrained"):
        run = Path(row["runs"][kind])
        assert run.name == f"probe-{kind}"
        saved = json.loads((run / "results.json").read_text())
        assert saved["data_provenance"] == want and saved["counts"]["train"] + saved["counts"]["val"] == 12
        assert json.loads((run / "config.json").read_text())["probe"]["hub_revision"] == OLD
    assert not any("/resolve/main/" in p for p in hub.paths())  # main was never read
    # the revision is part of the probe's protocol: these runs are not reused for main
    capsys.readouterr()
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "finished under other settings" in err and "hub_revision" in err

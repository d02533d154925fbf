"""Task data from elsewhere: the NT hub repositories (file by file, with huggingface_hub), a clone of one,
and what `datasets` reads (parquet/csv URLs, a directory whose README.md declares configs).
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

from tinydnabert.errors import InputError
from tinydnabert.eval.tasks.files import (
    SPLIT_ALIASES,
    Split,
    clean_sequence,
    parse_label,
    read_fasta_split,
    split_name,
)
from tinydnabert.eval.tasks.registry import NT_ORIGINAL_HUB, NT_REVISED_HUB, Task
from tinydnabert.io import sha256_file

# Each NT task is a folder of its hub repository holding these two FASTA files ('>chr1:100-400|1' headers).
NT_SPLIT_FILES = ("train.fna", "test.fna")
# The loading scripts the NT repositories ship (never run): a clone's script says which repository it is.
_NT_SCRIPTS = {"nucleotide_transformer_downstream_tasks.py": NT_ORIGINAL_HUB,
               "nucleotide_transformer_downstream_tasks_revised.py": NT_REVISED_HUB}


def _fetch(url: str, cache_dir: str | None) -> str:
    """An http(s) data file (`--data URL`), downloaded once into the cache by download.fetch_file
    (resumed after a dropped connection, renamed into place only when complete); returns the local path."""
    import hashlib

    from tinydnabert.prep.download import DownloadConfig, fetch_file

    base = Path(cache_dir) if cache_dir else Path.home() / ".cache" / "tinydnabert" / "task_files"
    name = url.rsplit("?", 1)[0].rsplit("/", 1)[-1] or "data"
    dest = base / hashlib.sha256(url.encode()).hexdigest()[:16] / name
    if not dest.is_file():
        try:
            fetch_file(url, dest, DownloadConfig(out=str(dest.parent), progress=False), log=lambda msg: None)
        except InputError as e:  # download.py's message says what went wrong; say what to do with a task file
            why = str(e).removeprefix(f"{url}: ").split(";")[0]
            raise InputError(f"{url}: download failed ({why}); check the URL, or download the file and pass "
                             "its local path with --data") from e
    return str(dest)


# ---------------------------------------------------------------------------------------------
# NT task files: from the hub (huggingface_hub) or from a clone of the hub repository
# ---------------------------------------------------------------------------------------------

def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in ("1", "ON", "YES", "TRUE")


def hub_endpoint() -> str:
    """HF_ENDPOINT as set now: huggingface_hub reads it once, at import, so we read it per call and pass it on."""
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def _snapshot_commit(local: str, rel: str) -> str | None:
    """The commit a cached file belongs to: hf_hub_download returns CACHE/<repo>/snapshots/<commit>/<rel>,
    online and offline alike (an HTTP header would need the network)."""
    top = Path(local).parents[len(rel.split("/")) - 1]
    return top.name if top.parent.name == "snapshots" else None


def _refuse_lfs_pointer(path: Path) -> None:
    """A clone made without git-lfs holds ~130-byte pointer files where the FASTA should be."""
    with open(path, "rb") as f:
        head = f.read(64)
    if head.startswith(b"version https://git-lfs.github.com/spec/"):
        raise InputError(f"{path}: a Git LFS pointer, not the FASTA file; run `git lfs pull` in the clone "
                         f"(or download the repository with `hf download REPO --repo-type dataset --local-dir DIR`)")


def load_hub(task: Task, revision: str | None = "main",
             cache_dir: str | None = None) -> tuple[dict[str, Split], dict[str, Any]]:
    """(splits, provenance) of an NT task, read file by file from its hub repository.

    `<task>/train.fna` and `<task>/test.fna` come through `huggingface_hub.hf_hub_download` (its cache,
    retries, HF_HUB_OFFLINE, HF_ENDPOINT) and are parsed by `read_fasta_split`; nothing else of the
    repository is fetched, and its loading script is never run. `revision` is a branch, tag or commit;
    the test file is read at the commit the train file came from, so a branch moving in between cannot
    mix two versions. Provenance: repository, endpoint, revision asked for, commit read, sha256 per file."""
    try:
        from huggingface_hub import constants, hf_hub_download
        from huggingface_hub.utils import (
            EntryNotFoundError,
            LocalEntryNotFoundError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )
    except ImportError as e:  # pragma: no cover - an install_requires dependency (and one of transformers)
        raise InputError("reading the NT tasks from the hub needs huggingface_hub: pip install huggingface_hub") from e
    repo, config = task.hub_id, task.hub_config or task.short
    revision = revision or "main"
    endpoint = hub_endpoint()
    # HF_HUB_OFFLINE set after huggingface_hub was imported (a notebook, a test) counts too
    offline = _env_true("HF_HUB_OFFLINE") or bool(constants.HF_HUB_OFFLINE)
    cache = str(cache_dir or constants.HF_HUB_CACHE)
    where = f"hf://datasets/{repo}@{revision}"
    no_network = (f"without network, clone the repository where there is network (git clone "
                  f"https://huggingface.co/datasets/{repo}, then git lfs pull in it) and pass --data CLONE, "
                  f"or download once and then set HF_HUB_OFFLINE=1")
    splits: dict[str, Split] = {}
    files: dict[str, str] = {}
    commit: str | None = None
    for name in NT_SPLIT_FILES:
        rel = f"{config}/{name}"
        try:
            local = hf_hub_download(repo, rel, repo_type="dataset", revision=commit or revision, cache_dir=cache_dir,
                                    endpoint=endpoint, local_files_only=offline)
        # offline or unreachable, and not in the cache; caught before EntryNotFoundError, of which it is a subclass
        except LocalEntryNotFoundError as e:
            if offline:
                raise InputError(f"{where}: HF_HUB_OFFLINE is set and {rel} is not in the Hugging Face hub cache "
                                 f"{cache}; download it once with network (unset HF_HUB_OFFLINE, same cache), "
                                 f"or clone the repository and pass --data CLONE") from e
            raise InputError(f"{where}: could not download {rel} from the Hugging Face hub ({endpoint}), and it is "
                             f"not in the cache {cache} ({type(e.__cause__ or e).__name__}); {no_network}") from e
        except RevisionNotFoundError as e:
            raise InputError(f"{where}: revision {revision!r} not found in {repo} at {endpoint}; pass --hub-revision "
                             f"main, or a branch, tag or full commit sha of the repository "
                             f"({endpoint}/datasets/{repo}/commits/main)") from e
        except EntryNotFoundError as e:
            raise InputError(f"{where}: no file {rel} in the repository; every NT task is a folder <task>/ with "
                             f"{' and '.join(NT_SPLIT_FILES)}, and task {config!r} has no {name} at this revision. "
                             f"Check --task (tinydnabert finetune --list-tasks) and --hub-revision") from e
        except RepositoryNotFoundError as e:
            raise InputError(f"hf://datasets/{repo}: repository not found at {endpoint} (or it is private/gated: "
                             f"log in with `hf auth login`); check HF_ENDPOINT if you use a mirror") from e
        except Exception as e:  # a connection dropped mid-download, a 5xx after the retries, a full disk, ...
            raise InputError(f"{where}: could not download {rel} from the Hugging Face hub ({endpoint}) "
                             f"({type(e).__name__}: {str(e)[:200]}); retry, or {no_network}") from e
        commit = commit or _snapshot_commit(local, rel)
        files[rel] = sha256_file(local)
        split = read_fasta_split(Path(local))
        split.source = f"hf://datasets/{repo}@{commit or revision}/{rel}"
        splits[name.split(".")[0]] = split
    provenance = {"kind": "hub", "repo": repo, "endpoint": endpoint, "revision": revision, "commit": commit,
                  "files": files}
    return splits, provenance


def is_nt_clone(path: Path) -> bool:
    """A directory laid out like an NT hub repository: task folders holding train.fna / test.fna
    (and, in a real clone, the loading script and a README without configs, which are not read)."""
    return path.is_dir() and any(next(path.glob(f"*/{name}"), None) for name in NT_SPLIT_FILES)


def _git_head(path: Path) -> str | None:
    """The clone's commit, if it is a git clone (only its own .git: never an enclosing repository's)."""
    if not (path / ".git").exists():
        return None
    try:
        r = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    sha = r.stdout.strip()
    return sha if r.returncode == 0 and re.fullmatch(r"[0-9a-f]{40}", sha) else None


def load_nt_clone(task: Task, path: Path) -> tuple[dict[str, Split], dict[str, Any]]:
    """(splits, provenance) from a clone of an NT hub repository: the same files as load_hub, read the same way
    (never through datasets, never running the script). Provenance: the clone, its git commit, sha256 per file."""
    config = task.hub_config or task.short
    folder = path / config
    script = next((p.name for p in sorted(path.glob("*.py")) if p.name in _NT_SCRIPTS), None)
    commit = _git_head(path)
    about = [f"clone of {_NT_SCRIPTS[script]}"] if script else []
    about.append(f"git commit {commit}" if commit else "not a git clone: commit unknown")
    what = f"{path} ({', '.join(about)})"
    if not folder.is_dir():
        here = sorted({p.parent.name for name in NT_SPLIT_FILES for p in path.glob(f"*/{name}")})
        raise InputError(f"{what}: no task folder {config}/ (with {' and '.join(NT_SPLIT_FILES)}); it has: "
                         f"{', '.join(here)}. Pass --task with one of them, or a clone of the repository that has "
                         f"{config!r} ({NT_REVISED_HUB} or {NT_ORIGINAL_HUB})")
    splits: dict[str, Split] = {}
    files: dict[str, str] = {}
    for name in NT_SPLIT_FILES:
        f = folder / name
        if not f.is_file():
            raise InputError(f"{what}: no file {config}/{name}; an NT task folder holds "
                             f"{' and '.join(NT_SPLIT_FILES)}. Is the clone complete (git status, git lfs pull)?")
        _refuse_lfs_pointer(f)
        files[f"{config}/{name}"] = sha256_file(f)
        splits[name.split(".")[0]] = read_fasta_split(f)
    provenance = {"kind": "clone", "path": str(path.resolve()), "repo": _NT_SCRIPTS.get(script or ""),
                  "commit": commit, "files": files}
    return splits, provenance


def load_datasets(task: Task, source: str | None = None, data_files: dict[str, str] | None = None,
                  cache_dir: str | None = None) -> dict[str, Split]:
    """Splits through `datasets.load_dataset`: `data_files` (split -> local path or http(s) URL of
    parquet/csv/json), or `source`, a local directory whose README.md declares one config per task.
    Never the NT hub repositories: they hold a loading script, which datasets >= 4 refuses (see load_hub).
    Rows of a combined table (a `task` column) are filtered to this task."""
    try:
        import datasets
    except ImportError as e:  # pragma: no cover - datasets is a test dependency
        raise InputError("reading parquet/csv URLs or a README-configs directory needs `datasets`: "
                         "pip install 'tinydnabert[hub]'") from e
    if data_files:
        data_files = {split: _fetch(f, cache_dir) if "://" in f else f for split, f in data_files.items()}
        first = next(iter(data_files.values()))
        kind = first.rsplit(".", 1)[-1].lower()
        builder = {"parquet": "parquet", "csv": "csv", "tsv": "csv", "json": "json", "jsonl": "json"}.get(kind)
        if builder is None:
            raise InputError(f"{first}: cannot tell the format (expected .parquet, .csv, .tsv or .json)")
        kwargs: dict[str, Any] = {"delimiter": "\t"} if kind == "tsv" else {}
        what = ", ".join(data_files.values())
        try:
            ds = datasets.load_dataset(builder, data_files=data_files, cache_dir=cache_dir, **kwargs)
        except Exception as e:
            raise InputError(f"{what}: could not load with datasets ({type(e).__name__}: {e})") from e
    else:
        config = task.hub_config or task.short
        what = f"{source} (config {config})"
        try:
            ds = datasets.load_dataset(str(source), config, cache_dir=cache_dir)
        except Exception as e:
            raise InputError(f"{what}: could not load with datasets ({type(e).__name__}: {str(e)[:200]}); "
                             f"is config {config!r} declared in its README.md?") from e
    out: dict[str, Split] = {}
    for name, table in ds.items():
        split = SPLIT_ALIASES.get(name, name)
        cols = table.column_names
        if "sequence" not in cols or "label" not in cols:
            raise InputError(f"{what}: split {split_name} has columns {cols}, expected 'sequence' and 'label'")
        seqs, labels = [], []
        tasks = table["task"] if "task" in cols else None
        for i, (seq, lab) in enumerate(zip(table["sequence"], table["label"])):
            if tasks is not None and task.hub_config and tasks[i] != task.hub_config:
                continue
            where = f"{what}, split {split_name}, row {i}"
            seqs.append(clean_sequence(seq or "", where))
            labels.append(parse_label(str(lab) if lab is not None else "", where))
        if not seqs:
            raise InputError(f"{what}: split {split_name} has no rows for task {task.hub_config!r}")
        out[split] = Split(seqs, labels, f"{what}:{split_name}")
    return out


def is_datasets_dir(path: Path) -> bool:
    readme = path / "README.md"
    if not (path.is_dir() and readme.is_file()):
        return False
    head = readme.read_text(encoding="utf-8", errors="replace")[:20000]
    return head.startswith("---") and "\nconfigs:" in head


def parquet_files(path: Path) -> dict[str, str]:
    """split -> file for a .parquet file or a directory of train/test .parquet files; {} otherwise."""
    if path.is_file() and path.suffix == ".parquet":
        return {split_name(path.stem) or "train": str(path)}
    if path.is_dir():
        found = {split_name(f.stem): str(f) for f in sorted(path.glob("*.parquet"))}
        return {k: v for k, v in found.items() if k}
    return {}


def parse_data_urls(spec: str) -> dict[str, str]:
    """"train=URL,test=URL" -> {"train": URL, "test": URL}; a bare URL is the train split."""
    files: dict[str, str] = {}
    for part in [p.strip() for p in spec.split(",") if p.strip()]:
        head, sep, rest = part.partition("=")
        if sep and "://" not in head:
            split = SPLIT_ALIASES.get(head.strip().lower())
            if split is None:
                raise InputError(f"--data {spec!r}: unknown split {head!r}; use train=URL,test=URL")
            files[split] = rest.strip()
        else:
            files["train"] = part
    return files

"""load_task_data: one task's splits from wherever they live, with sorted label ids and the provenance."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tinydnabert.errors import InputError
from tinydnabert.eval.tasks import hub
from tinydnabert.eval.tasks.files import TaskData, load_local
from tinydnabert.eval.tasks.registry import Task
from tinydnabert.io import data_dir


def load_task_data(task: Task, path: str | Path | None = None, cache_dir: str | None = None,
                   revision: str | None = "main") -> TaskData:
    """The task's splits with sorted label ids. `path` overrides where the data comes from:
    a local file/directory (a clone of an NT hub repository among them), or an http(s) URL of a
    parquet/csv file (read with `datasets`). `revision`: of the hub repository, for NT tasks without `path`."""
    provenance: dict[str, Any]
    if path is not None and "://" in str(path):
        files = hub.parse_data_urls(str(path))
        splits, source = hub.load_datasets(task, data_files=files, cache_dir=cache_dir), str(path)
        provenance = {"kind": "urls", "files": files}
    elif path is not None and hub.is_nt_clone(Path(path)):
        # a clone of an NT hub repository (script, README without configs, <task>/train.fna): its files, read directly
        (splits, provenance), source = hub.load_nt_clone(task, Path(path)), str(path)
    elif path is not None and hub.is_datasets_dir(Path(path)):
        # a dataset repository whose README.md declares the configs: what `datasets` can read without a script
        splits, source = hub.load_datasets(task, source=str(path), cache_dir=cache_dir), str(path)
        provenance = {"kind": "local", "path": str(Path(path).resolve())}
    elif path is not None and hub.parquet_files(Path(path)):
        files = hub.parquet_files(Path(path))
        splits, source = hub.load_datasets(task, data_files=files, cache_dir=cache_dir), str(path)
        provenance = {"kind": "local", "path": str(Path(path).resolve())}
    elif path is not None:
        splits, source = load_local(task, path), str(path)
        provenance = {"kind": "local", "path": str(Path(path).resolve())}
    elif task.local_path:
        p = data_dir() / task.local_path
        splits, source = load_local(task, p), str(p)
        provenance = {"kind": "local", "path": str(p.resolve())}
    elif task.hub_id:
        splits, provenance = hub.load_hub(task, revision=revision, cache_dir=cache_dir)
        source = f"hf://datasets/{task.hub_id}@{provenance['commit'] or revision}/{task.hub_config}"
    else:
        raise InputError(f"task {task.name!r} has no data source; pass --data PATH")
    if "train" not in splits and "dev" in splits and "test" in splits:
        # GUE's EMP and splice tasks ship only dev/test: dev is the training data (SOURCES.md).
        splits["train"] = splits.pop("dev")
    labels = sorted({lab for s in splits.values() for lab in s.labels}, key=lambda v: (isinstance(v, str), v))
    if task.num_classes and len(labels) > task.num_classes:
        raise InputError(f"{source}: {len(labels)} distinct labels {labels[:10]}, but task {task.name} has "
                         f"{task.num_classes} classes; is this the right --task for this --data?")
    if len(labels) < 2:
        raise InputError(f"{source}: only one distinct label ({labels}); a classification task needs two or more")
    return TaskData(task=task, splits=splits, labels=labels, source=source, provenance=provenance)

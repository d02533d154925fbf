"""Downstream classification tasks: the Nucleotide Transformer (NT) registry and the loaders.

A task is a named set of labelled DNA sequences in splits ("train", optionally "dev", "test").
Where the sequences come from:

  * the Hugging Face hub (the 18 original NT tasks and the 18 revised ones; the TinyDNABERT
    reference used the revised set), file by file: `<task>/train.fna` and `<task>/test.fna` through
    `huggingface_hub.hf_hub_download`, parsed by `read_fasta_split`. The repositories also hold a
    `datasets` loading script and a README without configs: the script is never run (datasets >= 4
    refuses scripts), so `datasets.load_dataset` cannot read them. The same layout from a clone works
    with `--data CLONE`. `TaskData.provenance` records the commit and the sha256 of every file read;
  * local files, by path (`load_task_data(task, path)`), in the formats the real data ships in:
      - a directory of `train.csv` / `dev.csv` / `test.csv` with `sequence,label` (GUE layout);
      - FASTA whose headers end in `|label` (the NT files' own format: `>chr1:100-400|1`),
        one file per split (`train.fna`, `test.fna`, ...);
      - one FASTA file per class (iEnhancer-2L), from the registry's file map or a directory
        `train/<label>.fa`, `test/<label>.fa`;
      - the NT revised TSV (`sequence,name,label,task`), filtered to the task's rows;
      - parquet / csv files served over http(s), or a directory whose README.md declares configs,
        read by `datasets`.

Labels: whatever the source calls them (integers or file-class names); `TaskData.labels` is the
SORTED list of distinct labels and a label's id is its index there, so ids never depend on file
or directory order. Sequences are upper-cased (soft-masked repeats are lower case); anything but
A/C/G/T/N is an `InputError` naming the file and row.

The published figures beside each NT task come from tinydnabert/published/nt_scores.csv (see its
SOURCE.md for where each column comes from).

The package: registry.py (Task, TASKS, GROUPS, names -> tasks), files.py (the local file formats, FASTA
through fasta.py), hub.py (the NT hub repositories, their clones, and what `datasets` reads; URLs
through download.py), load.py (load_task_data: one entry point over all of them).
"""

from tinydnabert.eval.tasks.files import (
           SPLIT_NAMES,
           Split,
           TaskData,
           clean_sequence,
           load_local,
           read_csv_split,
           read_fasta_split,
)
from tinydnabert.eval.tasks.hub import (
           NT_SPLIT_FILES,
           hub_endpoint,
           load_datasets,
           load_hub,
           load_nt_clone,
           parse_data_urls,
)
from tinydnabert.eval.tasks.load import load_task_data
from tinydnabert.eval.tasks.registry import (
           GROUPS,
           NT_ORIGINAL_HUB,
           NT_REVISED_HUB,
           TASKS,
           Task,
           adhoc_task,
           get_task,
           list_tasks,
           load_published_scores,
           resolve_tasks,
           task_summary,
)

__all__ = ["GROUPS", "NT_ORIGINAL_HUB", "NT_REVISED_HUB", "NT_SPLIT_FILES", "SPLIT_NAMES", "TASKS", "Split", "Task",
           "TaskData", "adhoc_task", "clean_sequence", "get_task", "hub_endpoint", "list_tasks", "load_datasets",
           "load_hub", "load_local", "load_nt_clone", "load_published_scores", "load_task_data", "parse_data_urls",
           "read_csv_split", "read_fasta_split", "resolve_tasks", "task_summary"]

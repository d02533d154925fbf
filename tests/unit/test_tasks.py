"""Task registry and loaders, on the real benchmark files (row counts from shared/data/SOURCES.md)."""

from __future__ import annotations

import csv
import functools
import http.server
import threading
from pathlib import Path

import pytest

from tinydnabert.errors import InputError
from tinydnabert.eval.tasks import (
    GROUPS,
    NT_ORIGINAL_HUB,
    NT_REVISED_HUB,
    TASKS,
    adhoc_task,
    get_task,
    load_datasets,
    load_published_scores,
    load_task_data,
    resolve_tasks,
)

# SOURCES.md: rows per split
GUE_COUNTS = {
    "gue/prom_300_tata": {"train": 4904, "dev": 613, "test": 613},
    "gue/prom_core_all": {"train": 47356, "dev": 5920, "test": 5920},
    "gue/H3": {"train": 1497, "test": 1497},                  # ships dev/test only: dev is the train split
    "gue/H3K4me3": {"train": 3680, "test": 3680},
    "gue/splice_reconstructed": {"train": 4562, "test": 4562},
    "gue/mouse_0": {"train": 6478, "dev": 810, "test": 810},
}


# ---------------------------------------------------------------------------------- registry

def test_registry_has_the_36_nt_tasks_with_published_figures(repo_root: Path):
    scores = load_published_scores()
    assert len(GROUPS["nt_original"]) == 18 and len(GROUPS["nt_revised"]) == 18
    for row in scores:
        t = TASKS[f"{row['benchmark']}/{row['task']}"]
        assert t.num_classes == int(row["classes"]) and t.seq_len_bp == int(row["seq_len_bp"])
        assert t.metric == "mcc"
        assert t.hub_id == (NT_ORIGINAL_HUB if row["benchmark"] == "nt_original" else NT_REVISED_HUB)
        assert t.hub_config == row["task"]
    pt = TASKS["nt_revised/promoter_tata"]
    assert pt.published == {"nt_ms_2_5b_mcc": 0.944, "reference_sota_mcc": 0.94,
                            "reference_scratch_mcc": 0.628, "reference_tinydnabert_mcc": 0.78}
    assert TASKS["nt_original/splice_sites_all"].num_classes == 3
    # the package data is the published table, unchanged, with its source note beside it
    pkg = repo_root / "tinydnabert" / "published"
    shared = repo_root.parent / "shared" / "reference" / "nt_scores.csv"
    if shared.is_file():
        assert (pkg / "nt_scores.csv").read_bytes() == shared.read_bytes()
    assert "GENERator" in (pkg / "SOURCE.md").read_text()


def test_task_names_resolve_and_unknown_names_say_what_to_do():
    assert get_task("promoter_tata").name == "nt_revised/promoter_tata"   # bare NT name = revised
    assert get_task("original/H3").name == "nt_original/H3"
    assert get_task("prom_300_tata").name == "gue/prom_300_tata"
    assert [t.name for t in resolve_tasks("gue/H3, promoter_tata")] == ["gue/H3", "nt_revised/promoter_tata"]
    assert len(resolve_tasks("all")) == 36 + len(GROUPS["local"])
    with pytest.raises(InputError, match="unknown task 'promotr_tata'.*--list-tasks"):
        get_task("promotr_tata")


# ---------------------------------------------------------------------------------- real files

@pytest.mark.parametrize("name", sorted(GUE_COUNTS))
def test_gue_csv_directories_parse_with_documented_row_counts(name, real_data):
    d = load_task_data(get_task(name))
    assert d.counts() == GUE_COUNTS[name]
    assert d.labels == list(range(TASKS[name].num_classes))
    assert all(set(s) <= set("ACGTN") for s in d.splits["test"].sequences[:200])
    assert {len(s) for s in d.splits["train"].sequences} == {TASKS[name].seq_len_bp}


def test_ienhancer_one_fasta_per_class(real_data):
    d = load_task_data(get_task("ienhancer/enhancers"))
    assert d.counts() == {"train": 1484 + 1484, "test": 200 + 200}
    assert d.labels == [0, 1]
    assert d.splits["train"].labels.count(1) == 1484 and d.splits["test"].labels.count(0) == 200
    assert {len(s) for s in d.splits["test"].sequences} == {200}          # multi-line records joined
    t = load_task_data(get_task("ienhancer/enhancers_types"))
    assert t.counts() == {"train": 742 + 742 + 1484, "test": 100 + 100 + 200}
    assert t.labels == [0, 1, 2]
    # layer 2 is partly soft-masked (lower case): sequences come out upper case
    raw = (real_data / "benchmark/iEnhancer2L/layer2/weak_742.txt").read_text()
    assert any(c.islower() for c in raw)
    assert all(s.isupper() for s in t.splits["train"].sequences)


def test_nt_revised_tsv_sample(real_data):
    path = real_data / "benchmark/nt_revised_sample/train.tsv"
    per_task: dict[str, int] = {}
    total = 0
    for row in load_published_scores():
        if row["benchmark"] == "nt_revised":
            try:
                d = load_task_data(TASKS[f"nt_revised_sample/{row['task']}"])
            except InputError as e:
                assert "only one distinct label" in str(e)  # a task with one label among the sample rows
                continue
            per_task[row["task"]] = d.counts()["train"]
            total += d.counts()["train"]
            assert len(d.labels) <= int(row["classes"])
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    assert len(rows) == 1500
    assert total == sum(1 for r in rows if r["task"] in per_task)
    assert per_task["splice_sites_all"] == sum(r["task"] == "splice_sites_all" for r in rows)
    # the same file addressed by path with an NT task name selects that task's rows
    d = load_task_data(get_task("splice_sites_all"), path)
    assert d.counts() == {"train": per_task["splice_sites_all"]} and d.labels == [0, 1, 2]


def test_nt_fasta_with_label_headers(tmp_path: Path, real_data):
    """The NT files' own format: '>chr:start-end|label' headers (taken from the real TSV's name column)."""
    with open(real_data / "benchmark/nt_revised_sample/train.tsv", newline="") as f:
        rows = [r for r in csv.DictReader(f, delimiter="\t") if r["task"] == "enhancers_types"]
    d = tmp_path / "enh"
    d.mkdir()
    half = len(rows) // 2
    for split, part in (("train", rows[:half]), ("test", rows[half:])):
        with open(d / f"{split}.fna", "w") as f:
            for r in part:
                seq = r["sequence"]
                f.write(f">{r['name']}\n" + "\n".join(seq[i:i + 60] for i in range(0, len(seq), 60)) + "\n")
    data = load_task_data(get_task("enhancers_types"), d)
    assert data.counts() == {"train": half, "test": len(rows) - half}
    assert data.splits["train"].labels == [int(r["label"]) for r in rows[:half]]
    assert data.splits["test"].sequences[0] == rows[half]["sequence"].upper()


def test_label_ids_are_sorted_not_file_ordered(tmp_path: Path):
    d = tmp_path / "t"
    d.mkdir()
    (d / "train.csv").write_text("sequence,label\nACGT,2\nACGA,0\nTTTT,1\nGGGG,2\n")
    (d / "test.csv").write_text("sequence,label\nACGT,1\nacgn,0\n")
    data = load_task_data(adhoc_task("t"), d)
    assert data.labels == [0, 1, 2]
    assert data.label_ids("train") == [2, 0, 1, 2]
    assert data.splits["test"].sequences == ["ACGT", "ACGN"]
    # one FASTA per class with class names: ids follow sorted names, not directory order
    for split in ("train", "test"):
        (tmp_path / "c" / split).mkdir(parents=True)
        for name, seq in (("weak", "ACGT"), ("strong", "GGCC"), ("non", "ATAT")):
            (tmp_path / "c" / split / f"{name}.fa").write_text(f">{name}1\n{seq}\n>{name}2\n{seq}A\n")
    c = load_task_data(adhoc_task("c"), tmp_path / "c")
    assert c.labels == ["non", "strong", "weak"]
    assert c.counts() == {"train": 6, "test": 6}


def test_plain_tsv_without_a_task_column(tmp_path: Path):
    """--data help promises train/test .tsv: a plain sequence<TAB>label file is the whole task."""
    d = tmp_path / "tsv"
    d.mkdir()
    (d / "train.tsv").write_text("sequence\tlabel\nACGT\t1\nAAAA\t0\nCCCC\t1\n")
    (d / "test.tsv").write_text("sequence\tlabel\nGGGG\t0\nTTTT\t1\n")
    data = load_task_data(adhoc_task("mine"), d)
    assert data.counts() == {"train": 3, "test": 2} and data.label_ids("train") == [1, 0, 1]


# ---------------------------------------------------------------------------------- bad input

def test_bad_sequence_names_file_and_row(tmp_path: Path):
    d = tmp_path / "bad"
    d.mkdir()
    (d / "train.csv").write_text("sequence,label\nACGT,0\nACGT,1\nACXGT,0\n")
    (d / "test.csv").write_text("sequence,label\nACGT,0\n")
    with pytest.raises(InputError, match=r"bad/train\.csv, line 4: character 'X' at position 3 .*A/C/G/T/N"):
        load_task_data(adhoc_task("bad"), d)


def test_unreadable_files_are_input_errors_naming_the_file(tmp_path: Path):
    d = tmp_path / "enc"
    d.mkdir()
    (d / "train.csv").write_bytes(b"sequence,label\nACGT,0\n\xff\xfeAC,1\n")   # not UTF-8
    (d / "test.csv").write_text("sequence,label\nACGT,0\nACGT,1\n")
    with pytest.raises(InputError, match=r"enc/train\.csv: cannot read as UTF-8 text"):
        load_task_data(adhoc_task("enc"), d)
    (tmp_path / "cut.csv.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")            # truncated gzip
    with pytest.raises(InputError, match=r"cut\.csv\.gz: cannot read as UTF-8 text \(gzip\)"):
        load_task_data(adhoc_task("cut"), tmp_path / "cut.csv.gz")


def test_missing_labels_are_errors(tmp_path: Path):
    d = tmp_path / "nolabel"
    d.mkdir()
    (d / "train.csv").write_text("sequence,label\nACGT,0\nACGT\n")
    (d / "test.csv").write_text("sequence,label\nACGT,0\n")
    with pytest.raises(InputError, match=r"train\.csv, line 3: missing label"):
        load_task_data(adhoc_task("x"), d)
    (d / "train.csv").write_text("sequence,label\nACGT,0\nACGT,\n")
    with pytest.raises(InputError, match=r"line 3: missing label"):
        load_task_data(adhoc_task("x"), d)
    f = tmp_path / "train.fna"
    f.write_text(">chr1:1-5|1\nACGTA\n>chr1:6-10\nACGTA\n")
    with pytest.raises(InputError, match=r"record 'chr1:6-10' \(record 2\): missing label.*\|LABEL"):
        load_task_data(adhoc_task("x"), f)
    with pytest.raises(InputError, match="lacks 'sequence' and 'label'"):
        (d / "train.csv").write_text("seq,y\nACGT,0\n")
        load_task_data(adhoc_task("x"), d)
    with pytest.raises(InputError, match="not found"):
        load_task_data(adhoc_task("x"), tmp_path / "nowhere")


# ---------------------------------------------------------------------------------- datasets path

def _tsv_to_parquet(real_data: Path, out: Path) -> dict[str, int]:
    import pandas as pd

    df = pd.read_csv(real_data / "benchmark/nt_revised_sample/train.tsv", sep="\t")
    out.mkdir()
    df.iloc[:1000].to_parquet(out / "train.parquet")
    df.iloc[1000:].to_parquet(out / "test.parquet")
    sel = df[df.task == "splice_sites_all"]
    return {"train": int((sel.index < 1000).sum()), "test": int((sel.index >= 1000).sum())}


def test_parquet_goes_through_datasets(tmp_path: Path, real_data):
    """Parquet (what the hub serves, with a `task` column) read by `datasets`, filtered to the task."""
    expect = _tsv_to_parquet(real_data, tmp_path / "pq")
    d = load_task_data(get_task("splice_sites_all"), tmp_path / "pq", cache_dir=str(tmp_path / "cache"))
    assert d.counts() == expect and d.labels == [0, 1, 2]


def test_http_urls_on_localhost(tmp_path: Path, real_data):
    """--data train=URL,test=URL from a server on 127.0.0.1 (no other network)."""
    expect = _tsv_to_parquet(real_data, tmp_path / "srv")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path / "srv"))
    handler.log_message = lambda *a, **k: None
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{srv.server_address[1]}"
        d = load_task_data(get_task("splice_sites_all"), f"train={base}/train.parquet,test={base}/test.parquet",
                           cache_dir=str(tmp_path / "cache"))
        assert d.counts() == expect
        with pytest.raises(InputError, match="missing.parquet: download failed"):
            load_task_data(get_task("splice_sites_all"), f"train={base}/missing.parquet",
                           cache_dir=str(tmp_path / "cache"))
    finally:
        srv.shutdown()


def test_readme_configs_repository_copy_through_datasets(tmp_path: Path, real_data):
    """`datasets.load_dataset(repo, config)` on a local dataset repository whose README.md declares one config
    per task, with the real sample rows. (The NT hub repositories are not like this: they ship a loading script
    and no configs, and are read file by file: tests/test_nt_hub.py.)"""
    import pandas as pd

    df = pd.read_csv(real_data / "benchmark/nt_revised_sample/train.tsv", sep="\t")
    repo = tmp_path / "nucleotide_transformer_downstream_tasks_revised"
    configs = []
    for name in ("promoter_all", "splice_sites_all"):
        sel = df[df.task == name].reset_index(drop=True)
        (repo / name).mkdir(parents=True)
        sel.iloc[: len(sel) // 2].to_parquet(repo / name / "train.parquet")
        sel.iloc[len(sel) // 2:].to_parquet(repo / name / "test.parquet")
        configs.append(f"- config_name: {name}\n  data_files:\n  - split: train\n    path: {name}/train.parquet\n"
                       f"  - split: test\n    path: {name}/test.parquet\n")
    (repo / "README.md").write_text("---\nconfigs:\n" + "".join(configs) + "---\n")
    splits = load_datasets(get_task("splice_sites_all"), source=str(repo), cache_dir=str(tmp_path / "cache"))
    n = int((df.task == "splice_sites_all").sum())
    assert {k: len(v.sequences) for k, v in splits.items()} == {"train": n // 2, "test": n - n // 2}
    assert sorted(set(splits["test"].labels)) == [0, 1, 2]
    # the same through --data
    d = load_task_data(get_task("promoter_all"), repo, cache_dir=str(tmp_path / "cache"))
    assert sum(d.counts().values()) == int((df.task == "promoter_all").sum()) and d.labels == [0, 1]

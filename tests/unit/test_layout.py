"""The package's shape: imports flow one way (no cycle, function-level imports included), the model
knows nothing of DeepSpeed, and every on-disk name has one definition."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "tinydnabert"


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, modules: set[str] | None = None) -> set[str]:
    """Every module this file imports, anywhere in it (a function-level import is still an import).
    `from pkg import mod` is an edge to pkg.mod, not to pkg, when pkg.mod is one of `modules`."""
    mod = _module_name(path)
    package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            subs = {f"{target}.{a.name}" for a in node.names}  # `from . import checkpoint`
            found.update(subs)
            if modules is None or not subs <= modules:
                found.add(target)
    return found


def _graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in PKG.rglob("*.py")}
    return {m: {i for i in _imports(p, set(files)) if i in files and i != m} for m, p in files.items()}


def test_import_graph_has_no_cycle():
    graph = _graph()
    assert "tinydnabert.train" in graph and "tinydnabert.checkpoint" in graph
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        path.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(n):] + [n]))
            if n not in state:
                visit(n)
        path.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_cycle_detection_sees_function_level_imports(tmp_path):
    """The check itself: a function-level `from .train import x` is an edge (the old export -> train cycle)."""
    f = tmp_path / "tinydnabert" / "export.py"
    f.parent.mkdir()
    f.write_text("def g():\n    from .train import resolve_checkpoint\n    from . import checkpoint\n")
    global PKG
    saved, PKG = PKG, tmp_path / "tinydnabert"
    try:
        assert {"tinydnabert.train", "tinydnabert.checkpoint"} <= _imports(f)
    finally:
        PKG = saved


def test_downstream_modules_are_not_imported_upstream():
    graph = _graph()
    assert not {i for i in _imports(PKG / "model.py") if i.split(".")[0] == "deepspeed"}, "model.py imports DeepSpeed"
    assert "tinydnabert.train" not in graph["tinydnabert.export"]
    assert "tinydnabert.train" not in graph["tinydnabert.checkpoint"]
    for upstream in ("fasta", "segment", "tokenizer", "shards", "formats", "preprocess", "data", "model"):
        for downstream in ("train", "export", "finetune", "benchmark", "quickstart", "checkpoint"):
            assert f"tinydnabert.{downstream}" not in graph[f"tinydnabert.{upstream}"], (upstream, downstream)


def test_on_disk_names_are_defined_once():
    """A constant of the checkpoint or shard format is assigned in exactly one module."""
    names = {"MARKER", "MODEL_STATES", "CHECKPOINTS", "LATEST", "MANIFEST", "TOKENIZER_FILE", "IDS_MEMBER",
             "META_MEMBER", "SPECIAL_TOKENS", "IGNORE_INDEX", "FORMAT_VERSION", "TB_DIR", "EXPORT_DIR",
             "OBJECTIVE_PREFIX", "BOS_ID", "PAD_ID", "EOS_ID", "MASK_ID", "NUM_SPECIAL"}
    where: dict[str, list[str]] = {}
    for p in PKG.rglob("*.py"):
        for node in ast.parse(p.read_text()).body:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
                node, ast.AnnAssign) else []
            for t in targets:
                if isinstance(t, ast.Name) and t.id in names:
                    where.setdefault(t.id, []).append(p.name)
    twice = {k: v for k, v in where.items() if len(v) > 1}
    assert not twice, f"defined in several modules: {twice}"
    assert {"MARKER", "MANIFEST", "SPECIAL_TOKENS"} <= set(where)


def test_no_path_hacks():
    repo = PKG.parent
    for p in [*repo.glob("tinydnabert/**/*.py"), *repo.glob("launch/*.py"), *repo.glob("benchmarks/*.py"),
              *repo.glob("tests/**/*.py")]:
        text = p.read_text()
        if p.name == "test_layout.py":
            continue
        assert "sys.path.insert" not in text and "spec_from_file_location" not in text, p

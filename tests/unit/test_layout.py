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
    assert "tinydnabert.pretrain.train" in graph and "tinydnabert.pretrain.checkpoint" in graph
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


# The layers, lowest first: a module may import its own layer and the ones before it, never one after.
# The top-level modules (errors, io, console, config, formats) are below every layer.
LAYERS = ("prep", "pretrain", "eval", "app")


def _layer(module: str) -> int:
    if module == "tinydnabert.__main__":  # `python -m tinydnabert`: the command line, so the app layer
        return len(LAYERS)
    parts = module.split(".")
    return LAYERS.index(parts[1]) + 1 if len(parts) > 2 and parts[1] in LAYERS else 0


def _upward(graph: dict[str, set[str]], layer: str) -> set[tuple[str, str]]:
    level = LAYERS.index(layer) + 1 if layer else 0
    return {(m, i) for m, deps in graph.items() if _layer(m) == level for i in deps if _layer(i) > level}


def test_top_level_modules_import_no_layer():
    assert not _upward(_graph(), ""), "errors / io / console / config / formats must stay below every layer"


def test_prep_imports_nothing_above_it():
    assert not _upward(_graph(), "prep"), "prep/ may import only the top-level modules"


def test_pretrain_imports_nothing_above_it():
    assert not _upward(_graph(), "pretrain"), "pretrain/ may import prep/ and the top level, not eval/ or app/"


def test_eval_imports_nothing_above_it():
    assert not _upward(_graph(), "eval"), "eval/ may import pretrain/, prep/ and the top level, not app/"


def test_layer_rule_sees_an_upward_import():
    """The check itself: prep importing pretrain is an upward edge."""
    graph = {"tinydnabert.prep.fasta": {"tinydnabert.pretrain.train", "tinydnabert.errors"}}
    assert _upward(graph, "prep") == {("tinydnabert.prep.fasta", "tinydnabert.pretrain.train")}


def test_model_and_checkpoints_stand_alone():
    graph = _graph()
    model = PKG / "pretrain" / "model.py"
    assert not {i for i in _imports(model) if i.split(".")[0] == "deepspeed"}, "model.py imports DeepSpeed"
    assert "tinydnabert.pretrain.train" not in graph["tinydnabert.pretrain.export"]
    assert "tinydnabert.pretrain.train" not in graph["tinydnabert.pretrain.checkpoint"]


def test_no_private_name_is_imported_from_another_module():
    """`from .x import _helper` means the helper has two owners; make it public or move it."""
    found = []
    for p in PKG.rglob("*.py"):
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("tinydnabert")):
                found += [f"{p.relative_to(PKG)}: {a.name}" for a in node.names
                          if a.name.startswith("_") and not a.name.startswith("__")]
    assert not found, found


def test_no_module_is_too_long():
    """A module over ~600 lines does several jobs; split it by job."""
    long = {str(p.relative_to(PKG)): n for p in PKG.rglob("*.py") if (n := len(p.read_text().splitlines())) > 600}
    assert not long, long


def test_package_reads_no_file_of_the_checkout():
    """An installed package has no checkout around it: what it reads at run time ships inside it."""
    for p in PKG.rglob("*.py"):
        assert "parents[1]" not in p.read_text(), f"{p}: reads a file through Path(__file__).parents[1]"


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


# ------------------------------------------------------------------------------------------------ the tests

TESTS = PKG.parent / "tests"


def _test_module_imports(path: Path) -> list[str]:
    """The imports in `path` that name a test module (test_*), however spelled: `from test_x import f` (a
    sibling on sys.path), `from tests.integration.test_x import f`, `from tests.unit import test_x`,
    `from .test_x import f`, `import tests.unit.test_x`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            names = [module]
            if node.level or module == "tests" or module.startswith("tests."):  # a name from a test package
                names += [f"{module}.{a.name}" for a in node.names]
        else:
            continue
        if any(part.startswith("test_") for name in names for part in name.split(".")):
            found.append(ast.unparse(node))
    return found


def test_no_test_module_imports_another():
    """Shared test code has one home: tests/helpers.py (functions) and the conftest.py files (fixtures). A test
    module that is also a library (the old `from test_pretrain import launch`) runs under two names, and its
    tests move with every refactor of its helpers."""
    found = {str(p.relative_to(TESTS)): imports for p in sorted(TESTS.rglob("*.py"))
             if (imports := _test_module_imports(p))}
    assert not found, f"move what they share to tests/helpers.py: {found}"


def test_test_import_rule_sees_every_spelling(tmp_path):
    """The check itself: each way of importing a test module is caught; helpers and the package are not."""
    f = tmp_path / "test_x.py"
    f.write_text("from test_pretrain import launch\nimport tests.unit.test_data\nfrom tests.integration import "
                 "test_elastic\nfrom .test_faults import flip\nfrom tests.helpers import wait\nimport tests.helpers\n"
                 "from tinydnabert.eval.tasks import test_split\n")
    assert _test_module_imports(f) == ["from test_pretrain import launch", "import tests.unit.test_data",
                                       "from tests.integration import test_elastic", "from .test_faults import flip"]

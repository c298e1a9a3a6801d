"""The house stays the flow: each stage imports only itself and the stages before it, and no
module imports itself back through others (docs/ARCHITECTURE.md draws the map).

Imports are read with `ast` from the source, including those inside functions (a lazy
import is still a dependency), so the test needs nothing installed and cannot be fooled by
import order.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "uldkit"

# The flow, listed once, from the ground up. A module's stage is its first path part under
# src/uldkit/ (a folder, or a loose module at the root).
STAGES: tuple[tuple[str, ...], ...] = (
    ("errors", "io"),  # the ground: the error family (and optional extras), atomic writes
    ("data",),  # QA and document sets, loaders, formatting, collators
    ("models",),  # loading, safety scan, tokenizers, scoring, generation
    ("training",),  # the training loop, losses, fine-tuning, the run directory
    ("methods",),  # the baselines, one file each, and their registry
    ("uld",),  # ULD itself and offset unlearning
    ("unlearning",),  # one run end to end: catalog, ready data, train, save, load back
    ("eval",),  # benchmarks and metrics
    ("attacks",),  # relearning, ...
    ("report",),  # results to tables, plots, HTML
    ("serve",),  # the HTTP server and playground
    ("demo",),  # the end-to-end story
    ("__init__",),  # the front door
    ("cli",),  # thin commands over the front door
    ("__main__",),
)
RANK = {name: rank for rank, names in enumerate(STAGES) for name in names}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(parts)


def stage_of(module: str) -> str:
    parts = module.split(".")
    return "__init__" if len(parts) == 1 else parts[1]


def imported_modules(path: Path, known: set[str]) -> set[str]:
    """The uldkit modules `path` imports, resolved to the most specific known module."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from uldkit.x import y` imports the module uldkit.x.y where there is one,
            # else the name y from uldkit.x.
            names = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in known
                     else node.module for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            raise AssertionError(f"{path}: relative import; write the whole uldkit path")
        else:
            continue
        for name in names:
            if name.split(".")[0] != "uldkit":
                continue
            while name not in known and "." in name:
                name = name.rsplit(".", 1)[0]
            if name in known:
                found.add(name)
    return found


def import_graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    known = set(files)
    graph = {}
    for module, path in files.items():
        targets = imported_modules(path, known)
        # Importing a package's submodule runs the package's __init__, which is no
        # dependency of the importer's design; keep only the modules named.
        graph[module] = {t for t in targets if t != module}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_every_module_has_a_stage():
    unplaced = sorted(m for m in import_graph() if stage_of(m) not in RANK)
    assert not unplaced, f"modules outside the listed stages: {unplaced}"


def test_no_stage_imports_a_later_stage():
    upward = [
        f"{module} ({stage_of(module)}) imports {target} ({stage_of(target)})"
        for module, targets in import_graph().items()
        for target in sorted(targets)
        if RANK[stage_of(target)] > RANK[stage_of(module)]
    ]
    assert not upward, "imports that run back up the flow:\n" + "\n".join(upward)


def test_no_import_cycles():
    found = cycles(import_graph())
    assert not found, f"import cycles: {found}"


def test_the_product_imports_nothing_from_tests_or_scripts():
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                top = name.split(".")[0]
                assert top not in {"tests", "conftest", "scripts", "benchmarks",
                                   "kill_resume_harness"}, f"{path} imports {name}"


def test_nothing_loose_at_the_root_but_the_front_door_and_the_ground():
    loose = sorted(p.stem for p in PACKAGE.glob("*.py"))
    assert loose == ["__init__", "__main__", "errors", "io"]


@pytest.mark.parametrize("mistake", ["upward", "cycle"])
def test_the_checks_catch_what_they_claim(mistake):
    # The rules run on a small made-up graph too, so a check that could never fail shows.
    if mistake == "upward":
        graph = {"uldkit.data.x": {"uldkit.cli.y"}, "uldkit.cli.y": set()}
        assert any(RANK[stage_of(t)] > RANK[stage_of(m)] for m, ts in graph.items() for t in ts)
    else:
        graph = {"uldkit.demo.a": {"uldkit.demo.b"}, "uldkit.demo.b": {"uldkit.demo.a"}}
        assert cycles(graph) == [["uldkit.demo.a", "uldkit.demo.b"]]


# --- the run directory alone names a run's files -----------------------------------------------
RUN_DIR = PACKAGE / "training" / "run_dir.py"
FILE_NAME = re.compile(r"^\w[\w.-]*\.(json|jsonl|safetensors|png|md|html)$")
# Pieces of names that run_dir.py builds with an f-string (`seed-<s>`, `<set>.samples.jsonl`).
NAME_PIECES = ("seed-", ".samples.jsonl")


def run_dir_file_names() -> set[str]:
    """Every file name run_dir.py spells (its name tables and constants)."""
    tree = ast.parse(RUN_DIR.read_text(encoding="utf-8"))
    return {node.value for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
            and FILE_NAME.match(node.value)}


def run_dir_literals(source: str, names: set[str]) -> list[str]:
    """The string constants in `source` that spell one of `names`, or a piece of an f-string
    that is one of NAME_PIECES."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.JoinedStr):
            found += [f"line {node.lineno}: f-string with {part.value!r}" for part in node.values
                      if isinstance(part, ast.Constant) and part.value in NAME_PIECES]
        elif (isinstance(node, ast.Constant) and isinstance(node.value, str)
              and node.value in names):
            found.append(f"line {node.lineno}: {node.value!r}")
    return found


def test_only_the_run_directory_module_spells_a_run_file_name():
    names = run_dir_file_names()
    assert {"run_config.json", "eval_log_aggregated.json", "eval_log_forget.json",
            "sweep.json", "frontier.md", "frontier.png", "report.html"} <= names
    spelled = [f"{path.relative_to(PACKAGE)} {hit}"
               for path in sorted(PACKAGE.rglob("*.py")) if path != RUN_DIR
               for hit in run_dir_literals(path.read_text(encoding="utf-8"), names)]
    assert not spelled, "run-directory file names outside training/run_dir.py (use RunDir):\n" \
        + "\n".join(spelled)


def test_the_file_name_check_catches_what_it_claims():
    names = run_dir_file_names()
    source = ('out / "eval_log_aggregated.json"\nout / f"seed-{seed}"\n'
              'p / f"{stem}.samples.jsonl"\n"""mentions frontier.md in prose"""\n')
    assert len(run_dir_literals(source, names)) == 3


def test_a_method_is_one_file_under_100_lines():
    # The promise: adding a method is one file under 100 lines; what methods share
    # lives in the stage's shared modules (editing, activations, hyperparameters, ...).
    method_files = [path for path in sorted((PACKAGE / "methods").glob("*.py"))
                    if "@register" in path.read_text(encoding="utf-8")]
    assert len(method_files) >= 8
    too_long = {path.name: lines for path in method_files
                if (lines := len(path.read_text(encoding="utf-8").splitlines())) >= 100}
    assert not too_long, f"method files of 100 lines or more: {too_long}"

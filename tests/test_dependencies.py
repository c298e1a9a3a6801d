"""Every package uldkit imports is declared in pyproject.toml: a core dependency, or, for an
optional feature's package (uldkit.errors.EXTRAS), in that feature's extra. Found by reading
every import statement in src/uldkit and asking the installed distributions which one
provides each top-level module."""

from __future__ import annotations

import ast
import re
import sys
from importlib import metadata
from pathlib import Path

import pytest

import uldkit
from uldkit.errors import extra_for_module

tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11+")

SRC = Path(uldkit.__file__).parent
PYPROJECT = SRC.parents[1] / "pyproject.toml"


def _normalise(distribution: str) -> str:
    return re.sub(r"[-_.]+", "-", distribution).lower()


def _requirement_name(requirement: str) -> str:
    return _normalise(re.match(r"[A-Za-z0-9._-]+", requirement).group())


def _declared() -> tuple[set[str], dict[str, set[str]]]:
    """The core dependencies' names and each extra's."""
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    core = {_requirement_name(r) for r in project["dependencies"]}
    extras = {name: {_requirement_name(r) for r in requirements}
              for name, requirements in project["optional-dependencies"].items()}
    return core, extras


def imported_modules(root: Path) -> dict[str, list[str]]:
    """Top-level module of every absolute import under `root` -> where it is imported."""
    found: dict[str, list[str]] = {}
    for file in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(file.read_text(), str(file))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                where = f"{file.relative_to(root.parent)}:{node.lineno}"
                found.setdefault(name.split(".")[0], []).append(where)
    return found


def undeclared_imports(
    imports: dict[str, list[str]],
    providers: dict[str, list[str]],
    core: set[str],
    extras: dict[str, set[str]],
) -> list[str]:
    """One line per third-party import whose distribution pyproject.toml does not declare
    where it must be: in the module's extra when uldkit gates it behind one, else in the
    core dependencies."""
    problems = []
    for module, places in sorted(imports.items()):
        if module in sys.stdlib_module_names or module in ("__future__", "uldkit"):
            continue
        distributions = {_normalise(d) for d in providers.get(module, [])}
        if not distributions:
            problems.append(f"{module} ({places[0]}): no installed distribution provides it")
            continue
        extra = extra_for_module(module)
        allowed = extras.get(extra.name, set()) if extra else core
        where = f"extra '{extra.name}'" if extra else "dependencies"
        if not distributions & allowed:
            problems.append(f"{module} ({places[0]}): {'/'.join(sorted(distributions))} "
                            f"is not in pyproject.toml's {where}")
    return problems


def test_every_import_of_uldkit_is_declared_where_it_is_needed():
    core, extras = _declared()
    imports = imported_modules(SRC)
    assert {"torch", "transformers", "huggingface_hub", "click"} <= imports.keys()
    problems = undeclared_imports(imports, metadata.packages_distributions(), core, extras)
    assert not problems, "\n".join(problems)


def test_an_undeclared_or_misplaced_import_is_reported(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "a.py").write_text(
        "import os, json\nfrom __future__ import annotations\nfrom . import b\n"
        "import yaml.constructor\ndef lazy():\n    import fastapi\n    import numpy as np\n"
        "from not_installed_anywhere import thing\n")
    providers = {"yaml": ["PyYAML"], "fastapi": ["fastapi"], "numpy": ["numpy"]}
    imports = imported_modules(package)
    assert set(imports) == {"os", "json", "__future__", "yaml", "fastapi", "numpy",
                            "not_installed_anywhere"}
    problems = undeclared_imports(imports, providers, core={"numpy", "fastapi"},
                                  extras={"serve": {"uvicorn"}})
    assert problems == [
        "fastapi (pkg/a.py:6): fastapi is not in pyproject.toml's extra 'serve'",
        "not_installed_anywhere (pkg/a.py:8): no installed distribution provides it",
        "yaml (pkg/a.py:4): pyyaml is not in pyproject.toml's dependencies",
    ]
    assert undeclared_imports({"numpy": ["x.py:1"]}, providers, {"numpy"}, {}) == []

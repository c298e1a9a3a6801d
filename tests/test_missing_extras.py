"""A feature whose optional extra is not installed says, in one line, what to pip install
(exit 2), instead of ending in a ModuleNotFoundError traceback. The missing package is
simulated with `sys.modules[name] = None`, which makes every import of it fail."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import uldkit
from uldkit.errors import EXTRAS, extra_for_module

# The children run in a scratch directory; they import this uldkit, not an installed one.
ENV = {**os.environ, "PYTHONPATH": str(Path(uldkit.__file__).parents[1])}


def _run_without(module: str, args: list[str], cwd) -> subprocess.CompletedProcess:
    script = (f"import sys\nsys.modules[{module!r}] = None\n"
              f"from uldkit.cli import main\nmain({args!r})\n")
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=cwd, env=ENV, timeout=300)


@pytest.mark.parametrize(("module", "args", "install"), [
    ("fastapi", ["serve", "--model", "m"], 'pip install "uldkit[serve]"'),
    ("uvicorn", ["serve", "--model", "m"], 'pip install "uldkit[serve]"'),
    ("httpx", ["serve", "--model", "m"], 'pip install "uldkit[serve]"'),
    ("datasets", ["data", "show", "--data", "someone/qa-set"], 'pip install "uldkit[datasets]"'),
])
def test_a_missing_extra_is_one_line_naming_what_to_install(module, args, install, tmp_path):
    done = _run_without(module, args, tmp_path)
    assert done.returncode == 2, done.stderr
    err = done.stderr.strip()
    assert "\n" not in err and "Traceback" not in err, err
    assert f"'{module}' package" in err and install in err


def test_a_stray_import_of_an_extra_is_caught_by_the_cli(tmp_path):
    # Any command path importing an extra's package unguarded still ends in the one line.
    script = ("import sys\nsys.modules['fastapi'] = None\n"
              "from uldkit.cli import main\nfrom uldkit.cli.app import app\n"
              "@app.command('needs-fastapi')\ndef needs_fastapi() -> None:\n"
              "    import fastapi  # noqa: F401\n"
              "main(['needs-fastapi'])\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=tmp_path, env=ENV, timeout=300)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().count("\n") == 0
    assert 'pip install "uldkit[serve]"' in done.stderr


def test_every_extra_in_pyproject_is_known_with_its_packages():
    import tomllib

    declared = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())[
        "project"]["optional-dependencies"]
    for extra in EXTRAS:
        names = {spec.split(">")[0].split("=")[0].split("[")[0].replace("-", "_")
                 for spec in declared[extra.name]}  # PyPI's lm-eval installs lm_eval
        # and optimum-quanto installs optimum.quanto
        assert {m.replace(".", "_") for m in extra.modules} <= names, (extra.name, names)
    assert extra_for_module("fastapi.responses").name == "serve"
    assert extra_for_module("torch") is None
    assert extra_for_module("optimum.quanto.nn").name == "quantize"

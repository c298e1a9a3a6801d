"""`import uldkit`: load, unlearn and evaluate, as the README and the docstrings show them."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import uldkit

README = Path(__file__).resolve().parents[1] / "README.md"


def _readme_block() -> str:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Use it from Python"):]
    return re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)


def _docstring_example(function) -> str:
    doc = inspect.getdoc(function)
    return textwrap.dedent(doc[doc.index("Example::") + len("Example::"):]).strip() + "\n"


@pytest.fixture(scope="module")
def readme_run(trained_world, tmp_path_factory):
    """The README's block, verbatim, where runs/demo/target is the test's target."""
    work = tmp_path_factory.mktemp("readme")
    (work / "runs" / "demo").mkdir(parents=True)
    (work / "runs" / "demo" / "target").symlink_to(trained_world.target)
    namespace: dict = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(work)
        exec(compile(_readme_block(), "README.md", "exec"), namespace)  # noqa: S102
    return work / "runs" / "py-uld", namespace


def test_the_readme_block_runs_and_gives_a_uld_model(readme_run):
    from transformers import GenerationMixin

    from uldkit.uld.hf_model import ULDForCausalLM

    out, namespace = readme_run
    assert (out / "uldkit_model.json").exists()
    assert isinstance(namespace["model"], ULDForCausalLM)
    assert isinstance(namespace["model"], GenerationMixin)
    assert 0.0 <= namespace["metrics"]["figures"]["model_utility"] <= 1.0


def test_each_docstring_example_runs(readme_run, trained_world, tmp_path, capsys):
    run_dir, _ = readme_run
    namespace = {"uldkit": uldkit, "run_dir": run_dir, "target_dir": str(trained_world.target),
                 "out_dir": str(tmp_path / "gd")}
    for function in (uldkit.unlearn, uldkit.load, uldkit.evaluate):
        exec(compile(_docstring_example(function), function.__name__, "exec"), namespace)  # noqa: S102
    printed = capsys.readouterr().out.splitlines()
    assert any("steps, final loss" in line for line in printed)
    assert 0.0 <= float(printed[-1]) <= 1.0
    assert (tmp_path / "gd" / "model.safetensors").exists()


def test_in_memory_data_and_models(trained_world, tmp_path):
    from uldkit.models.loading import load_model

    model, tokenizer = load_model(trained_world.target)
    forget = [{"question": "Where was Morbel Fenanlo born?", "answer": "In Calda Island."}]
    run = uldkit.unlearn(model, tokenizer, forget=forget, retain="retain90", people=20,
                         method="grad_ascent", out=tmp_path / "ga", epochs=1, lr=1e-3,
                         show_progress=False)
    assert run.steps >= 1
    # ULD keeps the target: a model in memory must say where it can be loaded again.
    with pytest.raises(uldkit.errors.ConfigError, match="target_path"):
        model.name_or_path = ""  # as for a model built in memory
        uldkit.unlearn(model, tokenizer, forget=forget, retain="none", method="uld",
                       out=tmp_path / "uld", epochs=1)


def test_import_uldkit_stays_light():
    code = "import sys, uldkit; print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["False", "False"]
    assert set(uldkit.__all__) >= {"load", "unlearn", "evaluate"}

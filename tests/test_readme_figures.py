"""The README's quality table is written by scripts/readme_figures.py from its results file.

Every number in the table must come from docs/readme_figures.json (formatted as the script
formats it), and the block must be exactly what the script renders from that file: a
figure edited by hand, or a results file changed without rerunning the script, fails here.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("readme_figures",
                                                  ROOT / "scripts" / "readme_figures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_number_in_the_readme_table_is_in_the_results_file():
    script = _script()
    figures = json.loads((ROOT / "docs" / "readme_figures.json").read_text(encoding="utf-8"))
    assert len(figures["seeds"]) >= 3
    for kind in script.blocks_of(figures):
        block = script.readme_block(ROOT / "README.md", kind)
        assert block is not None, f"README.md has no readme_figures.py {kind} block"
        assert f"written by {script.SCRIPT} on {figures['written']}" in block
        assert script.unbacked_numbers(block, figures) == []
        assert block == script.block(figures, kind)


def test_a_hand_edited_figure_is_caught():
    script = _script()
    figures = json.loads((ROOT / "docs" / "readme_figures.json").read_text(encoding="utf-8"))
    block = script.block(figures)
    utility = figures["rows"]["uld"]["model_utility"]["mean"]
    shown = f"{utility:.3f}"
    edited = block.replace(shown, f"{utility + 0.05:.3f}", 1)
    assert edited != block
    assert script.unbacked_numbers(edited, figures) == [f"{utility + 0.05:.3f}"]


def test_the_real_model_table_is_what_its_script_rendered_from_its_results(tofu_dir):
    """The Gemma 3 270M table (benchmarks/real_model.py) is rendered from the raw numbers it
    saved beside it: a hand-edited figure, or numbers changed without the table, fail here."""
    spec = importlib.util.spec_from_file_location("real_model",
                                                  ROOT / "benchmarks" / "real_model.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rows = json.loads((ROOT / "benchmarks" / "results" / "real_model.json").read_text())
    assert {"target", "uld", "grad_diff", "npo"} <= set(rows)
    authors = json.loads((tofu_dir / "real_authors_perturbed.json").read_text())
    forget = [row for i, row in enumerate(authors) if i % bench.FORGET_EVERY == 0]
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split(bench.README_BEGIN, 1)[1].split(bench.README_END, 1)[0]
    assert bench.table(rows, forget) in block

"""Figures over seeds: means with sample std and min-max, the seeds' values kept, and the
report's tables (mean ± std) and plot (error bars from min to max) built from them."""

from __future__ import annotations

import json
import statistics

import pytest

from uldkit.cli import main
from uldkit.errors import ConfigError
from uldkit.report.plot import tradeoff_figure
from uldkit.report.render import render_report
from uldkit.report.results import load_run
from uldkit.report.seeds import combine_seeds, seed_dir, seed_list, spread_of, spreads


def _results(quality: float, utility: float, answer: str) -> dict:
    row = {"forget_quality": quality, "model_utility": utility, "forget_rouge": 0.5,
           "forget_prob": 0.4, "samples": [{"question": "q", "truth": "t", "generated": answer}]}
    return {"benchmark": "tofu", "config": {"seed": len(answer)},
            "target": {"forget_quality": 1e-5, "model_utility": 0.70, "forget_rouge": 1.0,
                       "forget_prob": 0.99},
            "retain": {"forget_quality": None, "model_utility": 0.71, "forget_rouge": 0.4,
                       "forget_prob": 0.03},
            "methods": {"uld": row}}


SEEDS = [(3.0e-3, 0.762, "a"), (1.3e-3, 0.741, "bb"), (6.8e-3, 0.698, "ccc")]


@pytest.fixture()
def combined() -> dict:
    return combine_seeds([_results(*values) for values in SEEDS], [4, 5, 6])


def test_every_number_becomes_its_mean_with_std_range_and_values(combined):
    qualities = [q for q, _, _ in SEEDS]
    uld = combined["methods"]["uld"]
    assert uld["forget_quality"] == pytest.approx(statistics.fmean(qualities))
    figure = combined["over_seeds"]["figures"]["methods/uld/forget_quality"]
    assert figure["std"] == pytest.approx(statistics.stdev(qualities))  # n - 1
    assert (figure["min"], figure["max"]) == (1.3e-3, 6.8e-3)
    assert figure["values"] == qualities
    assert combined["over_seeds"]["seeds"] == [4, 5, 6]
    assert "sample standard deviation" in combined["over_seeds"]["spread"]
    # text is the first seed's; what was asked (config) is not averaged
    assert uld["samples"][0]["generated"] == "a"
    assert combined["config"] == {"seed": 1}
    # the retain model's forget quality is measured by no seed: null, with no spread
    assert combined["retain"]["forget_quality"] is None
    assert "retain/forget_quality" not in combined["over_seeds"]["figures"]
    assert spreads(combined, "methods/uld")["model_utility"].low == 0.698


def test_a_figure_some_seeds_did_not_measure_is_averaged_over_those_that_did():
    spread = spread_of([0.5, None, 0.7])
    assert spread.mean == pytest.approx(0.6) and spread.count == 2
    assert spread.values == (0.5, None, 0.7)
    assert spread_of([None, None]) is None
    assert spread_of([0.3]).std is None  # one seed: no spread to speak of


def test_seed_lists_and_directories():
    assert seed_list(3, 2) == [3, 4]
    for bad in (0, -1):
        with pytest.raises(ConfigError, match="--seeds"):
            seed_list(0, bad)
    assert seed_dir("runs/x", 2).as_posix() == "runs/x/seed-2"


def test_report_tables_show_mean_and_std_and_the_plot_error_bars(combined, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "results.json").write_text(json.dumps(combined))
    run = load_run(run_dir)
    assert run.seeds == (4, 5, 6)
    uld = next(model for model in run.models if model.name == "uld")
    quality = uld.spread["forget_quality"]
    files = render_report([run_dir], tmp_path / "report")
    markdown = files.markdown.read_text()
    assert "mean ± std over 3 seeds" in markdown
    assert f"{quality.mean:.2e} ± {quality.std:.2e}" in markdown
    utility = uld.spread["model_utility"]
    assert f"{utility.mean:.4f} ± {utility.std:.4f}" in markdown
    # the plot: one set of error bars (uld's; target and retain are single values here),
    # spanning the seeds' min to max on both axes
    axes = tradeoff_figure([run]).axes[0]
    bars = [c for c in axes.collections if type(c).__name__ == "LineCollection"]
    assert len(bars) == 2  # x and y bars of the one model with a spread
    ends = sorted(tuple(sorted(float(v) for v in segment[:, axis]))
                  for collection in bars for segment in collection.get_segments()
                  for axis in (0, 1) if segment[0, axis] != segment[1, axis])
    assert ends == sorted([(0.698, 0.762), (1.3e-3, 6.8e-3)])
    assert "min to max over 3 seeds" in axes.get_xlabel()


@pytest.mark.parametrize("command", [
    ["demo", "--seeds", "0", "--out", "{tmp}/demo"],
    ["unlearn", "--method", "uld", "--model", "{tmp}/none", "--out", "{tmp}/u", "--seeds", "-1"],
    ["eval", "tofu", "--model", "{tmp}/none", "--out", "{tmp}/e", "--seeds", "0"],
    ["sweep", "--target", "{tmp}/t", "--retain", "{tmp}/r", "--out", "{tmp}/s", "--seeds", "0"],
])
def test_no_seeds_is_one_line_and_exit_2(command, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main([part.format(tmp=tmp_path) for part in command])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--seeds" in err
    assert not any(tmp_path.iterdir())  # nothing was started

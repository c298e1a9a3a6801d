"""`uldkit sweep` and `--seeds` on unlearn / eval tofu, on the session's trained models.

The sweep runs GradDiff at two learning rates with two seeds each (forget01, short answers
to keep it fast), evaluates every point against the retain model and writes the frontier:
the point that unlearned harder must show it, and each point's seeds' values must be the
figures of the evaluations in its seed directories.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from uldkit.cli import main
from uldkit.report.frontier import SweepPoint, frontier, frontier_figure
from uldkit.report.results import load_run
from uldkit.report.seeds import Spread

pytestmark = pytest.mark.usefixtures("one_thread")
LRS = (1e-4, 3e-3)


@pytest.fixture(scope="module")
def sweep(trained_world, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sweep") / "sweep"
    main(["sweep", "--target", str(trained_world.target), "--retain",
          str(trained_world.retain), "--out", str(out), "--methods", "grad_diff",
          "--lr", ",".join(map(str, LRS)), "--epochs", "2", "--seeds", "2",
          "--forget", "forget01", "--max-new-tokens", "4"])
    return out


def test_sweep_evaluates_every_point_and_seed(sweep):
    results = json.loads((sweep / "sweep.json").read_text())
    points = {p["settings"]["lr"]: p for p in results["points"]}
    assert set(points) == set(LRS) and results["seeds"] == [0, 1]
    for lr, point in points.items():
        assert point["settings"] == {"lr": lr, "epochs": 2}
        directory = sweep / "grad_diff" / f"lr_{lr:g}-epochs_2"
        measured = [json.loads((directory / f"seed-{s}" / "eval" / "default" / "summary.json")
                               .read_text())["figures"]["forget_prob"] for s in (0, 1)]
        spread = point["over_seeds"]["figures"]["forget_prob"]
        assert spread["values"] == measured
        assert point["forget_prob"] == pytest.approx(statistics.fmean(measured))
        assert spread["std"] == pytest.approx(statistics.stdev(measured))
    # the harder learning rate forgets more of the forget person's answers
    assert points[3e-3]["forget_prob"] < points[1e-4]["forget_prob"]
    target = results["references"]["target"]
    assert points[1e-4]["forget_prob"] <= target["forget_prob"] + 1e-6


def test_sweep_writes_the_frontier_table_figure_and_a_report_input(sweep, tmp_path):
    table = (sweep / "frontier.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| grad_diff")]
    assert len(rows) == 2 and all(" ± " in row for row in rows)
    assert any(row.endswith("| yes |") for row in rows)
    assert (sweep / "frontier.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    run = load_run(sweep)  # `uldkit report OUT` reads the sweep as one method per point
    assert {m.name for m in run.methods} == {f"grad_diff lr={lr:g} epochs=2" for lr in LRS}
    assert all("forget_quality" in m.spread for m in run.methods)
    main(["report", str(sweep), "--out", str(tmp_path / "report")])
    assert " ± " in (tmp_path / "report" / "report.md").read_text()


def test_a_rerun_sweep_resumes_without_training(trained_world, sweep):
    summary = sweep / "grad_diff" / "lr_0.0001-epochs_2" / "seed-1" / "unlearn_summary.json"
    stamp, before = summary.stat().st_mtime_ns, json.loads((sweep / "sweep.json").read_text())
    main(["sweep", "--target", str(trained_world.target), "--retain",
          str(trained_world.retain), "--out", str(sweep), "--methods", "grad_diff",
          "--lr", ",".join(map(str, LRS)), "--epochs", "2", "--seeds", "2",
          "--forget", "forget01", "--max-new-tokens", "4"])
    assert summary.stat().st_mtime_ns == stamp
    assert json.loads((sweep / "sweep.json").read_text())["points"] == before["points"]


def test_unlearn_and_eval_over_seeds(trained_world, sweep, tmp_path):
    runs = tmp_path / "uld-seeds"
    main(["unlearn", "--method", "grad_diff", "--model", str(trained_world.target),
          "--people", "20", "--forget", "forget01", "--out", str(runs), "--seeds", "2",
          "--seed", "3", "--max-steps", "1"])
    assert sorted(p.name for p in runs.iterdir() if p.is_dir()) == ["seed-3", "seed-4"]
    seeds = json.loads((runs / "seeds.json").read_text())
    assert seeds["over_seeds"]["seeds"] == [3, 4]
    assert seeds["steps"] == 1
    config = json.loads((runs / "seed-4" / "run_config.json").read_text())["config"]
    assert config["train_overrides"]["seed"] == 4
    out = tmp_path / "eval-seeds"
    main(["eval", "tofu", "--model", str(runs), "--split", "forget01", "--people", "20",
          "--seeds", "2", "--seed", "3", "--out", str(out), "--max-new-tokens", "4",
          "--quiet", "--retain-logs", str(sweep / "reference" / "retain")])
    summary = json.loads((out / "summary.json").read_text())
    per_seed = [json.loads((out / f"seed-{s}" / "summary.json").read_text())["figures"]
                for s in (3, 4)]
    spread = summary["over_seeds"]["figures"]["figures/model_utility"]
    assert spread["values"] == [figures["model_utility"] for figures in per_seed]
    assert summary["figures"]["model_utility"] == pytest.approx(spread["mean"])
    run = load_run(out)
    assert run.seeds == (3, 4) and "model_utility" in run.models[0].spread


def test_frontier_keeps_the_points_nothing_beats():
    def point(quality: float, utility: float) -> SweepPoint:
        return SweepPoint("m", {"lr": quality}, quality, utility)

    a, b, c, d = point(0.5, 0.2), point(0.1, 0.6), point(0.05, 0.5), point(0.01, 0.7)
    assert frontier([a, b, c, d]) == [a, b, d]  # c: b is better in both
    assert frontier([point(0.1, 0.6), point(0.1, 0.6)]) == [point(0.1, 0.6)] * 2


def test_frontier_figure_draws_each_method_its_line_and_bars():
    spread = {"model_utility": Spread(0.6, 0.05, 0.55, 0.65, (0.55, 0.6, 0.65))}
    points = [SweepPoint("uld", {"alpha": 1.0}, 0.2, 0.6, spread, 3),
              SweepPoint("uld", {"alpha": 0.5}, 0.01, 0.7, {}, 3),
              SweepPoint("npo", {"lr": 1e-3}, 0.05, 0.3, {}, 3)]
    figure = frontier_figure(points, {"target": {"forget_quality": 1e-5, "model_utility": 0.7},
                                      "retain": {"forget_quality": None, "model_utility": 0.71}})
    axes = figure.axes[0]
    lines = {line.get_label(): line for line in axes.get_lines()}
    uld = lines["uld (2 settings)"]
    assert list(uld.get_xdata()) == [0.6, 0.7]  # the frontier, by utility
    assert "npo (1 settings)" in lines
    bars = [c for c in axes.collections if type(c).__name__ == "LineCollection"]
    assert len(bars) == 1
    segment = bars[0].get_segments()[0]
    assert sorted(segment[:, 0]) == [0.55, 0.65]
    assert axes.get_ylim()[1] == 1.0

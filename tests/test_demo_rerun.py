"""A rerun of a finished demo finds nothing to redo and leaves its results as they were
(test_demo.py checks it end to end; this checks the rule on written results, in a second)."""

from __future__ import annotations

import json
import math

from uldkit.demo.run import finished_results
from uldkit.io import atomic_write_json


def _results(wall: float, utility: float) -> dict:
    return {"benchmark": "tofu", "target": {"model_utility": utility, "mia": (0.5, math.nan)},
            "methods": {}, "wall_seconds": wall}


def test_a_no_op_rerun_keeps_the_first_runs_wall_seconds(tmp_path):
    path = tmp_path / "results.json"
    atomic_write_json(path, _results(130.0, 0.7))
    kept = finished_results(path, _results(0.4, 0.7))
    assert kept == json.loads(path.read_text()) and kept["wall_seconds"] == 130.0


def test_changed_figures_or_no_earlier_results_are_written_anew(tmp_path):
    path = tmp_path / "results.json"
    assert finished_results(path, _results(0.4, 0.7)) is None
    atomic_write_json(path, _results(130.0, 0.7))
    assert finished_results(path, _results(20.0, 0.71)) is None
    path.write_text("{not json")
    assert finished_results(path, _results(20.0, 0.7)) is None

"""The trade-off plot, checked on its data (not its pixels): axis limits from each metric's
range, the target and retain models drawn as reference points, and labels that never
overlap even when methods land on the same spot."""

from __future__ import annotations

from itertools import combinations
from pathlib import Path

from uldkit.report.plot import tradeoff_figure
from uldkit.report.results import ModelResult, RunResults


def _model(name: str, role: str, quality: float | None, utility: float | None,
           muse: dict | None = None) -> ModelResult:
    return ModelResult(name=name, role=role, forget_quality=quality, model_utility=utility,
                       forget_rouge=None, forget_prob=None, muse=muse)


def _run(*models: ModelResult) -> RunResults:
    return RunResults(name="demo", path=Path("demo"), models=models)


def _labels(figure) -> dict[str, object]:
    axes = figure.axes[0]
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    return {text.get_text(): text.get_window_extent(renderer) for text in axes.texts}


def _legend(figure) -> list[str]:
    return [text.get_text() for text in figure.axes[0].get_legend().get_texts()]


def _clustered_tofu_run() -> RunResults:
    # As in a demo: the retain model has no forget quality (it is the reference), and several
    # methods sit almost on top of each other.
    return _run(_model("target", "target", 2.2e-5, 0.709), _model("retain", "retain", None, 0.71),
                _model("uld", "method", 5.4e-2, 0.732), _model("grad_diff", "method", 6.6e-5, 0.704),
                _model("kl", "method", 6.9e-5, 0.705), _model("grad_ascent", "method", 6.0e-5, 0.703),
                _model("npo", "method", 2.9e-2, 0.086), _model("simnpo", "method", 0.0, 0.70))


def test_forget_quality_axis_never_goes_above_1_and_utility_stays_in_0_1():
    axes = tradeoff_figure([_clustered_tofu_run()]).axes[0]
    bottom, top = axes.get_ylim()
    assert top == 1.0 and 0 < bottom < 6.0e-6  # below the lowest point (FQ=0 drawn a decade down)
    left, right = axes.get_xlim()
    assert 0.0 <= left < 0.086 and 0.732 < right <= 1.0


def test_target_and_retain_are_drawn_as_reference_points():
    figure = tradeoff_figure([_clustered_tofu_run()])
    legend = _legend(figure)
    assert "target model (before unlearning)" in legend
    assert "retain model (never saw the forget set: the goal)" in legend
    retain = figure.axes[0].collections[1].get_offsets()[0]
    assert tuple(retain) == (0.71, 1.0)  # the goal: forget quality 1 against itself


def test_labels_are_kept_apart_and_none_is_lost():
    figure = tradeoff_figure([_clustered_tofu_run()])
    boxes = _labels(figure)
    assert set(boxes) == {"target", "retain", "uld", "grad_diff", "kl", "grad_ascent", "npo",
                          "simnpo (FQ=0)"}
    for (first, a), (second, b) in combinations(boxes.items(), 2):
        assert not a.overlaps(b), f"labels '{first}' and '{second}' overlap"


def test_muse_axes_span_the_scores_range_and_labels_stay_apart():
    scores = {"knowmem_retain": 0.52, "knowmem_forget": 0.48}
    run = _run(_model("target", "target", None, None, {"knowmem_retain": 0.55,
                                                       "knowmem_forget": 0.97}),
               _model("retain", "retain", None, None, {"knowmem_retain": 0.53,
                                                       "knowmem_forget": 0.30}),
               *(_model(name, "method", None, None, scores) for name in ("npo", "ga", "kl")))
    figure = tradeoff_figure([run])
    axes = figure.axes[0]
    assert axes.get_ylim()[1] <= 1.05 and axes.get_xlim()[1] <= 1.05
    assert axes.get_ylim()[0] >= -0.05 and axes.get_xlim()[0] >= -0.05
    boxes = _labels(figure)
    assert set(boxes) == {"target", "retain", "npo", "ga", "kl"}
    assert all(not a.overlaps(b) for a, b in combinations(boxes.values(), 2))

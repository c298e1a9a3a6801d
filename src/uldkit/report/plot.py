"""The trade-off plot, rendered to PNG bytes (no pyplot state).

TOFU runs: forget quality (log scale) against model utility. MUSE runs (no TOFU figures):
KnowMem on the forget set against KnowMem on the retain set, both linear.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from uldkit.report.results import ModelResult, RunResults

SIGNIFICANCE = 0.05
_ROLE_STYLE = {
    "target": {"marker": "X", "color": "#c0392b", "s": 140},
    "retain": {"marker": "*", "color": "#1e8449", "s": 220},
}
_METHOD_MARKERS = ("o", "s", "D", "^", "v", "P", "<", ">", "h", "p")
# Method colours; red and green stay reserved for the target and retain models.
_PALETTE = ("#1f77b4", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22",
            "#7f7f7f")


def plot_description(runs: Sequence[RunResults]) -> tuple[str, str]:
    """(what the plot shows, for its title; alt text) for these runs."""
    if _muse_only(runs):
        return ("knowledge forgotten vs. kept",
                "KnowMem on the forget set against KnowMem on the retain set for every model")
    return ("forget quality vs. model utility",
            "Forget quality (log scale) against model utility for every model")


def _muse_only(runs: Sequence[RunResults]) -> bool:
    models = [model for run in runs for model in run.models]
    return bool(models) and not any(_plottable(m) for m in models) and any(
        m.muse is not None for m in models)


def tradeoff_png(runs: Sequence[RunResults], title: str = "Forgetting vs. utility") -> bytes:
    """Scatter of model utility (x) against forget quality (y, log scale), one point a model
    (MUSE runs: KnowMem on D_r against KnowMem on D_f)."""
    figure = Figure(figsize=(7.5, 5.2), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    if _muse_only(runs):
        _muse_scatter(axes, runs)
        axes.set_title(title)
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")
        return buffer.getvalue()
    points = [(run, model) for run in runs for model in run.models if _plottable(model)]
    floor = _log_floor([model.forget_quality for _, model in points])
    several_runs = len(runs) > 1
    method_names = sorted({model.name for _, model in points if model.role == "method"})
    for run_number, run in enumerate(runs):
        for model in run.models:
            if not _plottable(model):
                continue
            quality = max(model.forget_quality, floor)
            label, style = _marker(model, run, run_number, several_runs, method_names)
            axes.scatter(model.model_utility, quality, label=label, zorder=3,
                         edgecolors="black", linewidths=0.6, **style)
            text = model.name if model.forget_quality > floor else f"{model.name} (FQ=0)"
            offset = (6, 5) if model.role == "method" else (8, -13)  # reference models below
            axes.annotate(text, (model.model_utility, quality), textcoords="offset points",
                          xytext=offset, fontsize=8)
    axes.set_yscale("log")
    axes.margins(x=0.1)
    if points:  # a decade and a half of headroom for the labels at both ends
        lowest = min(max(model.forget_quality, floor) for _, model in points)
        axes.set_ylim(bottom=min(lowest, SIGNIFICANCE) / 30, top=30.0)
    axes.axhline(SIGNIFICANCE, color="grey", linestyle="--", linewidth=1,
                 label=f"p = {SIGNIFICANCE} (indistinguishable above)")
    axes.set_xlabel("Model utility (higher is better)")
    axes.set_ylabel("Forget quality, KS p-value (log scale, higher is better)")
    axes.set_title(title)
    axes.grid(True, which="major", alpha=0.3)
    if not points:
        axes.text(0.5, 0.5, "no model has both forget quality and model utility",
                  transform=axes.transAxes, ha="center", va="center")
    axes.legend(fontsize=8, loc="best", framealpha=0.9)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _marker(model: ModelResult, run: RunResults, run_number: int, several_runs: bool,
            method_names: list[str]) -> tuple[str, dict]:
    """Legend label and scatter style: reference models by role, methods by colour."""
    if model.role in _ROLE_STYLE:
        return (f"{model.role} model" + (f" ({run.name})" if several_runs else ""),
                dict(_ROLE_STYLE[model.role]))
    colour = _PALETTE[method_names.index(model.name) % len(_PALETTE)]
    label = model.name if not several_runs else f"{model.name} ({run.name})"
    return label, {"marker": _METHOD_MARKERS[run_number % len(_METHOD_MARKERS)],
                   "color": colour, "s": 70}


def _muse_scatter(axes, runs: Sequence[RunResults]) -> None:
    several_runs = len(runs) > 1
    method_names = sorted({m.name for run in runs for m in run.models if m.role == "method"})
    plotted = False
    for run_number, run in enumerate(runs):
        for model in run.models:
            figures = model.muse or {}
            x, y = figures.get("knowmem_retain"), figures.get("knowmem_forget")
            if x is None or y is None:
                continue
            plotted = True
            label, style = _marker(model, run, run_number, several_runs, method_names)
            axes.scatter(x, y, label=label, zorder=3, edgecolors="black", linewidths=0.6,
                         **style)
            offset = (6, 5) if model.role == "method" else (8, -13)
            axes.annotate(model.name, (x, y), textcoords="offset points", xytext=offset,
                          fontsize=8)
    axes.set_xlim(-0.05, 1.1)
    axes.set_ylim(-0.05, 1.1)
    axes.set_xlabel("KnowMem on D_r: retain knowledge kept (higher is better)")
    axes.set_ylabel("KnowMem on D_f: forget knowledge left (lower is better)")
    axes.grid(True, alpha=0.3)
    if plotted:
        axes.legend(fontsize=8, loc="best", framealpha=0.9)


def _plottable(model: ModelResult) -> bool:
    return model.forget_quality is not None and model.model_utility is not None


def _log_floor(qualities: Sequence[float]) -> float:
    """Where a p-value of 0 is drawn: a decade below the smallest positive one."""
    positive = [quality for quality in qualities if quality > 0]
    return min(positive) / 10 if positive else 1e-30


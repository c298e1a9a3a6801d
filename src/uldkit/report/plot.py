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
_ROLE_LABEL = {"target": "target model (before unlearning)",
               "retain": "retain model (never saw the forget set: the goal)"}
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
    """The trade-off plot as PNG bytes (see `tradeoff_figure`)."""
    buffer = io.BytesIO()
    tradeoff_figure(runs, title).savefig(buffer, format="png")
    return buffer.getvalue()


def tradeoff_figure(runs: Sequence[RunResults],
                    title: str = "Forgetting vs. utility") -> Figure:
    """Scatter of model utility (x) against forget quality (y, log scale), one point a model
    (MUSE runs: KnowMem on D_r against KnowMem on D_f). The target and retain models are
    drawn as reference points, labels never overlap, and each axis spans its metric's range
    (a p-value or a score in [0, 1] never above 1)."""
    figure = Figure(figsize=(7.5, 5.2), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    if _muse_only(runs):
        labels = _muse_scatter(axes, runs)
    else:
        labels = _tofu_scatter(axes, runs)
    seeds = max((len(run.seeds) for run in runs), default=0)
    if seeds:
        axes.set_xlabel(f"{axes.get_xlabel()}\npoints: means; bars: min to max over {seeds} seeds")
    axes.set_title(title)
    figure.tight_layout()
    place_labels(axes, labels)
    return figure


def _tofu_scatter(axes, runs: Sequence[RunResults]) -> list[tuple[str, tuple[float, float]]]:
    points = [(run, model) for run in runs for model in run.models if _plottable(model)]
    floor = _log_floor([_forget_quality(model) for _, model in points])
    several_runs = len(runs) > 1
    method_names = sorted({model.name for _, model in points if model.role == "method"})
    labels: list[tuple[str, tuple[float, float]]] = []
    for run_number, run in enumerate(runs):
        for model in run.models:
            if not _plottable(model):
                continue
            quality = max(_forget_quality(model), floor)
            label, style = _marker(model, run, run_number, several_runs, method_names)
            axes.scatter(model.model_utility, quality, label=label, zorder=3,
                         edgecolors="black", linewidths=0.6, clip_on=False, **style)
            error_bars(axes, model, (model.model_utility, quality),
                       ("model_utility", "forget_quality"), style["color"], floor)
            text = model.name if _forget_quality(model) > floor else f"{model.name} (FQ=0)"
            labels.append((text, (model.model_utility, quality)))
    axes.set_yscale("log")
    if points:  # p-values: from below the lowest point (and the threshold) up to exactly 1
        lowest = min(max(_extent(model, "forget_quality", _forget_quality(model))[0], floor)
                     for _, model in points)
        axes.set_ylim(bottom=min(lowest, SIGNIFICANCE) / 30, top=1.0)
        axes.set_xlim(*_unit_range([end for _, model in points
                                    for end in _extent(model, "model_utility",
                                                       model.model_utility)]))
    axes.axhline(SIGNIFICANCE, color="grey", linestyle="--", linewidth=1,
                 label=f"p = {SIGNIFICANCE} (indistinguishable above)")
    axes.set_xlabel("Model utility (higher is better)")
    axes.set_ylabel("Forget quality, KS p-value (log scale, higher is better)")
    axes.grid(True, which="major", alpha=0.3)
    if not points:
        axes.text(0.5, 0.5, "no model has both forget quality and model utility",
                  transform=axes.transAxes, ha="center", va="center")
    axes.legend(fontsize=8, loc="best", framealpha=0.9)
    return labels


def _unit_range(values: Sequence[float], pad: float = 0.05) -> tuple[float, float]:
    """Axis limits around `values`, for a metric in [0, 1]: padded, never beyond [0, 1]."""
    low, high = min(values), max(values)
    span = max(high - low, 0.1)
    return max(0.0, low - span * 0.15 - pad / 2), min(1.0, high + span * 0.15 + pad / 2)


def _marker(model: ModelResult, run: RunResults, run_number: int, several_runs: bool,
            method_names: list[str]) -> tuple[str, dict]:
    """Legend label and scatter style: reference models by role, methods by colour."""
    if model.role in _ROLE_STYLE:
        return (_ROLE_LABEL[model.role] + (f" ({run.name})" if several_runs else ""),
                dict(_ROLE_STYLE[model.role]))
    colour = _PALETTE[method_names.index(model.name) % len(_PALETTE)]
    label = model.name if not several_runs else f"{model.name} ({run.name})"
    return label, {"marker": _METHOD_MARKERS[run_number % len(_METHOD_MARKERS)],
                   "color": colour, "s": 70}


def _muse_scatter(axes, runs: Sequence[RunResults]) -> list[tuple[str, tuple[float, float]]]:
    several_runs = len(runs) > 1
    method_names = sorted({m.name for run in runs for m in run.models if m.role == "method"})
    labels: list[tuple[str, tuple[float, float]]] = []
    for run_number, run in enumerate(runs):
        for model in run.models:
            figures = model.muse or {}
            x, y = figures.get("knowmem_retain"), figures.get("knowmem_forget")
            if x is None or y is None:
                continue
            label, style = _marker(model, run, run_number, several_runs, method_names)
            axes.scatter(x, y, label=label, zorder=3, edgecolors="black", linewidths=0.6,
                         clip_on=False, **style)
            error_bars(axes, model, (x, y), ("muse/knowmem_retain", "muse/knowmem_forget"),
                       style["color"])
            labels.append((model.name, (x, y)))
    # KnowMem is a ROUGE recall in [0, 1]: the whole range, with room for the markers only
    axes.set_xlim(-0.03, 1.0 + 0.03)
    axes.set_ylim(-0.03, 1.0 + 0.03)
    axes.set_xlabel("KnowMem on D_r: retain knowledge kept (higher is better)")
    axes.set_ylabel("KnowMem on D_f: forget knowledge left (lower is better)")
    axes.grid(True, alpha=0.3)
    if labels:
        axes.legend(fontsize=8, loc="best", framealpha=0.9)
    return labels


def error_bars(axes, model: ModelResult, point: tuple[float, float], keys: tuple[str, str],
               colour: str, floor: float = 0.0) -> bool:
    """Bars from each figure's min to its max over seeds, where the model has a spread
    (none for a single run); whether any was drawn. `floor`: where a 0 is drawn (log axes)."""
    x_spread, y_spread = (model.spread.get(key) for key in keys)
    x_spread, y_spread = (None if s is None or s.low == s.high else s
                          for s in (x_spread, y_spread))
    if x_spread is None and y_spread is None:
        return False
    x, y = point
    xerr = None if x_spread is None else bar(x, x_spread.low, x_spread.high)
    yerr = None if y_spread is None else bar(y, max(y_spread.low, floor),
                                             max(y_spread.high, floor))
    axes.errorbar([x], [y], xerr=xerr, yerr=yerr, fmt="none", ecolor=colour, elinewidth=1.2,
                  capsize=3, zorder=2)
    return True


def bar(value: float, low: float, high: float) -> list[list[float]]:
    """matplotlib's (below, above) extents of a bar from low to high around value (a mean
    may round a hair outside its seeds' range)."""
    return [[max(value - low, 0.0)], [max(high - value, 0.0)]]


def _extent(model: ModelResult, key: str, value: float) -> tuple[float, float]:
    """The lowest and highest of a figure: over seeds its min and max, else the value."""
    spread = model.spread.get(key)
    return (value, value) if spread is None else (min(spread.low, value), max(spread.high, value))


def _plottable(model: ModelResult) -> bool:
    return _forget_quality(model) is not None and model.model_utility is not None


def _forget_quality(model: ModelResult) -> float | None:
    # The retain model is the goal: its forget quality against itself is 1 by definition.
    if model.forget_quality is None and model.role == "retain":
        return 1.0
    return model.forget_quality


# Where a label may sit beside its point, in points: right-above first, then the other
# corners, then further up and down the right side.
_LABEL_OFFSETS = ((6, 5), (6, -12), (-6, 5), (-6, -12),
                  *((6, 5 + 10 * k) for k in range(1, 8)),
                  *((6, -12 - 10 * k) for k in range(1, 8)))


def place_labels(axes, labels: Sequence[tuple[str, tuple[float, float]]]) -> None:
    """Annotate each point with its label at the first offset where the label's box overlaps
    no label placed before it and stays inside the axes."""
    renderer = axes.figure.canvas.get_renderer()
    frame = axes.get_window_extent(renderer)
    placed: list = []
    for text, xy in labels:
        for dx, dy in _LABEL_OFFSETS:
            note = axes.annotate(text, xy, textcoords="offset points", xytext=(dx, dy),
                                 fontsize=8, ha="left" if dx > 0 else "right")
            box = note.get_window_extent(renderer)
            inside = frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and (
                box.y1 <= frame.y1)
            if inside and not any(box.overlaps(other) for other in placed):
                break
            note.remove()
        else:  # nowhere free: keep the first choice rather than lose the label
            note = axes.annotate(text, xy, textcoords="offset points", xytext=_LABEL_OFFSETS[0],
                                 fontsize=8)
            box = note.get_window_extent(renderer)
        placed.append(box)


def _log_floor(qualities: Sequence[float]) -> float:
    """Where a p-value of 0 is drawn: a decade below the smallest positive one."""
    positive = [quality for quality in qualities if quality > 0]
    return min(positive) / 10 if positive else 1e-30


"""The forget-quality / model-utility frontier of a sweep: every method's grid on one figure.

A sweep point is one method at one setting (learning rate, epochs, ULD's alpha), its figures
the means over seeds with their spreads (`uldkit.report.seeds`). A point is on its method's
frontier when no other point of that method has both higher (or equal) forget quality and
higher (or equal) model utility, one of them strictly; the frontier is drawn as a line
through those points, so "method A above method B's whole frontier" is something one sees.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from uldkit.report.plot import SIGNIFICANCE, bar
from uldkit.report.seeds import Spread

_PALETTE = ("#1f77b4", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22",
            "#7f7f7f")
_REFERENCE = {"target": ("X", "#c0392b", "target model (before unlearning)"),
              "retain": ("*", "#1e8449", "retain model (the goal)")}
SETTING_TITLES = {"lr": "lr", "epochs": "epochs", "alpha": "α"}


@dataclass(frozen=True)
class SweepPoint:
    """One method at one setting: the mean figures over its seeds and their spreads."""

    method: str
    settings: Mapping[str, Any]  # lr, epochs, alpha (None: the method's own)
    forget_quality: float | None
    model_utility: float | None
    spread: Mapping[str, Spread] = field(default_factory=dict)
    seeds: int = 1

    @property
    def label(self) -> str:
        return point_label(self.method, self.settings)


def point_label(method: str, settings: Mapping[str, Any]) -> str:
    """'uld lr=0.01 epochs=20 α=1' (settings left at the method's own are not named)."""
    named = [f"{SETTING_TITLES.get(key, key)}={value:g}" for key, value in settings.items()
             if value is not None]
    return " ".join([method, *named])


def frontier(points: Sequence[SweepPoint]) -> list[SweepPoint]:
    """The points no other point dominates (in both figures at least as good, in one
    better), by increasing model utility; points without both figures take no part."""
    scored = [p for p in points if p.forget_quality is not None and p.model_utility is not None]

    def dominated(point: SweepPoint) -> bool:
        return any(o.forget_quality >= point.forget_quality
                   and o.model_utility >= point.model_utility
                   and (o.forget_quality > point.forget_quality
                        or o.model_utility > point.model_utility) for o in scored)

    return sorted((p for p in scored if not dominated(p)),
                  key=lambda p: (p.model_utility, p.forget_quality))


def by_method(points: Sequence[SweepPoint]) -> dict[str, list[SweepPoint]]:
    grouped: dict[str, list[SweepPoint]] = {}
    for point in points:
        grouped.setdefault(point.method, []).append(point)
    return grouped


def frontier_table(points: Sequence[SweepPoint],
                   references: Mapping[str, Mapping[str, float | None]] = ()) -> str:
    """The sweep as a Markdown table: each point's settings, forget quality and model
    utility as mean ± sample std over seeds (min-max below them), and whether it is on its
    method's frontier."""
    lines = ["| method | lr | epochs | α | forget quality ↑ | model utility ↑ | seeds "
             "| on frontier |", "|---|---|---|---|---|---|---|---|"]
    for name, figures in dict(references).items():
        quality = figures.get("forget_quality")
        lines.append(f"| {name} | | | | {'1 (by definition)' if quality is None and name == 'retain' else _fmt(quality, '{:.2e}')} "
                     f"| {_fmt(figures.get('model_utility'), '{:.3f}')} | | |")
    for method, group in by_method(points).items():
        best = {id(p) for p in frontier(group)}
        for point in group:
            cells = [method, *(_setting(point.settings.get(key)) for key in ("lr", "epochs",
                                                                           "alpha"))]
            cells += [cell(point, "forget_quality", "{:.2e}"),
                      cell(point, "model_utility", "{:.3f}"), str(point.seeds),
                      "yes" if id(point) in best else ""]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def cell(point: SweepPoint, key: str, pattern: str) -> str:
    """mean ± std (min–max) over seeds, or the single value."""
    value = getattr(point, key)
    spread = point.spread.get(key)
    if value is None:
        return "—"
    if spread is None or spread.std is None:
        return pattern.format(value)
    return (f"{pattern.format(spread.mean)} ± {pattern.format(spread.std)} "
            f"({pattern.format(spread.low)}–{pattern.format(spread.high)})")


def _setting(value: Any) -> str:
    return "" if value is None else f"{value:g}"


def _fmt(value: float | None, pattern: str) -> str:
    return "—" if value is None else pattern.format(value)


def frontier_figure(points: Sequence[SweepPoint],
                    references: Mapping[str, Mapping[str, float | None]] = (),
                    title: str = "Forget quality vs. model utility: every method's frontier",
                    ) -> Figure:
    """Every point (mean over seeds, bars min to max), each method's frontier as a line,
    and the target and retain models as reference points."""
    figure = Figure(figsize=(8, 5.6), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    qualities = [q for p in points for q in _range(p, "forget_quality") if q is not None]
    qualities += [f.get("forget_quality") or 1.0 for f in dict(references).values()]
    positive = [q for q in qualities if q > 0]
    floor = min(positive) / 10 if positive else 1e-30
    for number, (method, group) in enumerate(by_method(points).items()):
        colour = _PALETTE[number % len(_PALETTE)]
        for point in group:
            if point.forget_quality is None or point.model_utility is None:
                continue
            x, y = point.model_utility, max(point.forget_quality, floor)
            axes.scatter([x], [y], color=colour, edgecolors="black", linewidths=0.5, s=40,
                         zorder=3)
            _bars(axes, point, x, y, floor, colour)
        best = frontier(group)
        axes.plot([p.model_utility for p in best],
                  [max(p.forget_quality, floor) for p in best], color=colour, linewidth=1.6,
                  marker="o", markersize=4, label=f"{method} ({len(group)} settings)", zorder=2)
    for name, figures in dict(references).items():
        marker, colour, label = _REFERENCE.get(name, ("P", "#555555", name))
        quality = figures.get("forget_quality")
        quality = 1.0 if quality is None and name == "retain" else quality
        if quality is None or figures.get("model_utility") is None:
            continue
        axes.scatter([figures["model_utility"]], [max(quality, floor)], marker=marker,
                     color=colour, s=160, edgecolors="black", linewidths=0.6, label=label,
                     zorder=4, clip_on=False)
    axes.set_yscale("log")
    axes.set_ylim(bottom=min([*positive, SIGNIFICANCE]) / 30, top=1.0)
    utilities = [u for p in points for u in _range(p, "model_utility") if u is not None]
    utilities += [f["model_utility"] for f in dict(references).values()
                  if f.get("model_utility") is not None]
    if utilities:
        low, high = min(utilities), max(utilities)
        span = max(high - low, 0.1)
        axes.set_xlim(max(0.0, low - span * 0.1), min(1.0, high + span * 0.1))
    axes.axhline(SIGNIFICANCE, color="grey", linestyle="--", linewidth=1,
                 label=f"p = {SIGNIFICANCE}")
    seeds = max((p.seeds for p in points), default=1)
    axes.set_xlabel("Model utility (higher is better)"
                    + (f"\npoints: means; bars: min to max over {seeds} seeds" if seeds > 1
                       else ""))
    axes.set_ylabel("Forget quality, KS p-value (log scale)")
    axes.set_title(title)
    axes.grid(True, which="major", alpha=0.3)
    axes.legend(fontsize=8, loc="best", framealpha=0.9)
    figure.tight_layout()
    return figure


def frontier_png(points: Sequence[SweepPoint],
                 references: Mapping[str, Mapping[str, float | None]] = ()) -> bytes:
    buffer = io.BytesIO()
    frontier_figure(points, references).savefig(buffer, format="png")
    return buffer.getvalue()


def _range(point: SweepPoint, key: str) -> tuple[float | None, float | None]:
    spread = point.spread.get(key)
    value = getattr(point, key)
    return (value, value) if spread is None else (spread.low, spread.high)


def _bars(axes, point: SweepPoint, x: float, y: float, floor: float, colour: str) -> None:
    utility, quality = point.spread.get("model_utility"), point.spread.get("forget_quality")
    if utility is None and quality is None:
        return
    xerr = None if utility is None else bar(x, utility.low, utility.high)
    yerr = None if quality is None else bar(y, max(quality.low, floor),
                                            max(quality.high, floor))
    axes.errorbar([x], [y], xerr=xerr, yerr=yerr, fmt="none", ecolor=colour, elinewidth=1,
                  capsize=2, alpha=0.7, zorder=2)

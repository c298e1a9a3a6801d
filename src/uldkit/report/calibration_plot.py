"""The calibration frontier as a PNG: each ULD setting's MIA gap against its model utility."""

from __future__ import annotations

import io

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from uldkit.eval.calibration import Calibration

_MARKERS = ("o", "s", "D", "^", "v", "P")


def frontier_png(result: Calibration) -> bytes:
    """Utility as a share of the target's (x) against max |AUC - retain AUC| (y), one point a
    setting, one marker per (filter, tau); the frontier joined by a line, the goal's bounds
    dashed."""
    figure = Figure(figsize=(7.0, 4.8), dpi=110)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    groups = sorted({(p.setting.filter, p.setting.tau) for p in result.points})
    for index, (name, tau) in enumerate(groups):
        points = [p for p in result.points if (p.setting.filter, p.setting.tau) == (name, tau)]
        axes.scatter([p.utility_ratio for p in points], [p.gap for p in points],
                     marker=_MARKERS[index % len(_MARKERS)],
                     label="no filter (tau=0)" if tau == 0 else f"{name} filter, tau={tau:g}")
        for p in points:
            axes.annotate(f"{p.setting.alpha:g}", (p.utility_ratio, p.gap), fontsize=7,
                          xytext=(3, 3), textcoords="offset points")
    frontier = sorted(result.frontier(), key=lambda p: p.utility_ratio)
    axes.plot([p.utility_ratio for p in frontier], [p.gap for p in frontier], color="black",
              linewidth=0.8, label="frontier")
    axes.axhline(result.tolerance, linestyle="--", color="#1e8449", linewidth=0.8,
                 label=f"goal: gap <= {result.tolerance:g}")
    axes.axvline(result.min_utility, linestyle="--", color="#c0392b", linewidth=0.8,
                 label=f"utility >= {result.min_utility:.0%} of target")
    axes.set_xlabel("model utility / target's")
    axes.set_ylabel("max |AUC - retain AUC| over attacks")
    axes.set_title("ULD settings: MIA gap vs. utility (labels: alpha)")
    axes.legend(fontsize=7)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()

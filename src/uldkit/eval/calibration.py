"""Calibrating ULD's inference settings so that a membership-inference audit cannot tell it
from the retain model, while it keeps the target's utility.

ULD's alpha, tau and relative-top filter (`uldkit.uld.relative_top`) are chosen at
inference, with no retraining: each setting is a view of the same weights. For each setting
of a grid, the MIA attacks (`uldkit.eval.mia`) score the forget answers (members) against
never-trained holdout answers through the combined scores the model is scored with, and TOFU
gives model utility (MU) and forget quality. A setting *keeps utility* when its MU is at
least `min_utility` (0.98) of the target's; its *gap* is the largest |AUC - retain AUC| over
the attacks. The best setting is the one that keeps utility with the smallest gap; the goal
is met when that gap is at most `tolerance` (0.05). The frontier is every setting that no
other beats on both gap and utility.

Why the strict filter cannot pass (measured on the demo, see README): it gives tokens outside
the target's plausible set probability 0, and that set is the target's own knowledge. The
forget answers' tokens are always plausible (the target memorised them); 13 % of the holdout
answers' tokens are not, and score -1000, so every attack separates the two at AUC 1.0
whatever alpha. tau = 0 or the reference filter (which excludes nothing when scoring) leave
only the logit difference itself to the attacks.

After the grid, up to `refine` rounds try the midpoints between the best alpha and its
neighbours (same tau and filter), stopping at a round that finds nothing better: AUC moves
fast with alpha, and the window where every attack sits near the retain model is narrow.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from uldkit.errors import ConfigError
from uldkit.eval.mia import DEFAULT_K, mia_scores, roc_auc

if TYPE_CHECKING:
    from uldkit.models.lm import LanguageModel
    from uldkit.uld.logit_difference import LogitDifferenceModel

DEFAULT_MIN_UTILITY = 0.98
DEFAULT_TOLERANCE = 0.05
DEFAULT_ALPHAS = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0)
DEFAULT_TAUS = (0.0,)
DEFAULT_REFINE = 3

# A setting's model utility and forget quality (None where not computed).
Utility = Callable[["LanguageModel"], tuple[float, "float | None"]]


@dataclass(frozen=True)
class Setting:
    alpha: float
    tau: float
    filter: str

    def label(self) -> str:
        return f"alpha={self.alpha:g} tau={self.tau:g} filter={self.filter_label()}"

    def filter_label(self) -> str:
        return "none" if self.tau == 0 else self.filter


@dataclass(frozen=True)
class CalibrationGrid:
    alphas: tuple[float, ...]
    taus: tuple[float, ...] = DEFAULT_TAUS
    filters: tuple[str, ...] = ("strict",)

    def __post_init__(self) -> None:
        from uldkit.uld.relative_top import FILTERS  # torch: not at the CLI's start-up

        for name, values in (("alpha", self.alphas), ("tau", self.taus),
                             ("filter", self.filters)):
            if not values:
                raise ConfigError(f"the calibration grid has no {name} value: give at least one")
        for alpha in self.alphas:
            if not math.isfinite(alpha) or alpha <= 0:
                raise ConfigError(f"alpha must be a finite number > 0, not {alpha}")
        for tau in self.taus:
            if not 0 <= tau <= 1:
                raise ConfigError(f"tau must be in [0, 1] (0 turns the filter off), not {tau}")
        for name in self.filters:
            if name not in FILTERS:
                raise ConfigError(f"filter must be one of {', '.join(FILTERS)}, not {name!r}")

    def settings(self) -> list[Setting]:
        """Every combination, once: at tau 0 no filter applies, so only the first is kept."""
        found = {}
        for name, tau, alpha in itertools.product(dict.fromkeys(self.filters),
                                                  sorted(set(self.taus)),
                                                  sorted(set(self.alphas))):
            key = (alpha, tau, self.filters[0] if tau == 0 else name)
            found.setdefault(key, Setting(*key))
        return list(found.values())


@dataclass(frozen=True)
class CalibrationPoint:
    setting: Setting
    aucs: dict[str, float]
    model_utility: float
    utility_ratio: float
    forget_quality: float | None
    gap: float  # max over attacks of |AUC - retain AUC|
    keeps_utility: bool

    def to_dict(self) -> dict[str, Any]:
        return {"alpha": self.setting.alpha, "tau": self.setting.tau,
                "filter": self.setting.filter, "aucs": self.aucs,
                "model_utility": self.model_utility, "utility_ratio": self.utility_ratio,
                "forget_quality": self.forget_quality, "gap": self.gap,
                "keeps_utility": self.keeps_utility}


@dataclass
class Calibration:
    retain_aucs: dict[str, float]
    target_utility: float
    min_utility: float
    tolerance: float
    points: list[CalibrationPoint] = field(default_factory=list)

    @property
    def best(self) -> CalibrationPoint | None:
        """The setting that keeps utility with the smallest gap (None: none keeps it)."""
        keeping = [p for p in self.points if p.keeps_utility]
        return min(keeping, key=lambda p: (p.gap, -p.model_utility)) if keeping else None

    @property
    def met(self) -> bool:
        best = self.best
        return best is not None and best.gap <= self.tolerance

    def frontier(self) -> list[CalibrationPoint]:
        """Settings no other beats on both gap (lower) and utility (higher), by gap."""
        def dominated(p: CalibrationPoint) -> bool:
            return any(q.gap <= p.gap and q.model_utility >= p.model_utility
                       and (q.gap < p.gap or q.model_utility > p.model_utility)
                       for q in self.points)
        return sorted((p for p in self.points if not dominated(p)), key=lambda p: p.gap)

    def conclusion(self) -> str:
        best = self.best
        if best is None:
            return (f"No setting keeps {self.min_utility:.0%} of the target's model utility "
                    f"({self.target_utility:.4f}).")
        verdict = "met" if self.met else "not met"
        return (f"Goal {verdict}: best {best.setting.label()} keeps "
                f"{best.utility_ratio:.1%} of the target's utility with every attack's AUC "
                f"within {best.gap:.3f} of the retain model's (goal: {self.tolerance:g}).")

    def to_dict(self) -> dict[str, Any]:
        best = self.best
        return {
            "retain_aucs": self.retain_aucs, "target_model_utility": self.target_utility,
            "min_utility": self.min_utility, "tolerance": self.tolerance,
            "goal_met": self.met, "best": None if best is None else best.to_dict(),
            "frontier": [p.to_dict() for p in self.frontier()],
            "points": [p.to_dict() for p in self.points],
            "conclusion": self.conclusion(),
        }


@dataclass(frozen=True)
class MiaData:
    """Forget answers (members) and holdout answers (non-members), with their questions."""

    forget: Sequence[str]
    holdout: Sequence[str]
    forget_questions: Sequence[str] | None = None
    holdout_questions: Sequence[str] | None = None

    def __post_init__(self) -> None:
        if not self.forget or not self.holdout:
            raise ConfigError("calibration needs forget and holdout answers")

    def aucs(self, lm: LanguageModel, k: float, batch_size: int) -> dict[str, float]:
        questions = None
        if self.forget_questions is not None and self.holdout_questions is not None:
            questions = [*self.forget_questions, *self.holdout_questions]
        scores = mia_scores(lm, [*self.forget, *self.holdout], k, batch_size=batch_size,
                            questions=questions)
        n = len(self.forget)
        return {name: roc_auc(values[:n], values[n:]) for name, values in scores.items()}


def calibrate_uld(
    uld: LogitDifferenceModel,
    retain: LanguageModel,
    data: MiaData,
    utility: Utility,
    grid: CalibrationGrid,
    *,
    min_utility: float = DEFAULT_MIN_UTILITY,
    tolerance: float = DEFAULT_TOLERANCE,
    refine: int = DEFAULT_REFINE,
    k: float = DEFAULT_K,
    batch_size: int = 16,
    on_point: Callable[[CalibrationPoint], None] | None = None,
) -> Calibration:
    """Every grid setting (then `refine` rounds of alpha midpoints) scored by the MIA attacks
    and `utility`; see the module for what is best and what the frontier is."""
    if not 0 < min_utility <= 1:
        raise ConfigError(f"min_utility must be in (0, 1], not {min_utility}")
    if not tolerance >= 0:
        raise ConfigError(f"tolerance must be >= 0, not {tolerance}")
    if refine < 0:
        raise ConfigError(f"refine must be >= 0, not {refine}")
    target_utility, _ = utility(uld.target)
    result = Calibration(data.aucs(retain, k, batch_size), target_utility, min_utility,
                         tolerance)

    def evaluate(setting: Setting) -> None:
        view = uld.with_settings(alpha=setting.alpha, tau=setting.tau, filter=setting.filter)
        aucs = data.aucs(view, k, batch_size)
        model_utility, forget_quality = utility(view)
        ratio = model_utility / target_utility if target_utility > 0 else math.inf
        gap = max(abs(aucs[name] - result.retain_aucs[name]) for name in aucs)
        point = CalibrationPoint(setting, aucs, model_utility, ratio, forget_quality, gap,
                                 ratio >= min_utility)
        result.points.append(point)
        if on_point is not None:
            on_point(point)

    for setting in grid.settings():
        evaluate(setting)
    for _ in range(refine):
        before = _closest(result)
        for setting in _midpoints(result):
            evaluate(setting)
        if _closest(result).gap >= before.gap:  # no better setting between the grid's
            break
    return result


def _closest(result: Calibration) -> CalibrationPoint:
    """The best setting, or the smallest-gap one when none keeps utility."""
    return result.best or min(result.points, key=lambda p: p.gap)


def _midpoints(result: Calibration) -> list[Setting]:
    """Alpha midpoints between the best setting and its neighbours at the same tau and filter
    (the smallest-gap setting when none keeps utility); none closer than 1e-3 apart."""
    best = _closest(result)
    same = sorted({p.setting.alpha for p in result.points
                   if (p.setting.tau, p.setting.filter)
                   == (best.setting.tau, best.setting.filter)})
    index = same.index(best.setting.alpha)
    neighbours = same[max(0, index - 1):index] + same[index + 1:index + 2]
    return [Setting(round((best.setting.alpha + n) / 2, 6), best.setting.tau,
                    best.setting.filter)
            for n in neighbours if abs(n - best.setting.alpha) > 2e-3]

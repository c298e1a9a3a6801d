"""TOFU aggregate metrics from a per-sample log (definitions: docs METRICS.md, TOFU section).

Matches the TOFU authors' aggregation: per-token mean losses in, Prob. as the length-
normalised probability (normalised over the true and perturbed answers for real authors and
world facts), ROUGE-L recall, the truth-ratio statistic R, Model Utility as the harmonic mean
of the nine non-forget figures, and Forget Quality as the KS-test p-value of the forget-set
R values against those of a retain model.

Beyond TOFU (METRICS.md, "Other"), from the forget set when its log has them: the mean exact
memorisation and extraction strength of the true answers, and the fluency of the generated
answers (`uldkit.eval.memorisation.fluency`). A log without them (e.g. the TOFU authors')
gives None.

Two sets of formulas (`formulas`): "tofu" (the TOFU authors' code, in log space where
probabilities would underflow) and "openunlearning" (OpenUnlearning's code: the same
definitions with its 1e-10 guards, P / (P + sum_i P_i + 1e-10) and 1/R = P_perturbed /
(P_paraphrased + 1e-10)), which reproduces its summaries to ~1e-11 where "tofu" differs by
~1e-8.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.special import logsumexp
from scipy.stats import hmean, ks_2samp

from uldkit.errors import ConfigError, DataError
from uldkit.eval.memorisation import fluency
from uldkit.eval.tofu_log import (
    AVERAGE_PERTURB_LOSS,
    AVG_GT_LOSS,
    AVG_PARAPHRASED_LOSS,
    EXACT_MEMORISATION,
    EXTRACTION_STRENGTH,
    FORGET_SET,
    GENERATED_TEXT,
    REAL_AUTHORS_SET,
    RETAIN_SET,
    ROUGE_L_RECALL,
    WORLD_FACTS_SET,
    answers_mismatch,
    first_difference,
    sample_indices,
    true_answers,
    validate_tofu_log,
)

# Name prefix of each set's figures in TofuSummary.
SET_NAMES = {
    FORGET_SET: "forget",
    RETAIN_SET: "retain",
    REAL_AUTHORS_SET: "real_authors",
    WORLD_FACTS_SET: "world_facts",
}
TOFU = "tofu"
OPENUNLEARNING = "openunlearning"
FORMULAS = (TOFU, OPENUNLEARNING)
_GUARD = 1e-10  # OpenUnlearning's

# Sets whose Prob. is normalised over the true and perturbed answers.
_NORMALISED_PROB_SETS = (REAL_AUTHORS_SET, WORLD_FACTS_SET)


@dataclass(frozen=True)
class TofuSummary:
    """TOFU's headline numbers and the twelve figures behind them."""

    model_utility: float
    forget_quality: float | None
    ks_statistic: float | None
    forget_prob: float
    forget_rouge: float
    forget_truth_ratio: float
    retain_prob: float
    retain_rouge: float
    retain_truth_ratio: float
    real_authors_prob: float
    real_authors_rouge: float
    real_authors_truth_ratio: float
    world_facts_prob: float
    world_facts_rouge: float
    world_facts_truth_ratio: float
    forget_exact_memorisation: float | None = None
    forget_extraction_strength: float | None = None
    forget_answer_fluency: dict[str, float] | None = None  # memorisation.Fluency.to_dict()

    def to_dict(self) -> dict[str, float | None]:
        return asdict(self)


def column(set_log: Mapping[str, Any], field: str) -> np.ndarray:
    """One field of a set log as an array, samples in index order."""
    return np.asarray([set_log[field][index] for index in sample_indices(set_log)], dtype=float)


def truth_ratios(set_log: Mapping[str, Any]) -> np.ndarray:
    """R per sample: exp(mean_i L(perturbed_i) - L(paraphrased)), from per-token mean losses."""
    perturbed = column(set_log, AVERAGE_PERTURB_LOSS).mean(axis=-1)
    with np.errstate(over="ignore"):  # a loss gap above ~709 is R = inf, scored as such
        return np.exp(perturbed - column(set_log, AVG_PARAPHRASED_LOSS))


def openunlearning_truth_scores(set_log: Mapping[str, Any]) -> np.ndarray:
    """OpenUnlearning's per-sample truth ratio: P(perturbed) / (P(paraphrased) + 1e-10)."""
    perturbed = np.exp(-column(set_log, AVERAGE_PERTURB_LOSS).mean(axis=-1))
    return perturbed / (np.exp(-column(set_log, AVG_PARAPHRASED_LOSS)) + _GUARD)


def answer_probs(
    set_log: Mapping[str, Any], normalised: bool, formulas: str = TOFU
) -> np.ndarray:
    """Prob. per sample: P(answer), or P(answer) / (P(answer) + sum_i P(perturbed_i))."""
    true_loss = column(set_log, AVG_GT_LOSS)
    if not normalised:
        return np.exp(-true_loss)
    if formulas == OPENUNLEARNING:
        probs = np.exp(-true_loss)
        return probs / (probs + np.exp(-column(set_log, AVERAGE_PERTURB_LOSS)).sum(-1) + _GUARD)
    # In log space: the probabilities themselves underflow to 0 / 0 for losses above ~745
    # (a model that filters tokens scores them -1000).
    log_probs = -np.concatenate([true_loss[:, None], column(set_log, AVERAGE_PERTURB_LOSS)], -1)
    return np.exp(log_probs[:, 0] - logsumexp(log_probs, axis=-1))


def truth_ratio_score(ratios: np.ndarray, is_forget: bool) -> float:
    """The reported Truth Ratio: mean(min(R, 1/R)) on forget, mean(max(0, 1 - 1/R)) elsewhere."""
    with np.errstate(over="ignore", divide="ignore"):  # R of 0 or inf: 1/R is inf or 0
        if is_forget:
            return float(np.mean(np.minimum(ratios, 1.0 / ratios)))
        return float(np.mean(np.maximum(0.0, 1.0 - 1.0 / ratios)))


def openunlearning_truth_ratio_score(scores: np.ndarray, is_forget: bool) -> float:
    """Truth Ratio from OpenUnlearning's scores s = 1/R, with its guard."""
    if is_forget:
        return float(np.mean(np.minimum(scores, 1.0 / (scores + _GUARD))))
    return float(np.mean(np.maximum(0.0, 1.0 - scores)))


def set_figures(
    set_log: Mapping[str, Any], set_key: str, formulas: str = TOFU
) -> dict[str, float]:
    """Prob., ROUGE and Truth Ratio of one set, keyed `<set>_prob`, `<set>_rouge`, ..."""
    name = SET_NAMES[set_key]
    is_forget = set_key == FORGET_SET
    truth_ratio = (
        openunlearning_truth_ratio_score(openunlearning_truth_scores(set_log), is_forget)
        if formulas == OPENUNLEARNING else truth_ratio_score(truth_ratios(set_log), is_forget))
    normalised = set_key in _NORMALISED_PROB_SETS
    return {
        f"{name}_prob": float(np.mean(answer_probs(set_log, normalised, formulas))),
        f"{name}_rouge": float(np.mean(column(set_log, ROUGE_L_RECALL))),
        f"{name}_truth_ratio": truth_ratio,
    }


def forget_quality(
    log: Mapping[str, Any], retain_log: Mapping[str, Any]
) -> tuple[float, float]:
    """(p-value, statistic) of the KS test between the forget-set R of `log` and `retain_log`.

    Both logs must score the same forget samples (same count and indices).
    """
    validate_tofu_log(log, "log", required_sets=(FORGET_SET,))
    validate_tofu_log(retain_log, "retain log", required_sets=(FORGET_SET,))
    model_forget, retain_forget = log[FORGET_SET], retain_log[FORGET_SET]
    model_indices, retain_indices = sample_indices(model_forget), sample_indices(retain_forget)
    if len(model_indices) != len(retain_indices):
        raise DataError(
            f"forget set sizes differ: the log has {len(model_indices)} samples, "
            f"the retain log has {len(retain_indices)}"
        )
    mismatch = first_difference(model_indices, retain_indices)
    if mismatch is not None:
        holder = "the log" if mismatch in model_forget[AVG_GT_LOSS] else "the retain log"
        raise DataError(
            f"forget set sample indices differ between the log and the retain log: "
            f"first mismatching index {mismatch!r} (only in {holder})"
        )
    ours, theirs = true_answers(model_forget), true_answers(retain_forget)
    if ours is not None and theirs is not None:
        mismatch = answers_mismatch(ours, theirs)
        if mismatch is not None:
            raise DataError(f"the retain log holds other forget questions than the log: "
                            f"{mismatch}")
    with warnings.catch_warnings():
        # scipy's exact p-value can fail for tied samples; it then uses the asymptotic one,
        # as TOFU's own evaluation (the same scipy call) does.
        warnings.filterwarnings("ignore", "ks_2samp: Exact calculation unsuccessful",
                                RuntimeWarning)
        result = ks_2samp(truth_ratios(model_forget), truth_ratios(retain_forget))
    return float(result.pvalue), float(result.statistic)


def aggregate_tofu(
    log: Mapping[str, Any], retain_log: Mapping[str, Any] | None = None,
    formulas: str = TOFU,
) -> TofuSummary:
    """All TOFU figures of a log; forget quality and KS statistic need the retain model's log.
    `formulas`: "tofu" or "openunlearning" (module docstring)."""
    if formulas not in FORMULAS:
        raise ConfigError(f"formulas must be one of {', '.join(FORMULAS)}, not {formulas!r}")
    validate_tofu_log(log, "log")
    figures: dict[str, float] = {}
    for set_key in SET_NAMES:
        figures.update(set_figures(log[set_key], set_key, formulas))
    utility_inputs = [
        value for name, value in figures.items() if not name.startswith(SET_NAMES[FORGET_SET])
    ]
    quality, statistic = (None, None) if retain_log is None else forget_quality(log, retain_log)
    with np.errstate(over="ignore", divide="ignore"):  # a figure of ~0 makes the mean ~0
        utility = float(hmean(utility_inputs))
    return TofuSummary(
        model_utility=utility,
        forget_quality=quality,
        ks_statistic=statistic,
        **figures,
        **memorisation_figures(log[FORGET_SET]),
    )


def memorisation_figures(forget_log: Mapping[str, Any]) -> dict[str, Any]:
    """Mean EM and ES of the forget answers and the fluency of the generated ones (None for
    what the log does not hold)."""
    def mean_of(field: str) -> float | None:
        return float(np.mean(column(forget_log, field))) if field in forget_log else None

    generated = forget_log.get(GENERATED_TEXT)
    answers = None if generated is None else [
        generated[index][1] for index in sample_indices(forget_log)
        if index in generated and len(generated[index]) > 1]
    return {
        "forget_exact_memorisation": mean_of(EXACT_MEMORISATION),
        "forget_extraction_strength": mean_of(EXTRACTION_STRENGTH),
        "forget_answer_fluency": None if not answers else fluency(answers).to_dict(),
    }

"""Perplexity of generated answers under a reference model (docs/metrics.md, "Fluency").

A degenerate answer ("Morbel the Calda,ch,ch,ch Island books.") is one a fluent model finds
unlikely. Each generated answer is scored as the answers of the TOFU loss pass are: the
answer's tokens and EOS after the question prompt, teacher-forced (`answer_scores`). The
perplexity of a set of answers is exp(sum of NLLs / sum of scored tokens): the per-token
perplexity of all the answers together, so long answers weigh by their length.

The reference is the retain model when there is one (a model that never saw the forget set
and answers its questions fluently), else the target. The ratio divides the evaluated
model's answers' perplexity by that of the retain model's own answers to the same
questions, under the same reference: 1 means as fluent as the retain model; issue 17's aim
is at most 1.5.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

from uldkit.models.lm import LanguageModel
from uldkit.models.scoring import answer_scores
from uldkit.training.run_dir import read_manifest

PERPLEXITY = "perplexity"  # of the evaluated model's generated forget answers
RETAIN_PERPLEXITY = "retain_answers_perplexity"  # of the retain model's, same reference
PERPLEXITY_RATIO = "perplexity_ratio"
EMPTY_ANSWERS = "empty_answers"  # not in the perplexity: an empty answer has no tokens
PERPLEXITY_KEYS = (PERPLEXITY, RETAIN_PERPLEXITY, PERPLEXITY_RATIO, EMPTY_ANSWERS)
_LARGEST_EXPONENT = 709.0  # math.exp overflows above it


def answers_perplexity(
    reference: LanguageModel, questions: Sequence[str], answers: Sequence[str],
    batch_size: int = 16, max_length: int = 512,
) -> float | None:
    """exp(total NLL / total tokens) of the non-empty `answers` (each with EOS) after their
    questions; None when every answer is empty."""
    kept = [(q, a) for q, a in zip(questions, answers, strict=True) if a.strip()]
    if not kept:
        return None
    scored = answer_scores(reference, [q for q, _ in kept], [a for _, a in kept], batch_size,
                           max_length)
    mean = float(scored.sums.sum()) / max(int(scored.counts.sum()), 1)
    return math.exp(mean) if mean < _LARGEST_EXPONENT else math.inf


def perplexity_figures(
    reference: LanguageModel, questions: Sequence[str], answers: Sequence[str],
    retain_answers: Sequence[str] | None = None, batch_size: int = 16, max_length: int = 512,
) -> dict[str, float | None]:
    """The answers' perplexity under `reference` and how many were empty; with the retain
    model's answers to the same questions, theirs and the ratio of the two."""
    perplexity = answers_perplexity(reference, questions, answers, batch_size, max_length)
    retain = None if retain_answers is None else answers_perplexity(
        reference, questions, retain_answers, batch_size, max_length)
    ratio = None if perplexity is None or not retain else perplexity / retain
    return {PERPLEXITY: perplexity, RETAIN_PERPLEXITY: retain, PERPLEXITY_RATIO: ratio,
            EMPTY_ANSWERS: sum(1 for a in answers if not a.strip())}


def fluency_reference_path(model: str | os.PathLike) -> str:
    """The target a run's manifest names (when that directory exists), else `model` itself:
    the reference when no retain model is given."""
    named = (read_manifest(model) or {}).get("target")
    return str(named) if isinstance(named, str) and Path(named).is_dir() else str(model)

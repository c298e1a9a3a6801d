"""What every attack on an unlearned model is given (the model, where to write, the forget
set it probes and how answers are generated, checked the same way for each attack) and how
each scores what the model still holds of the forget set."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from uldkit.data.types import QAPair
from uldkit.errors import ConfigError
from uldkit.eval.rouge import rouge_l
from uldkit.eval.tofu_eval import greedy_answers
from uldkit.models.lm import LanguageModel
from uldkit.models.scoring import answer_losses
from uldkit.training.run_dir import read_manifest


@dataclass
class AttackedModel:
    model: str  # the unlearned model directory: plain, ULD or offset
    out: str
    data: str = "synthetic"
    forget: str = "forget10"
    people: int = 40
    data_seed: int = 0
    original: str | None = None  # the original target; default: the one the manifest names
    device: str | None = None
    max_new_tokens: int | None = None  # greedy answer cap; None: TOFU's (200 tokens in all)
    eval_batch_size: int = 16
    max_length: int = 128

    # Settings of the attack itself that must be at least 1 (besides the shared ones).
    COUNTS: ClassVar[tuple[str, ...]] = ()

    def check(self) -> None:
        for name in ("eval_batch_size", "max_length", *self.COUNTS):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, not {getattr(self, name)}")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise ConfigError("max_new_tokens must be at least 1")
        if not Path(self.model).is_dir():
            raise ConfigError(f"model directory '{self.model}' does not exist")
        if self.original is not None and not Path(self.original).is_dir():
            raise ConfigError(f"original model directory '{self.original}' does not exist")

    def kind_and_original(self) -> tuple[str, str | None]:
        """The attacked model's kind (plain, uld, offset) and the original target to compare
        with: the one given, else the one its manifest names when that directory exists."""
        manifest = read_manifest(self.model) or {}
        kind = manifest.get("kind", "plain")
        if self.original is not None:
            return kind, str(self.original)
        named = manifest.get("target")
        return kind, str(named) if isinstance(named, str) and Path(named).is_dir() else None


@dataclass
class ForgetScores:
    """Per forget pair: P(answer), ROUGE-L recall of the greedy answer, and that answer."""

    prob: np.ndarray
    rouge: np.ndarray
    answers: list[str]


@torch.no_grad()
def score_forget_set(lm: LanguageModel, pairs: Sequence[QAPair],
                     config: AttackedModel) -> ForgetScores:
    """How much of the forget set `lm` still holds, scored as every attack reports it."""
    questions = [p.question for p in pairs]
    losses = answer_losses(lm, questions, [p.answer for p in pairs], config.eval_batch_size,
                           config.max_length)
    answers = greedy_answers(lm, questions, config.max_new_tokens, config.eval_batch_size)
    rouge = [rouge_l(answer, pair.answer).recall for answer, pair in zip(answers, pairs)]
    return ForgetScores(np.exp(-losses), np.asarray(rouge, dtype=np.float64), answers)


def mean_scores(scores: ForgetScores, indices: Sequence[int] | None = None) -> dict[str, float]:
    """Mean P(answer) and ROUGE-L over the pairs at `indices` (all of them by default)."""
    chosen = slice(None) if indices is None else indices
    return {"prob": float(scores.prob[chosen].mean()),
            "rouge": float(scores.rouge[chosen].mean())}


def sample_rows(pairs: Sequence[QAPair], before: ForgetScores, after: ForgetScores,
                original: ForgetScores | None,
                role: Callable[[int], str] | None = None) -> list[dict[str, Any]]:
    """One row per forget pair: its scores before and after the attack and the original's
    (None when there is no original), with the pair's `role` in the attack when given."""
    rows = []
    for i, pair in enumerate(pairs):
        row: dict[str, Any] = {"index": i, **({} if role is None else {"role": role(i)}),
                               "question": pair.question, "truth": pair.answer}
        for label, scores in (("before", before), ("after", after), ("original", original)):
            row[f"{label}_prob"] = None if scores is None else float(scores.prob[i])
            row[f"{label}_rouge"] = None if scores is None else float(scores.rouge[i])
            row[f"{label}_answer"] = None if scores is None else scores.answers[i]
        rows.append(row)
    return rows

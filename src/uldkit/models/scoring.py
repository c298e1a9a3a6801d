"""Per-sample answer scoring of any `LanguageModel`: batched and padding-safe."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from uldkit.data.collate import collate, token_nll
from uldkit.data.formatting import encode_qa
from uldkit.models.lm import LanguageModel


@dataclass(frozen=True)
class AnswerScores:
    """Per (question, answer): summed NLL over the answer tokens and their number; with
    greedy matches asked for, also whether each answer token is the model's argmax."""

    sums: np.ndarray  # float64 [n]
    counts: np.ndarray  # int64 [n]
    greedy_matches: list[np.ndarray] | None = None  # bool [answer tokens], per pair


@torch.no_grad()
def answer_scores(
    lm: LanguageModel,
    questions: Sequence[str],
    answers: Sequence[str],
    batch_size: int = 16,
    max_length: int = 512,
    padding_side: str = "right",
    on_batch: Callable[[int], None] | None = None,
    greedy_matches: bool = False,
) -> AnswerScores:
    """The answers' losses (and greedy matches) from one teacher-forced pass per batch.

    Examples are sorted by length before batching (less padding), and scored with position
    ids counted over real tokens, so the values do not depend on batch size or padding.
    `on_batch(n)` is called after each batch with the number of pairs it scored.
    """
    if len(questions) != len(answers):
        raise ValueError("questions and answers differ in length")
    encoded = [encode_qa(lm.tokenizer, q, a, max_length) for q, a in zip(questions, answers)]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i].input_ids))
    sums = np.zeros(len(encoded), dtype=np.float64)
    counts = np.zeros(len(encoded), dtype=np.int64)
    matches: list[np.ndarray] = [np.zeros(0, dtype=bool)] * len(encoded)
    pad_id = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        batch = collate([encoded[i] for i in chunk], pad_id, padding_side)
        batch = {k: v.to(lm.device) for k, v in batch.items()}
        logits = lm.logits(batch["input_ids"], batch["attention_mask"])
        nll, mask = token_nll(logits, batch["labels"])
        sums[chunk] = nll.double().sum(-1).cpu().numpy()
        counts[chunk] = mask.sum(-1).cpu().numpy()
        if greedy_matches:
            hits = (logits[:, :-1].argmax(-1) == batch["labels"][:, 1:]).cpu().numpy()
            scored = mask.cpu().numpy()
            for row, index in enumerate(chunk):
                matches[index] = hits[row][scored[row]]
        if on_batch is not None:
            on_batch(len(chunk))
    return AnswerScores(sums, counts, matches if greedy_matches else None)


def answer_losses(
    lm: LanguageModel,
    questions: Sequence[str],
    answers: Sequence[str],
    batch_size: int = 16,
    max_length: int = 512,
    padding_side: str = "right",
) -> np.ndarray:
    """Mean negative log-likelihood per answer token, L(a|q), for each (question, answer).

    Padding-safe and independent of the batch size (see `answer_scores`).
    """
    scores = answer_scores(lm, questions, answers, batch_size, max_length, padding_side)
    return scores.sums / np.maximum(scores.counts, 1)


def mean_answer_probability(
    lm: LanguageModel, questions: Sequence[str], answers: Sequence[str], batch_size: int = 16
) -> float:
    """Mean over samples of exp(-L(a|q)): TOFU's Prob. on forget/retain sets."""
    return float(np.exp(-answer_losses(lm, questions, answers, batch_size)).mean())

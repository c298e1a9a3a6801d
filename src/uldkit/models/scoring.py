"""Per-sample answer scoring of any `LanguageModel`: batched and padding-safe."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from uldkit.data.collate import collate, token_nll
from uldkit.data.formatting import IGNORE_INDEX, Encoded, encode_prompt, encode_qa
from uldkit.models.lm import LanguageModel
from uldkit.models.prefix_scoring import continuation_logits


@dataclass(frozen=True)
class AnswerScores:
    """Per (question, answer): summed NLL over the answer tokens and their number; with
    greedy matches asked for, also whether each answer token is the model's argmax, and
    that argmax (the model's greedy choice given the prompt and the answer before it)."""

    sums: np.ndarray  # float64 [n]
    counts: np.ndarray  # int64 [n]
    greedy_matches: list[np.ndarray] | None = None  # bool [answer tokens], per pair
    greedy_ids: list[np.ndarray] | None = None  # int64 [answer tokens], per pair

    def greedy_continuation(self, index: int) -> list[int]:
        """The model's greedy continuation of pair `index`'s prompt as far as this pass
        shows it: the argmax tokens up to and including the first one that differs from
        the answer (all of them if none does). Needs greedy matches."""
        if self.greedy_matches is None or self.greedy_ids is None:
            raise ValueError("greedy continuations need answer_scores(greedy_matches=True)")
        misses = np.flatnonzero(~self.greedy_matches[index])
        end = int(misses[0]) + 1 if misses.size else len(self.greedy_ids[index])
        return self.greedy_ids[index][:end].tolist()


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
    shared_prefix: bool = True,
) -> AnswerScores:
    """The answers' losses (and greedy matches) from one teacher-forced pass per batch.

    Examples are sorted by length before batching (less padding), and scored with position
    ids counted over real tokens, so the values do not depend on batch size or padding.
    With `shared_prefix`, the answers of one question are scored from one pass over its
    prompt (`uldkit.models.prefix_scoring`); a batch then holds the answers of whole
    questions, as many as fit in the tokens of `batch_size` whole sequences (prompts are
    sorted by length, the longest prompt last). The losses equal those of whole sequences
    to float32 round-off.
    `on_batch(n)` is called after each batch with the number of pairs it scored.
    """
    if len(questions) != len(answers):
        raise ValueError("questions and answers differ in length")
    prompts = {q: encode_prompt(lm.tokenizer, q) for q in dict.fromkeys(questions)}
    encoded = [encode_qa(lm.tokenizer, q, a, max_length, prompts[q])
               for q, a in zip(questions, answers)]
    if shared_prefix and all(e.prompt_length >= 1 for e in encoded):
        return _shared_prefix_scores(lm, encoded, batch_size, on_batch, greedy_matches)
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i].input_ids))
    sums = np.zeros(len(encoded), dtype=np.float64)
    counts = np.zeros(len(encoded), dtype=np.int64)
    matches: list[np.ndarray] = [np.zeros(0, dtype=bool)] * len(encoded)
    choices: list[np.ndarray] = [np.zeros(0, dtype=np.int64)] * len(encoded)
    pad_id = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        batch = collate([encoded[i] for i in chunk], pad_id, padding_side)
        batch = {k: v.to(lm.device) for k, v in batch.items()}
        logits = lm.logits(batch["input_ids"], batch["attention_mask"])
        nll, mask = token_nll(logits, batch["labels"])
        greedy = logits[:, :-1].argmax(-1) if greedy_matches else None
        _record(chunk, nll, mask, greedy, batch["labels"][:, 1:], sums, counts, matches, choices)
        if on_batch is not None:
            on_batch(len(chunk))
    return _scores(sums, counts, matches, choices, greedy_matches)


def _shared_prefix_scores(
    lm: LanguageModel,
    encoded: Sequence[Encoded],
    batch_size: int,
    on_batch: Callable[[int], None] | None,
    greedy_matches: bool,
) -> AnswerScores:
    groups: dict[tuple[int, ...], list[int]] = {}
    for index, example in enumerate(encoded):
        groups.setdefault(tuple(example.input_ids[:example.prompt_length]), []).append(index)
    prompts = sorted(groups, key=len)
    sums = np.zeros(len(encoded), dtype=np.float64)
    counts = np.zeros(len(encoded), dtype=np.int64)
    matches: list[np.ndarray] = [np.zeros(0, dtype=bool)] * len(encoded)
    choices: list[np.ndarray] = [np.zeros(0, dtype=np.int64)] * len(encoded)
    pad_id = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0
    for batch in _whole_groups(prompts, groups, encoded, batch_size):
        members = [i for prompt in batch for i in groups[prompt]]
        rows = torch.tensor([p for p, prompt in enumerate(batch) for _ in groups[prompt]])
        prompt_ids, prompt_mask = _padded([list(p) for p in batch], pad_id, left=True)
        tails = [encoded[i].input_ids[encoded[i].prompt_length:] for i in members]
        tail_ids, tail_mask = _padded(tails, pad_id, left=False)
        labels = _padded([encoded[i].labels[encoded[i].prompt_length:] for i in members],
                         IGNORE_INDEX, left=False)[0]
        device = lm.device
        logits = continuation_logits(lm, prompt_ids.to(device), prompt_mask.to(device),
                                     rows.to(device), tail_ids.to(device), tail_mask.to(device))
        labels = labels.to(device)
        mask = labels != IGNORE_INDEX
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        nll = -logprobs.gather(-1, labels.masked_fill(~mask, 0).unsqueeze(-1)).squeeze(-1)
        nll = torch.where(mask, nll, torch.zeros_like(nll))
        greedy = logits.argmax(-1) if greedy_matches else None
        _record(members, nll, mask, greedy, labels, sums, counts, matches, choices)
        if on_batch is not None:
            on_batch(len(members))
    return _scores(sums, counts, matches, choices, greedy_matches)


def _record(rows: Sequence[int], nll: torch.Tensor, mask: torch.Tensor,
            greedy: torch.Tensor | None, labels: torch.Tensor, sums: np.ndarray,
            counts: np.ndarray, matches: list[np.ndarray], choices: list[np.ndarray]) -> None:
    """Store a batch's per-answer loss sums, token counts and (with `greedy`, the argmax
    at each position) greedy matches and choices."""
    sums[rows] = nll.double().sum(-1).cpu().numpy()
    counts[rows] = mask.sum(-1).cpu().numpy()
    if greedy is not None:
        greedy_np, scored = greedy.cpu().numpy(), mask.cpu().numpy()
        hits_np = (greedy == labels).cpu().numpy()
        for row, index in enumerate(rows):
            matches[index] = hits_np[row][scored[row]]
            choices[index] = greedy_np[row][scored[row]]


def _scores(sums: np.ndarray, counts: np.ndarray, matches: list[np.ndarray],
            choices: list[np.ndarray], greedy: bool) -> AnswerScores:
    return AnswerScores(sums, counts, matches if greedy else None, choices if greedy else None)


def _whole_groups(
    prompts: Sequence[tuple[int, ...]], groups: dict[tuple[int, ...], list[int]],
    encoded: Sequence[Encoded], batch_size: int,
) -> list[list[tuple[int, ...]]]:
    """Prompts in batches whose padded tokens (prompts once, answers after them) stay within
    what `batch_size` of the longest whole sequences take, so no batch holds more scores
    than a whole-sequence batch could; a group larger than that goes alone."""
    budget = batch_size * max(len(e.input_ids) for e in encoded)
    batches: list[list[tuple[int, ...]]] = []
    current: list[tuple[int, ...]] = []
    rows = tail_width = 0
    for prompt in prompts:
        tails = [len(encoded[i].input_ids) - encoded[i].prompt_length for i in groups[prompt]]
        new_rows, new_width = rows + len(tails), max(tail_width, *tails)
        cost = new_rows * new_width + (len(current) + 1) * len(prompt)
        if current and cost > budget:
            batches.append(current)
            current, new_rows, new_width = [], len(tails), max(tails)
        current.append(prompt)
        rows, tail_width = new_rows, new_width
    if current:
        batches.append(current)
    return batches


def _padded(
    sequences: Sequence[Sequence[int]], pad: int, left: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in sequences)
    ids = np.full((len(sequences), width), pad, dtype=np.int64)
    mask = np.zeros((len(sequences), width), dtype=np.int64)
    for row, sequence in enumerate(sequences):
        span = slice(width - len(sequence), width) if left else slice(0, len(sequence))
        ids[row, span] = sequence
        mask[row, span] = 1
    return torch.from_numpy(ids), torch.from_numpy(mask)


def answer_losses(
    lm: LanguageModel,
    questions: Sequence[str],
    answers: Sequence[str],
    batch_size: int = 16,
    max_length: int = 512,
    padding_side: str = "right",
    shared_prefix: bool = True,
) -> np.ndarray:
    """Mean negative log-likelihood per answer token, L(a|q), for each (question, answer).

    Padding-safe and independent of the batch size (see `answer_scores`).
    """
    scores = answer_scores(lm, questions, answers, batch_size, max_length, padding_side,
                           shared_prefix=shared_prefix)
    return scores.sums / np.maximum(scores.counts, 1)


def mean_answer_probability(
    lm: LanguageModel, questions: Sequence[str], answers: Sequence[str], batch_size: int = 16
) -> float:
    """Mean over samples of exp(-L(a|q)): TOFU's Prob. on forget/retain sets."""
    return float(np.exp(-answer_losses(lm, questions, answers, batch_size)).mean())

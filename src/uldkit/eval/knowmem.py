"""MUSE's KnowMem in two variants: "muse", as its authors' released evaluation computes it
(swj0419/muse_bench, `metrics/knowmem.py` and `metrics/logger.py`), and "uldkit"'s own.

muse (the default):
- prompt: the in-context examples, each "Question: {q}\\nAnswer: {a}\\n\\n", then
  "Question: {q}\\nAnswer: " (raw text whatever the chat template, the tokenizer's special
  tokens added);
- greedy decoding of at most 32 new tokens; the text decoded without special tokens, then
  cut before the first "\\n\\n", then before "\\nQuestion", then before "Question:";
- score: ROUGE-L F1 (`rouge-score`, no stemming) against the true answer; KnowMem is the
  mean over the questions (MUSE reports it x 100; uldkit keeps [0, 1]).
uldkit: the model's own QA prompt (its chat template or "Question: {q}\\nAnswer:"), at most
`answer_tokens` (48) new tokens stopped at EOS, ROUGE-L recall with stemming.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from rouge_score import rouge_scorer

from uldkit.data.types import QAPair
from uldkit.errors import ConfigError
from uldkit.eval.rouge import rouge_l
from uldkit.models.generation import GenerationSettings, generate_answers, generate_ids
from uldkit.models.lm import LanguageModel

KNOWMEM_MUSE = "muse"
KNOWMEM_ULDKIT = "uldkit"
KNOWMEM_VARIANTS = (KNOWMEM_MUSE, KNOWMEM_ULDKIT)
MUSE_NEW_TOKENS = 32
MUSE_STOP_WORDS = ("\n\n", "\nQuestion", "Question:")


def check_knowmem_variant(variant: str) -> None:
    if variant not in KNOWMEM_VARIANTS:
        raise ConfigError(f"KnowMem variant must be one of {', '.join(KNOWMEM_VARIANTS)}, "
                          f"not {variant!r}")


def muse_prompt(question: str, examples: Sequence[QAPair] = ()) -> str:
    """MUSE's KnowMem prompt: the in-context examples, then the question."""
    shots = "".join(f"Question: {e.question}\nAnswer: {e.answer}\n\n" for e in examples)
    return f"{shots}Question: {question}\nAnswer: "


def cut_at_stop_words(text: str) -> str:
    """The text before each of MUSE's stop strings, applied in turn."""
    for word in MUSE_STOP_WORDS:
        text = text.split(word)[0]
    return text


@lru_cache(maxsize=1)
def _unstemmed() -> rouge_scorer.RougeScorer:
    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


def muse_rouge_l_f1(generated: str, reference: str) -> float:
    """ROUGE-L F1 without stemming, as MUSE's logger scores answers."""
    return float(_unstemmed().score(reference, generated)["rougeL"].fmeasure)


def muse_answers(
    lm: LanguageModel, questions: Sequence[str], examples: Sequence[QAPair] = (),
    max_new_tokens: int = MUSE_NEW_TOKENS, batch_size: int = 8,
) -> list[str]:
    """Greedy answers to MUSE's prompts, decoded and cut as MUSE does."""
    tokenizer = lm.tokenizer
    prompts = [tokenizer(muse_prompt(q, examples), add_special_tokens=True)["input_ids"]
               for q in questions]
    answers = [""] * len(prompts)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        generated = generate_ids(lm, [prompts[i] for i in chunk],
                                 GenerationSettings(max_new_tokens=max_new_tokens))
        for i, ids in zip(chunk, generated):
            text = tokenizer.decode(ids, skip_special_tokens=True,
                                    clean_up_tokenization_spaces=True)
            answers[i] = cut_at_stop_words(text)
    return answers


def knowmem(
    lm: LanguageModel, pairs: Sequence[QAPair], *, variant: str = KNOWMEM_MUSE,
    examples: Sequence[QAPair] = (), answer_tokens: int | None = None, batch_size: int = 8,
    name: str = "knowmem",
) -> tuple[float, list[dict]]:
    """KnowMem of `lm` on `pairs` (module docstring), and one record per pair.
    `answer_tokens`: most new tokens (default: 32 for muse, 48 for uldkit)."""
    check_knowmem_variant(variant)
    questions = [p.question for p in pairs]
    if variant == KNOWMEM_MUSE:
        answers = muse_answers(lm, questions, examples, answer_tokens or MUSE_NEW_TOKENS,
                               batch_size)
        scores = [muse_rouge_l_f1(a, p.answer) for a, p in zip(answers, pairs)]
        field = "rougeL_f1"
    else:
        answers = generate_answers(lm, questions,
                                   GenerationSettings(max_new_tokens=answer_tokens or 48),
                                   batch_size)
        scores = [rouge_l(a, p.answer).recall for a, p in zip(answers, pairs)]
        field = "rougeL_recall"
    records = [{"metric": name, "index": index, "question": pair.question,
                "answer": pair.answer, "generated": answer, field: score}
               for index, (pair, answer, score) in enumerate(zip(pairs, answers, scores))]
    return (float(np.mean(scores)) if scores else 0.0), records

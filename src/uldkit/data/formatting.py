"""Turn a question/answer pair into token ids whose labels score the answer tokens only."""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from uldkit.data.types import QAPair
from uldkit.errors import DataError

IGNORE_INDEX = -100
QA_TEMPLATE = "Question: {question}\nAnswer:"


def format_prompt(tokenizer: PreTrainedTokenizerBase, question: str) -> str:
    """The text a model sees before its answer: the chat template when the tokenizer has one."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
        )
    return QA_TEMPLATE.format(question=question)


@dataclass(frozen=True)
class Encoded:
    input_ids: list[int]
    labels: list[int]
    truncated: bool = False

    @property
    def prompt_length(self) -> int:
        return next((i for i, label in enumerate(self.labels) if label != IGNORE_INDEX),
                    len(self.labels))


def encode_prompt(tokenizer: PreTrainedTokenizerBase, question: str) -> list[int]:
    prompt = format_prompt(tokenizer, question)
    # A chat template already holds the BOS text; a plain template gets the tokenizer's own.
    add_special = not getattr(tokenizer, "chat_template", None)
    return tokenizer(prompt, add_special_tokens=add_special)["input_ids"]


def fit_prompt(prompt_ids: list[int], max_length: int) -> list[int]:
    """A prompt that leaves room for an answer within `max_length` tokens: one that does not
    keeps its last `max_length // 2` tokens (the end of the question and the answer cue)."""
    return prompt_ids if len(prompt_ids) < max_length else prompt_ids[-(max_length // 2):]


def encode_qa(
    tokenizer: PreTrainedTokenizerBase,
    question: str,
    answer: str,
    max_length: int = 512,
) -> Encoded:
    """Prompt ids then answer ids + EOS; labels are -100 on the prompt.

    Prompt and answer are tokenized separately so the boundary is exact whatever the
    tokenizer merges. Too-long pairs are cut from the answer's end, with a warning.
    """
    if not answer.strip():
        raise DataError("cannot encode an empty answer")
    prompt_ids = encode_prompt(tokenizer, question)
    answer_ids = tokenizer(" " + answer.strip(), add_special_tokens=False)["input_ids"]
    if tokenizer.eos_token_id is not None:
        answer_ids = answer_ids + [tokenizer.eos_token_id]
    if len(prompt_ids) >= max_length:
        warnings.warn(
            f"question of {len(prompt_ids)} tokens exceeds max_length {max_length}; "
            "keeping its last tokens",
            stacklevel=2,
        )
        prompt_ids = fit_prompt(prompt_ids, max_length)
    room = max_length - len(prompt_ids)
    truncated = len(answer_ids) > room
    answer_ids = answer_ids[:room]
    return Encoded(
        input_ids=prompt_ids + answer_ids,
        labels=[IGNORE_INDEX] * len(prompt_ids) + answer_ids,
        truncated=truncated,
    )


def encode_pairs(
    tokenizer: PreTrainedTokenizerBase, pairs: Iterable[QAPair], max_length: int = 512
) -> list[Encoded]:
    """Encode QA pairs; one warning says how many were cut to `max_length`."""
    encoded = [encode_qa(tokenizer, p.question, p.answer, max_length) for p in pairs]
    cut = sum(e.truncated for e in encoded)
    if cut:
        warnings.warn(
            f"{cut} of {len(encoded)} question/answer pairs were longer than max_length "
            f"{max_length} tokens and were truncated",
            stacklevel=2,
        )
    return encoded

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
# Set on a tokenizer (`strip_prompt_space`): rendered prompts lose their trailing spaces.
_STRIP_ATTRIBUTE = "uldkit_strip_prompt_space"
_WARNED_TEMPLATES: set[str] = set()
# Where a plain-format answer has run on into the next question the model imagines.
QA_STOP_TEXT = "\nQuestion:"
_ANSWER_MARK = "ANSWER-END-MARK"


def format_prompt(tokenizer: PreTrainedTokenizerBase, question: str) -> str:
    """The text a model sees before its answer: the chat template when the tokenizer has one."""
    if getattr(tokenizer, "chat_template", None):
        prompt = tokenizer.apply_chat_template(
            [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
        )
    else:
        prompt = QA_TEMPLATE.format(question=question)
    return prompt.rstrip(" \t") if getattr(tokenizer, _STRIP_ATTRIBUTE, False) else prompt


def strip_prompt_space(tokenizer: PreTrainedTokenizerBase, strip: bool = True) -> None:
    """Make every prompt rendered for `tokenizer` drop its trailing spaces (answers are
    encoded with their own leading space, so a template ending in one scores a lone space
    token the model never saw before an answer)."""
    setattr(tokenizer, _STRIP_ATTRIBUTE, strip)


def strips_prompt_space(tokenizer: PreTrainedTokenizerBase) -> bool:
    return bool(getattr(tokenizer, _STRIP_ATTRIBUTE, False))


def ends_in_space_token(tokenizer: PreTrainedTokenizerBase, ids: list[int]) -> bool:
    """Whether the last of `ids` is a token of spaces (or tabs) only. A newline ending, as
    many chat templates have, is what their models were trained on and does not count."""
    if not ids or ids[-1] in set(tokenizer.all_special_ids):
        return False
    text = tokenizer.decode([ids[-1]])
    piece = str(tokenizer.convert_ids_to_tokens(ids[-1])).replace("\u2581", " ").replace(
        "\u0120", " ")
    return any(candidate and not candidate.strip(" \t") for candidate in (text, piece))


def _warn_if_space_ending(tokenizer: PreTrainedTokenizerBase, ids: list[int]) -> None:
    template = getattr(tokenizer, "chat_template", None) or QA_TEMPLATE
    if template in _WARNED_TEMPLATES or not ids:
        return
    checked = tokenizer.__dict__.setdefault("_uldkit_space_endings", {})
    if ids[-1] not in checked:  # one check per distinct last token
        checked[ids[-1]] = ends_in_space_token(tokenizer, ids)
    if not checked[ids[-1]]:
        return
    _WARNED_TEMPLATES.add(template)
    name = (f"the chat template of tokenizer {getattr(tokenizer, 'name_or_path', '') or '?'}"
            if getattr(tokenizer, "chat_template", None) else "the QA template")
    warnings.warn(
        f"{name} renders prompts that end in a token of spaces only: every answer is then "
        "scored and generated after a lone space token, which wrecks the scores of a model "
        "trained on ' answer' tokens (OpenUnlearning's Llama-2 template takes one model's "
        "utility from 0.70 to 0.02); pass --strip-prompt-space to drop it",
        stacklevel=3,
    )


def answer_stop_texts(tokenizer: PreTrainedTokenizerBase) -> tuple[str, ...]:
    """Text that ends an answer in the prompt format the tokenizer gets: the plain QA format's
    next "Question:"; a chat template ends its turn with a token instead."""
    return () if getattr(tokenizer, "chat_template", None) else (QA_STOP_TEXT,)


def end_of_turn_id(tokenizer: PreTrainedTokenizerBase) -> int | None:
    """The special token the chat template writes right after an assistant's answer
    (<end_of_turn>, <|eot_id|>, <|im_end|>, ...), or None without a template or such token."""
    template = getattr(tokenizer, "chat_template", None)
    if not template:
        return None
    key = (id(tokenizer), len(tokenizer), str(template))
    if key not in _END_OF_TURN:
        _END_OF_TURN[key] = _find_end_of_turn(tokenizer)
    return _END_OF_TURN[key]


_END_OF_TURN: dict[tuple[int, int, str], int | None] = {}


def _find_end_of_turn(tokenizer: PreTrainedTokenizerBase) -> int | None:
    try:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": "Q"}, {"role": "assistant", "content": _ANSWER_MARK}],
            tokenize=False)
    except Exception:  # a template's own checks (jinja2 errors): it names no end of turn
        return None
    if not isinstance(text, str) or _ANSWER_MARK not in text:
        return None
    after = text[text.rindex(_ANSWER_MARK) + len(_ANSWER_MARK):].lstrip(" ")
    ids = tokenizer(after, add_special_tokens=False)["input_ids"] if after else []
    special = set(tokenizer.all_special_ids) | set(getattr(tokenizer, "added_tokens_decoder", {}))
    return ids[0] if ids and ids[0] in special else None


def answer_end_id(tokenizer: PreTrainedTokenizerBase) -> int | None:
    """The token a training answer ends with: the template's end of turn, else EOS."""
    eot = end_of_turn_id(tokenizer)
    return eot if eot is not None else tokenizer.eos_token_id


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
    ids = tokenizer(prompt, add_special_tokens=add_special)["input_ids"]
    _warn_if_space_ending(tokenizer, ids)
    return ids


def fit_prompt(prompt_ids: list[int], max_length: int) -> list[int]:
    """A prompt that leaves room for an answer within `max_length` tokens: one that does not
    keeps its last `max_length // 2` tokens (the end of the question and the answer cue)."""
    return prompt_ids if len(prompt_ids) < max_length else prompt_ids[-(max_length // 2):]


def encode_qa(
    tokenizer: PreTrainedTokenizerBase,
    question: str,
    answer: str,
    max_length: int = 512,
    prompt_ids: list[int] | None = None,
) -> Encoded:
    """Prompt ids then answer ids + the end token (the chat template's end of turn, else EOS);
    labels are -100 on the prompt.

    Prompt and answer are tokenized separately so the boundary is exact whatever the
    tokenizer merges. Too-long pairs are cut from the answer's end, with a warning.
    `prompt_ids`: `encode_prompt(tokenizer, question)` when the caller has it already.
    """
    if not answer.strip():
        raise DataError("cannot encode an empty answer")
    if prompt_ids is None:
        prompt_ids = encode_prompt(tokenizer, question)
    answer_ids = tokenizer(" " + answer.strip(), add_special_tokens=False)["input_ids"]
    end_id = answer_end_id(tokenizer)
    if end_id is not None:
        answer_ids = answer_ids + [end_id]
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

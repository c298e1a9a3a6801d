"""Batched generation over any `LanguageModel`: greedy or sampling, stopped at any stop id
(EOS, end of turn, the generation config's eos ids), at stop text, or at a cap."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from uldkit.data.formatting import answer_stop_texts, encode_prompt
from uldkit.errors import ConfigError, ModelError
from uldkit.models.context import context_length, fit_to_context
from uldkit.models.lm import LanguageModel
from uldkit.models.stops import model_stop_ids

# Stop text is looked for in the decoded tail of this many tokens (it is a few tokens long).
_STOP_TAIL_TOKENS = 16

# Sampling at a temperature this low is greedy decoding in all but name (a score gap of 0.01
# becomes a factor of e^100); below it the argmax is taken, so no division can underflow.
GREEDY_BELOW_TEMPERATURE = 1e-4


@dataclass(frozen=True)
class GenerationSettings:
    max_new_tokens: int = 64
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    # Text that ends an answer (cut off, not returned). None: the prompt format's own, i.e.
    # "\nQuestion:" for a tokenizer without a chat template (models/stops.py).
    stop_texts: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ConfigError("max_new_tokens must be at least 1")
        if self.do_sample and self.temperature <= 0:
            raise ConfigError("temperature must be positive when sampling")
        if not 0 < self.top_p <= 1:
            raise ConfigError("top_p must be in (0, 1]")


def choose_next_tokens(
    scores: torch.Tensor, settings: GenerationSettings, generator: torch.Generator | None
) -> torch.Tensor:
    broken = ~torch.isfinite(scores).any(-1) | torch.isnan(scores).any(-1)
    if broken.any():
        row = int(broken.nonzero()[0, 0])
        raise ModelError(
            f"the model's next-token scores for batch row {row} are NaN or all -inf: "
            "its weights or settings are broken; generation stopped"
        )
    if not settings.do_sample or settings.temperature < GREEDY_BELOW_TEMPERATURE:
        return scores.argmax(-1)
    # Shifted so the top score is 0 before scaling: however small the temperature, the top
    # token keeps probability > 0 and nothing overflows to inf or NaN.
    scores = scores.float()
    scaled = (scores - scores.max(-1, keepdim=True).values) / settings.temperature
    probs = torch.softmax(scaled, dim=-1)
    if settings.top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        before = sorted_probs.cumsum(-1) - sorted_probs
        drop = before >= settings.top_p
        drop[..., 0] = False  # the most likely token always stays, however small top_p is
        sorted_probs = sorted_probs.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@torch.no_grad()
def generate_ids(
    lm: LanguageModel,
    prompts: Sequence[Sequence[int]],
    settings: GenerationSettings = GenerationSettings(),
    known: Sequence[Sequence[int]] | None = None,
) -> list[list[int]]:
    """New token ids for each prompt, decoded together with a KV cache. A row ends at a stop
    id (not included) or once its text holds a stop text (its tokens from the one where that
    text starts are dropped).

    A prompt that would not leave `max_new_tokens` positions in the model's context keeps
    its last tokens, with a warning (and then its `known` tokens are not used).

    `known` (greedy decoding only): per prompt, the first tokens of the model's greedy
    continuation, already computed (as a scoring pass computes them,
    `AnswerScores.greedy_continuation`). They are taken as decoded, stops and cap applied
    as to decoded tokens; a row they finish costs no forward pass, and the others resume
    decoding after them."""
    fitted = fit_to_context(prompts, settings.max_new_tokens, context_length(lm))
    if known is not None:
        if settings.do_sample and settings.temperature >= GREEDY_BELOW_TEMPERATURE:
            raise ConfigError("known greedy tokens can only start greedy decoding")
        if len(known) != len(prompts):
            raise ValueError("known tokens must be given for every prompt")
        known = [list(k) if list(p) == f else [] for k, p, f in zip(known, prompts, fitted)]
    decoder = _Decoder(lm, settings, len(prompts))
    for row, tokens in enumerate(known or []):
        for token in tokens[:settings.max_new_tokens]:
            if decoder.take(row, token):
                break
    # Rows still open resume after the tokens they have taken (all of them are in the text
    # decoded so far: a stop ends the row).
    rows = [row for row in range(len(prompts)) if not decoder.finished[row]]
    if rows:
        decoder.decode(rows, [fitted[row] + decoder.taken[row] for row in rows])
    return decoder.outputs


class _Decoder:
    """Output tokens per row, with stops and the cap applied as each token is taken."""

    def __init__(self, lm: LanguageModel, settings: GenerationSettings, rows: int) -> None:
        self.lm = lm
        self.settings = settings
        self.stop_ids = model_stop_ids(lm)
        self.stop_texts = (answer_stop_texts(lm.tokenizer) if settings.stop_texts is None
                           else settings.stop_texts)
        self.outputs: list[list[int]] = [[] for _ in range(rows)]
        self.taken: list[list[int]] = [[] for _ in range(rows)]  # every token, cut or not
        self.finished = [False] * rows

    def take(self, row: int, token: int) -> bool:
        """Take the next token of `row`; whether the row has ended."""
        self.taken[row].append(token)
        if token in self.stop_ids:
            self.finished[row] = True
        else:
            self.outputs[row].append(token)
            if self.stop_texts and _cut_at_stop_text(self.lm.tokenizer, self.outputs[row],
                                                     self.stop_texts):
                self.finished[row] = True
        if len(self.taken[row]) >= self.settings.max_new_tokens:
            self.finished[row] = True
        return self.finished[row]

    def decode(self, rows: Sequence[int], prompts: Sequence[Sequence[int]]) -> None:
        """Decode `rows` together, after their (left-padded) prompts, until each has ended."""
        lm, settings = self.lm, self.settings
        pad_id = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0
        width = max(len(p) for p in prompts)
        input_ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for index, prompt in enumerate(prompts):
            input_ids[index, width - len(prompt):] = torch.tensor(list(prompt), dtype=torch.long)
            attention_mask[index, width - len(prompt):] = 1
        input_ids, attention_mask = input_ids.to(lm.device), attention_mask.to(lm.device)
        generator = None
        if settings.seed is not None:
            generator = torch.Generator(device=lm.device).manual_seed(settings.seed)
        decoding = lm.start_decoding(input_ids, attention_mask)
        done = torch.zeros(len(rows), dtype=torch.bool, device=lm.device)
        while True:
            next_tokens = choose_next_tokens(decoding.scores, settings, generator)
            for index in (~done).nonzero().flatten().tolist():
                if self.take(rows[index], int(next_tokens[index])):
                    done[index] = True
            if done.all():
                return
            decoding.advance(next_tokens.masked_fill(done, pad_id))


def _cut_at_stop_text(tokenizer, ids: list[int], stops: Sequence[str]) -> bool:
    """Whether `ids` now hold a stop text; if so, drop the tokens that lie wholly inside or
    after it (a token that straddles its start, like ".\n", stays)."""
    tail = tokenizer.decode(ids[-_STOP_TAIL_TOKENS:], skip_special_tokens=True)
    if not any(stop in tail for stop in stops):
        return False
    text = tokenizer.decode(ids, skip_special_tokens=True)
    cut = min(i for i in (text.find(stop) for stop in stops) if i >= 0)
    while ids and len(tokenizer.decode(ids[:-1], skip_special_tokens=True)) >= cut:
        ids.pop()
    return True


def cut_at_stop_texts(text: str, stops: Sequence[str]) -> str:
    """`text` up to its first stop text."""
    found = [i for i in (text.find(stop) for stop in stops) if i >= 0]
    return text[:min(found)] if found else text


def generate_answers(
    lm: LanguageModel,
    questions: Sequence[str],
    settings: GenerationSettings = GenerationSettings(),
    batch_size: int = 16,
) -> list[str]:
    """Answers to questions in the QA prompt format, answer text only."""
    answers: list[str] = []
    for start in range(0, len(questions), batch_size):
        chunk = questions[start:start + batch_size]
        prompts = [encode_prompt(lm.tokenizer, q) for q in chunk]
        stops = (answer_stop_texts(lm.tokenizer) if settings.stop_texts is None
                 else settings.stop_texts)
        for ids in generate_ids(lm, prompts, settings):
            text = lm.tokenizer.decode(ids, skip_special_tokens=True)
            answers.append(cut_at_stop_texts(text, stops).strip())
    return answers

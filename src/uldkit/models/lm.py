"""One object for "a model you can score and generate with", whatever is inside it.

Evaluation, reports and the server only use `LanguageModel`: per-position next-token scores
for a padded batch, and incremental decoding with a KV cache. `CausalLM` wraps a plain
Hugging Face model; ULD and offset unlearning provide their own implementations. A model may
also offer `continuation_logits` (scores of continuations of shared prompts, from the
prompts' cached keys and values; `uldkit.models.prefix_scoring`).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from transformers import DynamicCache, PreTrainedModel, PreTrainedTokenizerBase

from uldkit.data.collate import position_ids_from_mask
from uldkit.models.cache_api import cache_argument
from uldkit.models.prefix_scoring import cached_continuation_logits


class Decoding(Protocol):
    """The state of an incremental decode: scores for the next token of every row."""

    scores: torch.Tensor  # [batch, vocab], unnormalised; -inf marks excluded tokens

    def advance(self, next_tokens: torch.Tensor) -> None:
        """Append one token per row and recompute `scores`."""


@runtime_checkable
class LanguageModel(Protocol):
    tokenizer: PreTrainedTokenizerBase

    @property
    def device(self) -> torch.device: ...

    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Next-token scores at every position, [batch, time, vocab]; log_softmax normalises."""

    def start_decoding(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Decoding:
        """Begin decoding after left-padded prompts."""


class CachedDecoding:
    """Incremental decoding of one Hugging Face causal LM with its own KV cache."""

    def __init__(
        self, model: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> None:
        self.model = model
        self.attention_mask = attention_mask
        self.cache = DynamicCache()
        self.next_position = attention_mask.long().sum(-1, keepdim=True)
        self.scores = self._forward(input_ids, position_ids_from_mask(attention_mask))

    @torch.no_grad()
    def _forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        out = self.model(
            input_ids=input_ids,
            attention_mask=self.attention_mask,
            position_ids=position_ids,
            use_cache=True,
            **cache_argument(self.model, self.cache),
            logits_to_keep=1,
        )
        return out.logits[:, -1].float()

    def advance(self, next_tokens: torch.Tensor) -> None:
        ones = self.attention_mask.new_ones((self.attention_mask.shape[0], 1))
        self.attention_mask = torch.cat([self.attention_mask, ones], dim=-1)
        position_ids = self.next_position
        self.next_position = self.next_position + 1
        self.scores = self._forward(next_tokens.view(-1, 1), position_ids)


class CausalLM:
    """A plain Hugging Face causal LM behind the `LanguageModel` interface."""

    def __init__(
        self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, name: str = "model"
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.name = name

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids_from_mask(attention_mask),
        ).logits

    def start_decoding(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Decoding:
        return CachedDecoding(self.model, input_ids, attention_mask)

    def continuation_logits(
        self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, rows: torch.Tensor,
        continuation_ids: torch.Tensor, continuation_mask: torch.Tensor,
    ) -> torch.Tensor:
        """Scores of continuations of shared prompts (`uldkit.models.prefix_scoring`)."""
        return cached_continuation_logits(self.model, prompt_ids, prompt_mask, rows,
                                          continuation_ids, continuation_mask)

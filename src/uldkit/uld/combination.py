"""A language model whose scores combine the scores of several models, position by position.

ULD (target minus assistant) and offset unlearning (target plus the difference of two small
models) are both this: each member is scored (or decoded with its own KV cache) on the same
tokens, and a function of their per-position scores gives the combined next-token scores.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import torch
from transformers import PreTrainedTokenizerBase

from uldkit.models.lm import Decoding
from uldkit.models.prefix_scoring import continuation_logits

# Member scores (each [..., vocab], in member order) -> combined scores [..., vocab].
CombineScores = Callable[[Sequence[torch.Tensor]], torch.Tensor]


class ScoreSource(Protocol):
    """What a member needs: a `LanguageModel` without the tokenizer (e.g. a `CausalLM`)."""

    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor: ...

    def start_decoding(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> Decoding: ...


class CombinedDecoding:
    """Advances every member's decoding (each with its own cache) and combines their scores."""

    def __init__(self, parts: Sequence[Decoding], combine: CombineScores) -> None:
        self.parts = list(parts)
        self.combine = combine
        self.scores = combine([part.scores for part in self.parts])

    def advance(self, next_tokens: torch.Tensor) -> None:
        for part in self.parts:
            part.advance(next_tokens)
        self.scores = self.combine([part.scores for part in self.parts])


class LogitCombination:
    """A `LanguageModel` over member models that share one tokenizer."""

    def __init__(
        self,
        members: Sequence[ScoreSource],
        combine: CombineScores,
        tokenizer: PreTrainedTokenizerBase,
        device: torch.device,
        name: str = "combined",
        decoding_combine: CombineScores | None = None,
    ) -> None:
        self.members = list(members)
        self.combine = combine
        # Generation's combination where it differs from scoring's (ULD's reference filter).
        self.decoding_combine = combine if decoding_combine is None else decoding_combine
        self.tokenizer = tokenizer
        self._device = device
        self.name = name

    @property
    def device(self) -> torch.device:
        return self._device

    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.combine([m.logits(input_ids, attention_mask) for m in self.members])

    def start_decoding(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> CombinedDecoding:
        parts = [m.start_decoding(input_ids, attention_mask) for m in self.members]
        return CombinedDecoding(parts, self.decoding_combine)

    def continuation_logits(
        self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, rows: torch.Tensor,
        continuation_ids: torch.Tensor, continuation_mask: torch.Tensor,
    ) -> torch.Tensor:
        """Each member's shared-prefix scores (`uldkit.models.prefix_scoring`), combined."""
        arguments = (prompt_ids, prompt_mask, rows, continuation_ids, continuation_mask)
        return self.combine([continuation_logits(m, *arguments) for m in self.members])

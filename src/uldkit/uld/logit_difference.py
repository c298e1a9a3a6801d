"""The unlearned model of ULD: the target's log-probabilities minus the assistant's logits.

    score(v) = log p_target(v) - alpha * z_assistant(v)   where p_target(v) >= tau * max_u p_target(u)
    score(v) = excluded (-1000 after normalising)         elsewhere

alpha, tau and the filter are inference-time settings: `with_settings` gives another view of the same
weights, nothing is retrained. Scoring and decoding run the target and the assistant as one
paired pass (`ZeroCopyAssistant.paired_forward`) with one KV cache holding both; attention
implementations the paired pass cannot serve fall back to two passes, each with its own KV
cache.

Defaults: alpha = 0.8, the weight the ULD paper's code uses at evaluation. tau = 1e-4. The
paper's code filters loosely: it always keeps at least a tenth of the vocabulary, and when
scoring it leaves the target's logits in place outside the filter (`filter="reference"`,
see `uldkit.uld.relative_top`). The default filter here is strict (excluded tokens get a
log-probability of -1000, i.e. probability 0, when scoring too), so it must be loose in tau: where the target has memorised an answer, its
top token stands far above every other, and tau = 0.1 or 0.01 leaves that token alone in the
plausible set, so nothing can be forgotten. Measured on the synthetic world with a memorised
4-layer target and one trained assistant (2 layers, uniform weight 1), alpha 0.8: the ULD
model's mean forget-set answer probability was 0.93, 0.71, 0.43 and 0.18 of the target's at
tau 0.01, 1e-3, 1e-4 and 0, its retain-set probability 1.02, 1.00, 0.99 and 0.98 of the
target's. tau = 1e-4 forgets clearly and still keeps out the implausible tail that
subtracting the assistant would otherwise promote.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from functools import partial

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase
from transformers.modeling_outputs import CausalLMOutputWithPast

from uldkit.errors import ConfigError
from uldkit.models.cache_api import output_cache_argument
from uldkit.models.lm import CausalLM, Decoding
from uldkit.uld.assistant import ZeroCopyAssistant
from uldkit.uld.combination import CombinedDecoding, LogitCombination
from uldkit.uld.relative_top import (
    DEFAULT_FILTER,
    EXCLUDED_LOGPROB,
    REFERENCE_TAU,
    check_filter,
    filtered_difference,
)

DEFAULT_ALPHA = 0.8
DEFAULT_TAU = 1e-4


__all__ = ["DEFAULT_ALPHA", "DEFAULT_FILTER", "DEFAULT_TAU", "EXCLUDED_LOGPROB", "REFERENCE_TAU",
           "LogitDifferenceModel", "check_settings", "logit_difference_scores"]


def check_settings(alpha: float, tau: float, filter: str = DEFAULT_FILTER) -> None:
    if not math.isfinite(alpha) or alpha < 0:
        raise ConfigError(f"alpha must be a finite number >= 0, not {alpha}")
    if not 0 <= tau <= 1:
        raise ConfigError(f"tau must be in [0, 1] (0 turns the filter off), not {tau}")
    check_filter(filter)


def logit_difference_scores(
    target_logits: torch.Tensor, assistant_logits: torch.Tensor, alpha: float, tau: float,
    filter: str = DEFAULT_FILTER, generating: bool = False,
) -> torch.Tensor:
    """ULD's combined next-token scores; computed in float32 whatever the models' dtype.

    With the strict relative-top filter (tau > 0), scores are log-probabilities over the
    plausible tokens and every excluded token gets EXCLUDED_LOGPROB: a probability of exactly
    0 after exp in float32, but a finite loss, so TOFU's losses and truth ratios stay defined
    (the contrastive-decoding reference code uses the same -1000 floor). The reference filter
    (`uldkit.uld.relative_top`) scores over the whole vocabulary and excludes only when
    `generating`.
    """
    return filtered_difference(target_logits, assistant_logits, alpha, tau, filter, generating)


def _combine(alpha: float, tau: float, filter: str, generating: bool,
             members: Sequence[torch.Tensor]) -> torch.Tensor:
    target_logits, assistant_logits = members
    return logit_difference_scores(target_logits, assistant_logits, alpha, tau, filter,
                                   generating)


class PairedScores(nn.Module):
    """The combined scores from one paired pass, behind an HF-style forward."""

    def __init__(self, assistant: ZeroCopyAssistant, alpha: float, tau: float,
                 filter: str = DEFAULT_FILTER, generating: bool = False) -> None:
        super().__init__()
        object.__setattr__(self, "assistant", assistant)  # not registered a second time
        self.alpha = alpha
        self.tau = tau
        self.filter = filter
        self.generating = generating

    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]:
        return self.assistant.parameters(recurse)

    def forward(self, **inputs: object) -> CausalLMOutputWithPast:
        """`ZeroCopyAssistant.paired_forward`'s arguments, HF-style by keyword."""
        target_logits, assistant_logits = self.assistant.paired_forward(**inputs)
        return CausalLMOutputWithPast(
            logits=logit_difference_scores(target_logits, assistant_logits, self.alpha,
                                           self.tau, self.filter, self.generating),
            **output_cache_argument(CausalLMOutputWithPast, inputs.get(
                "cache", inputs.get("past_key_values")) if inputs.get("use_cache") else None))


class LogitDifferenceModel(LogitCombination):
    """ULD's unlearned model behind the `LanguageModel` interface. Scoring (`logits`,
    `continuation_logits`) and generation (`start_decoding`) use `filter`'s scoring and
    generation semantics (`uldkit.uld.relative_top`)."""

    def __init__(
        self,
        assistant: ZeroCopyAssistant,
        tokenizer: PreTrainedTokenizerBase,
        *,
        alpha: float = DEFAULT_ALPHA,
        tau: float = DEFAULT_TAU,
        filter: str = DEFAULT_FILTER,
        name: str = "uld",
    ) -> None:
        check_settings(alpha, tau, filter)
        self.assistant = assistant
        self.alpha = float(alpha)
        self.tau = float(tau)
        self.filter = filter
        device = next(assistant.parameters()).device
        super().__init__(
            members=[CausalLM(assistant.target_pass(), tokenizer, "target"),
                     CausalLM(assistant, tokenizer, "assistant")],
            combine=partial(_combine, self.alpha, self.tau, filter, False),
            decoding_combine=partial(_combine, self.alpha, self.tau, filter, True),
            tokenizer=tokenizer,
            device=device,
            name=name,
        )
        self._paired = self._paired_decoding = None
        if assistant.supports_paired_forward:
            self._paired = CausalLM(PairedScores(assistant, self.alpha, self.tau, filter),
                                    tokenizer, name)
            self._paired_decoding = CausalLM(
                PairedScores(assistant, self.alpha, self.tau, filter, generating=True),
                tokenizer, name)

    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if self._paired is None:
            return super().logits(input_ids, attention_mask)
        return self._paired.logits(input_ids, attention_mask)

    def start_decoding(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> Decoding | CombinedDecoding:
        if self._paired_decoding is None:
            return super().start_decoding(input_ids, attention_mask)
        return self._paired_decoding.start_decoding(input_ids, attention_mask)

    def continuation_logits(self, *arguments: torch.Tensor) -> torch.Tensor:
        """Shared-prefix scores (`uldkit.models.prefix_scoring`), from the paired pass."""
        if self._paired is None:
            return super().continuation_logits(*arguments)
        return self._paired.continuation_logits(*arguments)

    @property
    def target(self) -> CausalLM:
        """The target model alone (adapters off), as a `LanguageModel`."""
        return self.members[0]

    @property
    def inference_settings(self) -> dict[str, float | str]:
        """The settings every figure of this model depends on (recorded beside them)."""
        return {"alpha": self.alpha, "tau": self.tau, "filter": self.filter}

    def with_settings(
        self, alpha: float | None = None, tau: float | None = None, filter: str | None = None,
    ) -> LogitDifferenceModel:
        """Another view of the same weights with other inference settings. Switching to the
        reference filter without a tau takes the authors' tau (REFERENCE_TAU)."""
        if tau is None and filter == "reference" and self.filter != "reference":
            tau = REFERENCE_TAU
        return LogitDifferenceModel(
            self.assistant, self.tokenizer,
            alpha=self.alpha if alpha is None else alpha,
            tau=self.tau if tau is None else tau,
            filter=self.filter if filter is None else filter,
            name=self.name,
        )

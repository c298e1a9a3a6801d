"""How many positions a model can attend over, and prompts cut to leave room for an answer."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

from uldkit.errors import ConfigError
from uldkit.models.lm import LanguageModel

DEFAULT_CONTEXT = 2048


def context_length(lm: LanguageModel) -> int:
    """Positions the model can attend over: its config's max_position_embeddings, looked for
    on the model and on the models it wraps (e.g. a ULD model's target)."""
    found = _find_context(lm, depth=0)
    if found:
        return found
    limit = getattr(lm.tokenizer, "model_max_length", None)
    return limit if isinstance(limit, int) and limit < 1_000_000 else DEFAULT_CONTEXT


def _find_context(obj: Any, depth: int) -> int | None:
    if obj is None or depth > 4:
        return None
    for holder in (obj, getattr(obj, "config", None)):
        for attr in ("context_length", "max_position_embeddings"):
            value = getattr(holder, attr, None)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
    inner = [getattr(obj, attr, None) for attr in ("model", "target", "assistant", "base_model")]
    members = getattr(obj, "members", None)
    if isinstance(members, list | tuple):
        inner.extend(members)
    for part in inner:
        found = _find_context(part, depth + 1)
        if found:
            return found
    return None


def fit_to_context(
    prompts: Sequence[Sequence[int]], max_new_tokens: int, context: int
) -> list[list[int]]:
    """The prompts, each cut to its last tokens where it would leave fewer than
    `max_new_tokens` positions of the model's `context` (with one warning for all)."""
    room = context - max_new_tokens
    if room < 1:
        raise ConfigError(f"max_new_tokens {max_new_tokens} leaves no room for a prompt in the "
                          f"model's context of {context} tokens")
    cut = sum(len(prompt) > room for prompt in prompts)
    if cut:
        warnings.warn(f"{cut} of {len(prompts)} prompts are too long for {max_new_tokens} new "
                      f"tokens in a context of {context}: generation sees their last {room} "
                      "tokens", stacklevel=3)
    return [list(prompt[-room:]) if len(prompt) > room else list(prompt) for prompt in prompts]

"""Scores of continuations that share a prompt: the prompt runs once, every continuation of
it runs from the prompt's cached keys and values.

Prompts are left-padded (so every prompt ends in the same column) and continuations
right-padded; `rows[n]` names the prompt of continuation n. The result holds, per
continuation, the next-token scores that predict each of its tokens: position 0 comes from
the prompt's last position, position j from continuation token j - 1. Position ids count
real tokens only, as everywhere in uldkit, so nothing depends on padding or batching.

A model opts in with a `continuation_logits` method of the signature below (`CausalLM`
runs its Hugging Face model with a `DynamicCache`; models combining several such models
combine their members'); any other `LanguageModel` is scored on the concatenated sequences.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from transformers import DynamicCache

from uldkit.data.collate import position_ids_from_mask
from uldkit.models.cache_api import cache_argument


def expand_cache(cache: DynamicCache, rows: torch.Tensor, prompts: int) -> None:
    """Give each continuation its prompt's cached keys and values: row n of every layer
    becomes prompt `rows[n]`. A layer holding its batch several times over (blocks of
    `prompts` rows, as a paired pass of two models keeps it) keeps that layout."""
    for layer in cache.layers:
        keys = getattr(layer, "keys", None)
        if keys is None or keys.numel() == 0:
            continue
        blocks = keys.shape[0] // prompts
        layer.batch_select_indices(torch.cat([rows + block * prompts
                                              for block in range(blocks)]))


@torch.no_grad()
def cached_continuation_logits(
    model: Callable[..., object],
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    rows: torch.Tensor,
    continuation_ids: torch.Tensor,
    continuation_mask: torch.Tensor,
) -> torch.Tensor:
    """[continuations, width, vocab] scores from an HF-style `model` (module docstring)."""
    cache = DynamicCache()
    prompt = model(input_ids=prompt_ids, attention_mask=prompt_mask,
                   position_ids=position_ids_from_mask(prompt_mask), use_cache=True,
                   logits_to_keep=1, **cache_argument(model, cache))
    first = prompt.logits[:, -1]
    if continuation_ids.shape[1] == 1:
        return first[rows].unsqueeze(1)
    expand_cache(cache, rows, prompt_ids.shape[0])
    lengths = prompt_mask.long().sum(-1)[rows]
    width = continuation_ids.shape[1]
    positions = lengths.unsqueeze(-1) + torch.arange(width, device=lengths.device)
    # The last continuation position predicts nothing that is scored: it is left out.
    out = model(input_ids=continuation_ids[:, :-1],
                attention_mask=torch.cat([prompt_mask[rows], continuation_mask[:, :-1]], -1),
                position_ids=positions[:, :-1], use_cache=True, **cache_argument(model, cache))
    return torch.cat([first[rows].unsqueeze(1), out.logits], dim=1)


@torch.no_grad()
def continuation_logits(
    lm: object,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    rows: torch.Tensor,
    continuation_ids: torch.Tensor,
    continuation_mask: torch.Tensor,
) -> torch.Tensor:
    """The scores predicting each continuation token, from `lm`'s own shared-prefix pass
    when it has one, else from its scores of the concatenated sequences."""
    own = getattr(lm, "continuation_logits", None)
    if own is not None:
        return own(prompt_ids, prompt_mask, rows, continuation_ids, continuation_mask)
    ids = torch.cat([prompt_ids[rows], continuation_ids], dim=-1)
    mask = torch.cat([prompt_mask[rows], continuation_mask], dim=-1)
    logits = lm.logits(ids, mask)  # type: ignore[attr-defined]
    start = prompt_ids.shape[1] - 1
    return logits[:, start:start + continuation_ids.shape[1]]

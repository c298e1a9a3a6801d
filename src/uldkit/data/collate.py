"""Pad encoded examples into a batch; padding never changes any sample's scores."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from uldkit.data.formatting import IGNORE_INDEX, Encoded
from uldkit.errors import ConfigError, DataError


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counted over real tokens only, so left padding shifts nothing."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def collate(
    examples: Sequence[Encoded], pad_token_id: int, padding_side: str = "right"
) -> dict[str, torch.Tensor]:
    """A padded batch: input ids, attention mask, position ids and labels (-100 on padding)."""
    if padding_side not in ("left", "right"):
        raise ConfigError(f"padding_side must be 'left' or 'right', not {padding_side!r}")
    if isinstance(pad_token_id, bool) or not isinstance(pad_token_id, int) or pad_token_id < 0:
        raise ConfigError(
            f"pad token id must be a non-negative integer, got {pad_token_id!r} (a tokenizer "
            "without a pad token gets its EOS token as pad when loaded with uldkit)"
        )
    if not examples:
        raise DataError("cannot collate an empty batch")
    for index, example in enumerate(examples):
        if not example.input_ids or len(example.labels) != len(example.input_ids):
            raise DataError(
                f"example {index} of the batch has {len(example.input_ids)} token ids and "
                f"{len(example.labels)} labels (both must be equal and non-zero)"
            )
    width = max(len(e.input_ids) for e in examples)
    input_ids = torch.full((len(examples), width), pad_token_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, example in enumerate(examples):
        n = len(example.input_ids)
        span = slice(width - n, width) if padding_side == "left" else slice(0, n)
        input_ids[row, span] = torch.tensor(example.input_ids)
        labels[row, span] = torch.tensor(example.labels)
        attention_mask[row, span] = 1
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "position_ids": position_ids_from_mask(attention_mask),
        "labels": labels,
    }


def token_nll(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token negative log-likelihood of next-token labels and the mask of scored tokens.

    `logits[:, t]` predicts `labels[:, t + 1]`. Returns (nll [B, T-1], mask [B, T-1]) with
    nll = 0 where the label is ignored.
    """
    shifted_logits = logits[:, :-1].float()
    shifted_labels = labels[:, 1:]
    mask = shifted_labels != IGNORE_INDEX
    safe_labels = shifted_labels.masked_fill(~mask, 0)
    logprobs = torch.log_softmax(shifted_logits, dim=-1)
    nll = -logprobs.gather(-1, safe_labels.unsqueeze(-1)).squeeze(-1)
    return torch.where(mask, nll, torch.zeros_like(nll)), mask


"""Loss pieces shared by fine-tuning and the unlearning methods."""

from __future__ import annotations

import torch

from uldkit.data.collate import token_nll
from uldkit.training.trainer import Batch, LossTerm, answer_token_count


def forward_logits(model: torch.nn.Module, stream: dict[str, torch.Tensor]) -> torch.Tensor:
    return model(
        input_ids=stream["input_ids"],
        attention_mask=stream["attention_mask"],
        position_ids=stream["position_ids"],
    ).logits


def stream_token_nll(
    model: torch.nn.Module, stream: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """(nll [B, T-1], mask [B, T-1]) of the answer tokens of one stream."""
    return token_nll(forward_logits(model, stream), stream["labels"])


class NextTokenObjective:
    """Ordinary next-token loss on the answer tokens of one stream (fine-tuning)."""

    def __init__(self, stream: str = "train") -> None:
        self.stream = stream

    def counts(self, batch: Batch) -> dict[str, float]:
        return {"nll": answer_token_count(batch[self.stream])}

    def losses(self, model: torch.nn.Module, batch: Batch) -> dict[str, LossTerm]:
        nll, _ = stream_token_nll(model, batch[self.stream])
        return {"nll": LossTerm(nll.sum())}

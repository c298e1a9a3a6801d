"""Loss pieces shared by fine-tuning and the unlearning methods.

Losses only need next-token scores where a label is set (the answer), so `answer_logits`
asks the model for its output head at those positions only (transformers' `logits_to_keep`
with an index tensor; the model's own head runs, soft-capping and logit scaling included).
The prompt's positions never reach the vocabulary-wide head: on a 262k-token vocabulary that
is most of a step's memory.
"""

from __future__ import annotations

import inspect

import torch
from transformers import PreTrainedModel

from uldkit.data.collate import token_nll
from uldkit.data.formatting import IGNORE_INDEX
from uldkit.training.trainer import Batch, LossTerm, answer_token_count

# Model classes whose forward refused `logits_to_keep`: they get full logits, then a gather.
_NO_LOGITS_TO_KEEP: set[type] = set()


def forward_logits(model: torch.nn.Module, stream: dict[str, torch.Tensor]) -> torch.Tensor:
    """Full next-token logits at every position, [B, T, V]."""
    return model(
        input_ids=stream["input_ids"],
        attention_mask=stream["attention_mask"],
        position_ids=stream["position_ids"],
    ).logits


def scored_positions(labels: torch.Tensor) -> torch.Tensor:
    """Positions t (any row) whose next label labels[:, t + 1] is set, ascending, [P]."""
    scored = (labels[:, 1:] != IGNORE_INDEX).any(0)
    return scored.nonzero().flatten()


def answer_logits(
    model: torch.nn.Module, stream: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits [B, P + 1, V], labels [B, P + 1]) at the scored positions only.

    Laid out like a full stream, so every loss helper that pairs logits[:, t] with
    labels[:, t + 1] takes them unchanged: labels start with one ignored column, and logits
    end with one column of zeros that no label reads. Losses computed from them equal those
    from `forward_logits(model, stream), stream["labels"]`.
    """
    labels = stream["labels"]
    positions = scored_positions(labels)
    logits = _logits_at(model, stream, positions)
    compact_labels = torch.cat([labels[:, :1].new_full((labels.shape[0], 1), IGNORE_INDEX),
                                labels[:, positions + 1]], dim=1)
    filler = logits.new_zeros((logits.shape[0], 1, logits.shape[-1]))
    return torch.cat([logits, filler], dim=1), compact_labels


def _logits_at(
    model: torch.nn.Module, stream: dict[str, torch.Tensor], positions: torch.Tensor
) -> torch.Tensor:
    inputs = dict(input_ids=stream["input_ids"], attention_mask=stream["attention_mask"],
                  position_ids=stream["position_ids"])
    if _takes_index_tensor(model):
        try:
            logits = model(**inputs, logits_to_keep=positions).logits
        except TypeError as err:
            if "logits_to_keep" not in str(err):
                raise
            _NO_LOGITS_TO_KEEP.add(type(_inner(model)))
        else:
            if logits.shape[1] == positions.numel():
                return logits
            _NO_LOGITS_TO_KEEP.add(type(_inner(model)))  # took the argument but kept every position
            return logits[:, positions]
    return model(**inputs).logits[:, positions]


def _inner(model: torch.nn.Module) -> torch.nn.Module:
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _takes_index_tensor(model: torch.nn.Module) -> bool:
    """A transformers model (bare or under PEFT) whose forward takes `logits_to_keep`, or a
    module that says it passes the argument on to one (`takes_logits_index`, as ULD's
    assistant does); other modules (ensembles) may read it as a count, so they get none."""
    inner = _inner(model)
    if type(inner) in _NO_LOGITS_TO_KEEP:
        return False
    declared = getattr(inner, "takes_logits_index", None)
    if declared is not None:
        return bool(declared)
    if not isinstance(inner, PreTrainedModel):
        return False
    return "logits_to_keep" in inspect.signature(inner.forward).parameters


def stream_token_nll(
    model: torch.nn.Module, stream: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """(nll [B, P], mask [B, P]) of the answer tokens of one stream (scored positions only)."""
    return token_nll(*answer_logits(model, stream))


class NextTokenObjective:
    """Ordinary next-token loss on the answer tokens of one stream (fine-tuning)."""

    def __init__(self, stream: str = "train") -> None:
        self.stream = stream

    def counts(self, batch: Batch) -> dict[str, float]:
        return {"nll": answer_token_count(batch[self.stream])}

    def losses(self, model: torch.nn.Module, batch: Batch) -> dict[str, LossTerm]:
        nll, _ = stream_token_nll(model, batch[self.stream])
        return {"nll": LossTerm(nll.sum())}

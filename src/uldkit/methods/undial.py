"""UNDIAL: self-distillation towards the original model with the true token's logit lowered.

At every forget answer position the target distribution is

    q = softmax(z_ref - strength * onehot(y_t))

(z_ref: the frozen original model's logits, y_t the true next token), and the model is
trained with the cross-entropy -sum_v q(v) log p_theta(v), averaged over answer tokens. Only
the memorised token loses probability; the rest of the distribution is kept, so the loss
is bounded and training does not collapse.

Defaults from OpenUnlearning's configs/trainer/UNDIAL.yaml: strength (`beta` there) 10,
no retain term (alpha 0), lr 1e-4, 10 epochs, batch 2 x 8 accumulation. OpenUnlearning
averages over every position of the batch; here over the answer tokens only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from uldkit.data.formatting import IGNORE_INDEX
from uldkit.methods.editing import WeightEditingMethod
from uldkit.methods.hyperparameters import RetainWeighted, param
from uldkit.methods.registry import register
from uldkit.training.losses import answer_logits
from uldkit.training.trainer import Batch, LossTerm, answer_token_count


def undial_targets(ref_logits: torch.Tensor, next_tokens: torch.Tensor,
                   strength: float) -> torch.Tensor:
    """softmax(ref_logits - strength * onehot(next_tokens)) over the last dimension.

    `ref_logits` [..., V] and `next_tokens` [...] (any valid ids where unused).
    """
    adjusted = ref_logits.float().clone()
    adjusted.scatter_add_(-1, next_tokens.unsqueeze(-1),
                          torch.full_like(adjusted[..., :1], -strength))
    return torch.softmax(adjusted, dim=-1)


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """-sum_v targets(v) * log softmax(logits)(v) over the last dimension."""
    return -(targets * torch.log_softmax(logits.float(), dim=-1)).sum(-1)


@dataclass(frozen=True)
class UNDIALHyperparameters(RetainWeighted):
    strength: float = param(10.0, "How far the true token's logit is lowered in the target "
                            "distribution (beta in OpenUnlearning).", min=0)
    retain_weight: float = param(0.0, "Weight of the retain NLL (0: none, as the paper).", min=0)


@register
class UNDIAL(WeightEditingMethod):
    name = "undial"
    summary = "Self-distil from the original model with the true next token's logit lowered."
    paper = ("Dong et al., 2024, UNDIAL: Self-Distillation with Adjusted Logits for Robust "
             "Unlearning in Large Language Models (arXiv 2402.10052)")
    needs_reference = True
    default_training: ClassVar[dict[str, Any]] = dict(
        lr=1e-4, epochs=10, batch_size=2, grad_accum=8, weight_decay=0.0, warmup_ratio=0.0
    )
    schema = UNDIALHyperparameters
    retain_loss = "nll"

    def forget_counts(self, batch: Batch) -> dict[str, float]:
        return {"forget": answer_token_count(batch["forget"])}

    def forget_losses(self, model: torch.nn.Module, batch: Batch) -> dict[str, LossTerm]:
        stream = batch["forget"]
        logits, labels = answer_logits(model, stream)
        labels = labels[:, 1:]
        mask = labels != IGNORE_INDEX
        targets = undial_targets(self.reference_logits(stream)[:, :-1],
                                 labels.masked_fill(~mask, 0), self.params.strength)
        per_token = soft_cross_entropy(logits[:, :-1], targets)
        total = torch.where(mask, per_token, torch.zeros_like(per_token)).sum()
        return {"forget": LossTerm(total, self.params.forget_weight)}

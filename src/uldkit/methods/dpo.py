"""DPO with a refusal preferred over the forget answer (TOFU's IdkPO), alone or with retain NLL.

For each forget question x, y_w is a refusal ("I don't know.", drawn once per question from
the refusal list) and y_l the forget answer; log-probabilities are summed over answer tokens:

    L = -(2 / beta) * log sigmoid(beta * [(log pi_theta(y_w|x) - log pi_ref(y_w|x))
                                          - (log pi_theta(y_l|x) - log pi_ref(y_l|x))])

This is OpenUnlearning's scaling (`compute_dpo_loss`, beta 0.1, equal to (2/beta) * log 2
at theta = ref). TOFU's original code drops the 2/beta factor (`-logsigmoid(beta * ...)`):
the same gradient direction, 20 times smaller at beta 0.1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from uldkit.methods.editing import (
    TOFU_PAPER,
    TOFU_TRAINING,
    WeightEditingMethod,
    sample_count,
    sequence_logprob,
)
from uldkit.methods.hyperparameters import ForgetWeighted, RetainWeighted, param
from uldkit.methods.registry import register
from uldkit.training.losses import answer_logits
from uldkit.training.trainer import Batch, LossTerm


def dpo_loss(
    win_logprob: torch.Tensor,
    win_ref_logprob: torch.Tensor,
    lose_logprob: torch.Tensor,
    lose_ref_logprob: torch.Tensor,
    beta: float,
) -> torch.Tensor:
    """Per-pair DPO loss from sequence log-probabilities (OpenUnlearning scaling)."""
    margin = (win_logprob - win_ref_logprob) - (lose_logprob - lose_ref_logprob)
    return -(2.0 / beta) * F.logsigmoid(beta * margin)


@dataclass(frozen=True)
class DPOHyperparameters(ForgetWeighted):
    beta: float = param(0.1, "Inverse temperature of the preference loss (scale 2/beta).",
                        min=0, exclusive_min=True)


@dataclass(frozen=True)
class IdkDPOHyperparameters(DPOHyperparameters, RetainWeighted):
    """DPO's hyperparameters plus retain_weight."""


@register
class DPO(WeightEditingMethod):
    name = "dpo"
    summary = "DPO preferring a refusal over the forget answer, against the original model."
    paper = ("Rafailov et al., 2023, Direct Preference Optimization (arXiv 2305.18290); as the "
             "TOFU IdkPO baseline, " + TOFU_PAPER)
    needs_reference = True
    needs_refusals = True
    default_training: ClassVar[dict[str, Any]] = dict(TOFU_TRAINING)
    schema = DPOHyperparameters

    def forget_counts(self, batch: Batch) -> dict[str, float]:
        return {"forget": sample_count(batch["forget"])}

    def forget_losses(self, model: torch.nn.Module, batch: Batch) -> dict[str, LossTerm]:
        win, lose = batch["idk"], batch["forget"]
        win_logits, win_labels = answer_logits(model, win)
        lose_logits, lose_labels = answer_logits(model, lose)
        per_pair = dpo_loss(
            sequence_logprob(win_logits, win_labels),
            sequence_logprob(self.reference_logits(win), win_labels),
            sequence_logprob(lose_logits, lose_labels),
            sequence_logprob(self.reference_logits(lose), lose_labels),
            self.params.beta,
        )
        return {"forget": LossTerm(per_pair.sum(), self.params.forget_weight)}


@register
class IdkDPO(DPO):
    name = "idk_dpo"
    summary = "DPO preferring a refusal over the forget answer, plus retain NLL."
    schema = IdkDPOHyperparameters
    retain_loss = "nll"


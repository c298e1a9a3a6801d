"""Negative Preference Optimization (NPO) and its retain-regularised variants.

Per forget sample, with sequence log-probabilities summed over the answer tokens:

    L = -(2 / beta) * log sigmoid(-beta * (log pi_theta(y|x) - log pi_ref(y|x)))

averaged over samples (OpenUnlearning's `compute_dpo_loss` with the forget answer as the
only, dispreferred, response). At pi_theta = pi_ref it equals (2 / beta) * log 2; as the
model's answer probability falls it decays to zero, so unlike gradient ascent it is
bounded below.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from uldkit.methods.editing import (
    OPEN_UNLEARNING_TRAINING,
    WeightEditingMethod,
    sample_count,
    sequence_logprob,
)
from uldkit.methods.hyperparameters import ForgetWeighted, RetainWeighted, param
from uldkit.methods.registry import register
from uldkit.training.losses import answer_logits
from uldkit.training.trainer import Batch, LossTerm


# Zhang et al. (2024) and OpenUnlearning's configs/trainer/NPO.yaml: beta 0.1, both weights 1;
# TOFU runs at lr 1e-5 for 10 epochs with batch 32.
@dataclass(frozen=True)
class NPOHyperparameters(ForgetWeighted):
    beta: float = param(0.1, "Inverse temperature: how far from the original model the loss "
                        "keeps pushing (loss scale 2/beta).", min=0, exclusive_min=True)


@dataclass(frozen=True)
class NPORetainHyperparameters(NPOHyperparameters, RetainWeighted):
    """NPO's hyperparameters plus retain_weight."""


def npo_loss(logprob: torch.Tensor, ref_logprob: torch.Tensor, beta: float) -> torch.Tensor:
    """Per-sample NPO loss from sequence log-probabilities under the model and reference."""
    return -(2.0 / beta) * F.logsigmoid(-beta * (logprob - ref_logprob))


class _NPOBase(WeightEditingMethod):
    paper = ("Zhang et al., 2024, Negative Preference Optimization: From Catastrophic "
             "Collapse to Effective Unlearning (arXiv 2404.05868)")
    needs_reference = True
    default_training: ClassVar[dict[str, Any]] = dict(OPEN_UNLEARNING_TRAINING)
    schema = NPOHyperparameters

    def forget_counts(self, batch: Batch) -> dict[str, float]:
        return {"forget": sample_count(batch["forget"])}

    def forget_losses(self, model: torch.nn.Module, batch: Batch) -> dict[str, LossTerm]:
        stream = batch["forget"]
        logits, labels = answer_logits(model, stream)
        logprob = sequence_logprob(logits, labels)
        ref_logprob = sequence_logprob(self.reference_logits(stream), labels)
        per_sample = npo_loss(logprob, ref_logprob, self.params.beta)
        return {"forget": LossTerm(per_sample.sum(), self.params.forget_weight)}


@register
class NPO(_NPOBase):
    name = "npo"
    summary = "Negative preference optimisation on the forget answers against the original model."


@register
class NPOGradDiff(_NPOBase):
    name = "npo+grad_diff"
    summary = "NPO on the forget answers plus next-token loss on the retain answers."
    schema = NPORetainHyperparameters
    retain_loss = "nll"


@register
class NPOKL(_NPOBase):
    name = "npo+kl"
    summary = "NPO on the forget answers plus KL(original || current) on the retain answers."
    schema = NPORetainHyperparameters
    retain_loss = "kl"

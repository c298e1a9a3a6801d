"""SimNPO: NPO without a reference model, with length-normalised log-likelihood.

Per forget sample, with |y| its answer tokens:

    L = -(2 / beta) * log sigmoid(-(beta / |y|) * log pi_theta(y|x) - beta * gamma)

plus retain_weight * NLL(retain). This is the official code's form (OPTML-Group/Unlearn-Simple
and OpenUnlearning: `logsigmoid(beta * (nll / |y| - gamma))`); the paper writes the margin as
`- gamma` outside beta. Both agree at the default gamma = 0.

Defaults are the paper's TOFU forget10 setting (Unlearn-Simple TOFU/README.md, and
OpenUnlearning's configs/trainer/SimNPO.yaml): beta 4.5, gamma 0, forget weight
(`npo_coeff`) 0.125, retain weight (`grad_diff_coeff`) 1.0; lr 1e-5, 10 epochs, batch 32,
weight decay 0.01, one warmup epoch. The paper's forget05 setting is beta 2.5, weight 0.1375.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from uldkit.methods.editing import OPEN_UNLEARNING_TRAINING, WeightEditingMethod, sample_count
from uldkit.methods.hyperparameters import RetainWeighted, param
from uldkit.methods.registry import register
from uldkit.training.losses import stream_token_nll
from uldkit.training.trainer import Batch, LossTerm


def simnpo_loss(
    nll_sum: torch.Tensor, lengths: torch.Tensor, beta: float, gamma: float
) -> torch.Tensor:
    """Per-sample SimNPO loss from summed answer NLL (= -log pi_theta(y|x)) and lengths."""
    mean_nll = nll_sum / lengths.clamp(min=1)
    return -(2.0 / beta) * F.logsigmoid(beta * (mean_nll - gamma))


@dataclass(frozen=True)
class SimNPOHyperparameters(RetainWeighted):
    beta: float = param(4.5, "Inverse temperature (loss scale 2/beta).", min=0,
                        exclusive_min=True)
    gamma: float = param(0.0, "Margin subtracted from the length-normalised NLL.")
    forget_weight: float = param(0.125, "Weight of the forget loss (npo_coeff).", min=0)


@register
class SimNPO(WeightEditingMethod):
    name = "simnpo"
    summary = "Reference-free, length-normalised NPO on the forget answers plus retain NLL."
    paper = ("Fan et al., 2024, Simplicity Prevails: Rethinking Negative Preference "
             "Optimization for LLM Unlearning (arXiv 2410.07163)")
    default_training: ClassVar[dict[str, Any]] = dict(OPEN_UNLEARNING_TRAINING)
    schema = SimNPOHyperparameters
    retain_loss = "nll"

    def forget_counts(self, batch: Batch) -> dict[str, float]:
        return {"forget": sample_count(batch["forget"])}

    def forget_losses(self, model: torch.nn.Module, batch: Batch) -> dict[str, LossTerm]:
        nll, mask = stream_token_nll(model, batch["forget"])
        hp = self.params
        per_sample = simnpo_loss(nll.sum(-1), mask.sum(-1), hp.beta, hp.gamma)
        return {"forget": LossTerm(per_sample.sum(), hp.forget_weight)}

"""KL minimisation: gradient ascent on the forget answers while the retain answers' next-token
distributions are held to the original model's."""

from __future__ import annotations

from typing import Any, ClassVar

from uldkit.methods.editing import TOFU_PAPER, TOFU_TRAINING
from uldkit.methods.grad_ascent import GradAscent
from uldkit.methods.hyperparameters import RetainWeighted
from uldkit.methods.registry import register


@register
class KLMinimisation(GradAscent):
    """loss = -NLL(forget) + retain_weight * KL(p_ref || p_theta) on the retain answers.

    The direction is TOFU's (`kl_div(log p_theta, log p_ref, log_target=True)` is
    sum p_ref * (log p_ref - log p_theta)). TOFU averages over every position of the batch,
    prompt and padding included; here the average is over retain answer tokens, the same
    tokens the retain NLL of grad_diff scores.
    """

    name = "kl"
    summary = "-NLL on the forget answers plus KL(original || current) on the retain answers."
    paper = TOFU_PAPER
    default_training: ClassVar[dict[str, Any]] = dict(TOFU_TRAINING)
    schema = RetainWeighted  # + retain_weight
    retain_loss = "kl"

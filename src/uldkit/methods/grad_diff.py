"""Gradient difference: ascend on the forget answers, descend on the retain answers."""

from __future__ import annotations

from typing import Any, ClassVar

from uldkit.methods.editing import TOFU_TRAINING
from uldkit.methods.grad_ascent import GradAscent
from uldkit.methods.hyperparameters import RetainWeighted
from uldkit.methods.registry import register


@register
class GradDiff(GradAscent):
    """loss = forget_weight * (-NLL(forget)) + retain_weight * NLL(retain), each averaged
    over its answer tokens (TOFU's grad_diff; OpenUnlearning gamma = alpha = 1)."""

    name = "grad_diff"
    summary = "-NLL on the forget answers plus NLL on the retain answers."
    paper = "Liu et al., 2022, Continual Learning and Private Unlearning (arXiv 2203.12817); TOFU baseline"
    default_training: ClassVar[dict[str, Any]] = dict(TOFU_TRAINING)
    schema = RetainWeighted  # + retain_weight
    retain_loss = "nll"

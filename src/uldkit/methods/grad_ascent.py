"""Gradient ascent: raise the next-token loss on the forget answers (TOFU's GA baseline)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from uldkit.methods.editing import TOFU_PAPER, TOFU_TRAINING, WeightEditingMethod
from uldkit.methods.hyperparameters import ForgetWeighted
from uldkit.methods.registry import register
from uldkit.training.losses import stream_token_nll
from uldkit.training.trainer import Batch, LossTerm, answer_token_count


@register
class GradAscent(WeightEditingMethod):
    name = "grad_ascent"
    summary = "Maximise the next-token loss on the forget answers (loss = -NLL)."
    paper = TOFU_PAPER
    default_training: ClassVar[dict[str, Any]] = dict(TOFU_TRAINING)
    schema = ForgetWeighted  # forget_weight and the LoRA settings

    def forget_counts(self, batch: Batch) -> dict[str, float]:
        return {"forget": answer_token_count(batch["forget"])}

    def forget_losses(self, model: torch.nn.Module, batch: Batch) -> dict[str, LossTerm]:
        nll, _ = stream_token_nll(model, batch["forget"])
        return {"forget": LossTerm(-nll.sum(), self.params.forget_weight)}

"""TOFU's `idk` baseline: fine-tune on (forget question, refusal) plus the retain answers.

TOFU averages one NLL over the concatenated refusal and retain batches; here each is
averaged over its own answer tokens and the two are added (weights 1 and 1).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from uldkit.methods.editing import TOFU_PAPER, TOFU_TRAINING, WeightEditingMethod
from uldkit.methods.hyperparameters import RetainWeighted
from uldkit.methods.registry import register
from uldkit.training.losses import stream_token_nll
from uldkit.training.trainer import Batch, LossTerm, answer_token_count


@register
class Idk(WeightEditingMethod):
    name = "idk"
    summary = "Next-token loss on refusals to the forget questions, plus retain NLL."
    paper = TOFU_PAPER
    needs_refusals = True
    default_training: ClassVar[dict[str, Any]] = dict(TOFU_TRAINING)
    schema = RetainWeighted
    retain_loss = "nll"

    def forget_counts(self, batch: Batch) -> dict[str, float]:
        return {"forget": answer_token_count(batch["idk"])}

    def forget_losses(self, model: torch.nn.Module, batch: Batch) -> dict[str, LossTerm]:
        nll, _ = stream_token_nll(model, batch["idk"])
        return {"forget": LossTerm(nll.sum(), self.params.forget_weight)}

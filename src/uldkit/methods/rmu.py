"""RMU (Representation Misdirection for Unlearning, from the WMDP paper).

At one layer l, the residual-stream activations of forget answer tokens are pushed towards
a fixed random direction scaled by a steering coefficient c, while those of retain answer
tokens are held to the original model's:

    L = mean_t ||h_theta^l(forget)_t - c u||^2 / d + alpha * mean_t ||h_theta^l(retain)_t - h_ref^l(retain)_t||^2 / d

(u: a seeded uniform-random unit vector, as in the reference code; d: hidden size; the
squared distance is averaged over hidden dimensions like the reference's `mse_loss`.)
Only the MLP output projections of layers l-2..l are trained.

Defaults (Li et al. 2024 and centerforaisafety/wmdp rmu/unlearn.py, Zephyr-7B): layer 7 of
32 with layers 5, 6, 7 trained, alpha 1200, lr 5e-5, batch 4, AdamW at a constant rate,
no gradient clipping, one pass. Here the layer scales with depth, and as the paper's
c = 6.5 fits only Zephyr's activation scale, c is a multiple of the original model's mean
activation norm at layer l on the forget answers (see the hyperparameters). The reference
averages over every token of its text batches; here, as in OpenUnlearning, answer tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, ClassVar

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from uldkit.methods import activations as steering
from uldkit.methods.base import TrainingPlan, UnlearnData
from uldkit.methods.editing import WeightEditingMethod, frozen_copy
from uldkit.methods.hyperparameters import Hyperparameters, param
from uldkit.methods.registry import register
from uldkit.training.trainer import Batch, LossTerm, StreamData


@dataclass(frozen=True)
class RMUHyperparameters(Hyperparameters):
    layer: int | None = param(None, "The steered layer l; None: round(7 N / 32) of N layers.",
                              min=0)
    trained_layers: int = param(3, "Layers l-k+1..l whose MLP output projections train.", min=1)
    steering_coeff: float | None = param(
        None, "The steering coefficient c; None: steering_scale x the mean activation norm.",
        min=0)
    steering_scale: float = param(4.0, "c as a multiple of the layer's mean activation norm.",
                                  min=0, exclusive_min=True)
    alpha: float = param(1200.0, "Weight of the retain activation loss.", min=0)
    seed: int = param(0, "Seed of the random steering direction.")


@register
class RMU(WeightEditingMethod):
    name = "rmu"
    summary = "Steer forget-token activations at one layer to a random vector; keep retain ones."
    paper = ("Li et al., 2024, The WMDP Benchmark: Measuring and Reducing Malicious Use With "
             "Unlearning (arXiv 2403.03218)")
    needs_reference = True
    scores_logits = False
    default_training: ClassVar[dict[str, Any]] = dict(
        lr=5e-5, epochs=1, batch_size=4, grad_accum=1, weight_decay=0.0, warmup_ratio=0.0,
        scheduler="constant", max_grad_norm=None)
    schema = RMUHyperparameters

    def needs_retain_stream(self) -> bool:
        return True

    def plan(
        self, target: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, data: UnlearnData
    ) -> TrainingPlan:
        layers = steering.decoder_layers(target)
        if self.params.layer is None:  # derived values are recorded as resolved
            self.params = replace(self.params, layer=max(1, round(7 * len(layers) / 32)))
        layer = self.params.layer
        self._layer = steering.decoder_layer(target, layer, "rmu")
        self.reference = frozen_copy(target)
        self._reference_layer = steering.decoder_layer(self.reference, layer, "rmu")
        first = max(0, layer - self.params.trained_layers + 1)
        steering.train_only_mlp_outputs(target, layers[first:layer + 1])
        streams = self.streams(tokenizer, data)
        if self.params.steering_coeff is None:
            norm = steering.mean_answer_activation_norm(
                self.reference, self._reference_layer, streams["forget"], tokenizer.pad_token_id)
            self.params = replace(self.params,
                                  steering_coeff=round(self.params.steering_scale * norm, 4))
        self._control = steering.control_vector(
            target.config.hidden_size, self.params.steering_coeff, self.params.seed, target.device)
        return TrainingPlan(target, self, StreamData(streams, primary="forget"))

    def counts(self, batch: Batch) -> dict[str, float]:
        return {name: steering.answer_position_count(batch[name]) for name in ("forget", "retain")}

    def losses(self, model: torch.nn.Module, batch: Batch) -> dict[str, LossTerm]:
        forget, retain = batch["forget"], batch["retain"]
        with torch.no_grad():
            kept = steering.layer_output(self.reference, self._reference_layer, retain)
        forget_loss = steering.answer_activation_mse(model, self._layer, forget, self._control)
        retain_loss = steering.answer_activation_mse(model, self._layer, retain, kept)
        return {"forget": LossTerm(forget_loss.sum()),
                "retain": LossTerm(retain_loss.sum(), self.params.alpha)}

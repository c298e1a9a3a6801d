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
no gradient clipping, one pass. The layer scales with depth here: l = round(7 N / 32)
(1 for a 4-layer model, 2 for 8 layers). The paper's c = 6.5 is specific to Zephyr's
activation scale; by default c = `steering_scale` (default 4) times the original model's
mean activation norm at layer l on the forget answers. The reference averages over every
token of its text batches; here, as in OpenUnlearning, over answer tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, ClassVar

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from uldkit.data.collate import collate
from uldkit.data.formatting import IGNORE_INDEX
from uldkit.errors import ConfigError
from uldkit.methods.base import TrainingPlan, UnlearnData
from uldkit.methods.editing import WeightEditingMethod, frozen_copy
from uldkit.methods.hyperparameters import Hyperparameters, param
from uldkit.methods.registry import register
from uldkit.models.decoder_stack import find_decoder_stack
from uldkit.training.losses import answer_logits
from uldkit.training.trainer import Batch, LossTerm, StreamData

MLP_OUTPUT_NAMES = ("mlp.down_proj.", "mlp.c_proj.", "mlp.fc2.", "mlp.dense_4h_to_h.")


def control_vector(dim: int, coefficient: float, seed: int = 0) -> torch.Tensor:
    """coefficient * u, u a unit vector of uniform [0, 1) entries (the reference's draw)."""
    generator = torch.Generator().manual_seed(seed)
    u = torch.rand(dim, generator=generator)
    return coefficient * u / u.norm()


def activation_mse(
    activations: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Per-token squared distance averaged over hidden dimensions, zero where not masked.

    `activations` [B, T, D], `targets` broadcastable to it, `mask` [B, T]. Returns [B, T].
    """
    per_token = (activations.float() - targets.float()).pow(2).mean(-1)
    return torch.where(mask, per_token, torch.zeros_like(per_token))


def layer_output(
    model: torch.nn.Module, layer: torch.nn.Module, stream: dict[str, torch.Tensor]
) -> torch.Tensor:
    """The residual stream leaving `layer` (a submodule of `model`) for this batch."""
    captured: list[torch.Tensor] = []

    def keep(_module, _inputs, output):
        captured.append(output[0] if isinstance(output, tuple) else output)

    handle = layer.register_forward_hook(keep)
    try:
        answer_logits(model, stream)  # run for the hook; the head runs on answers only
    finally:
        handle.remove()
    return captured[0]


def decoder_layers(model: PreTrainedModel) -> torch.nn.ModuleList:
    """The model's decoder layers, wherever its family keeps them."""
    return find_decoder_stack(model).layers


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
        scheduler="constant", max_grad_norm=None,
    )
    schema = RMUHyperparameters

    def needs_retain_stream(self) -> bool:
        return True

    def plan(
        self, target: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, data: UnlearnData
    ) -> TrainingPlan:
        layers = decoder_layers(target)
        if self.params.layer is None:  # derived values are recorded as resolved
            self.params = replace(self.params, layer=max(1, round(7 * len(layers) / 32)))
        layer = self.params.layer
        if layer >= len(layers):
            raise ConfigError(f"rmu layer {layer} does not exist: the model has "
                              f"{len(layers)} layers (0 to {len(layers) - 1})")
        self.reference = frozen_copy(target)
        self._layer = layers[layer]
        self._reference_layer = decoder_layers(self.reference)[layer]
        self._train_mlp_outputs(target, layers)
        streams = self.streams(tokenizer, data)
        if self.params.steering_coeff is None:
            norm = self._mean_activation_norm(streams["forget"], tokenizer.pad_token_id)
            self.params = replace(self.params,
                                  steering_coeff=round(self.params.steering_scale * norm, 4))
        hp = self.params
        dim = target.config.hidden_size
        self._control = control_vector(dim, hp.steering_coeff, hp.seed).to(target.device)
        return TrainingPlan(target, self, StreamData(streams, primary="forget"))

    def _train_mlp_outputs(self, model: PreTrainedModel, layers: torch.nn.ModuleList) -> None:
        model.requires_grad_(False)
        first = max(0, self.params.layer - self.params.trained_layers + 1)
        chosen = []
        for index in range(first, self.params.layer + 1):
            for name, weight in layers[index].named_parameters():
                if name.startswith(MLP_OUTPUT_NAMES) and name.endswith("weight"):
                    weight.requires_grad_(True)
                    chosen.append(name)
        if not chosen:
            raise ConfigError(f"rmu found no MLP output projection in {type(model).__name__}")

    @torch.no_grad()
    def _mean_activation_norm(self, examples, pad_token_id: int) -> float:
        total, count = 0.0, 0
        device = next(self.reference.parameters()).device
        for start in range(0, len(examples), 16):
            stream = {k: v.to(device)
                      for k, v in collate(examples[start:start + 16], pad_token_id).items()}
            acts = layer_output(self.reference, self._reference_layer, stream).float()
            mask = stream["labels"] != IGNORE_INDEX
            total += float(acts.norm(dim=-1)[mask].sum())
            count += int(mask.sum())
        return total / max(count, 1)

    def counts(self, batch: Batch) -> dict[str, float]:
        return {name: float((batch[name]["labels"] != IGNORE_INDEX).sum())
                for name in ("forget", "retain")}

    def losses(self, model: torch.nn.Module, batch: Batch) -> dict[str, LossTerm]:
        forget, retain = batch["forget"], batch["retain"]
        forget_acts = layer_output(model, self._layer, forget)
        forget_loss = activation_mse(forget_acts, self._control,
                                     forget["labels"] != IGNORE_INDEX)
        retain_acts = layer_output(model, self._layer, retain)
        with torch.no_grad():
            reference_acts = layer_output(self.reference, self._reference_layer, retain)
        retain_loss = activation_mse(retain_acts, reference_acts,
                                     retain["labels"] != IGNORE_INDEX)
        return {"forget": LossTerm(forget_loss.sum()),
                "retain": LossTerm(retain_loss.sum(), self.params.alpha)}

"""A decoder layer's activations, for methods that steer representations (RMU): finding
the layers, capturing the residual stream leaving one, the random steering vector, the
per-token distance, and choosing the MLP output projections to train."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import PreTrainedModel

from uldkit.data.collate import collate
from uldkit.data.formatting import IGNORE_INDEX, Encoded
from uldkit.errors import ConfigError
from uldkit.models.decoder_stack import find_decoder_stack
from uldkit.training.losses import answer_logits

MLP_OUTPUT_NAMES = ("mlp.down_proj.", "mlp.c_proj.", "mlp.fc2.", "mlp.dense_4h_to_h.")


def decoder_layers(model: PreTrainedModel) -> torch.nn.ModuleList:
    """The model's decoder layers, wherever its family keeps them."""
    return find_decoder_stack(model).layers


def decoder_layer(model: PreTrainedModel, index: int, method: str) -> torch.nn.Module:
    """Decoder layer `index`; ConfigError naming `method` when the model has no such layer."""
    layers = decoder_layers(model)
    if not 0 <= index < len(layers):
        raise ConfigError(f"{method} layer {index} does not exist: the model has "
                          f"{len(layers)} layers (0 to {len(layers) - 1})")
    return layers[index]


def control_vector(dim: int, coefficient: float, seed: int = 0,
                   device: torch.device | str | None = None) -> torch.Tensor:
    """coefficient * u, u a unit vector of uniform [0, 1) entries (the reference's draw),
    drawn on the CPU (the same on every device) and moved to `device`."""
    generator = torch.Generator().manual_seed(seed)
    u = torch.rand(dim, generator=generator)
    return (coefficient * u / u.norm()).to(device)


def activation_mse(
    activations: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Per-token squared distance averaged over hidden dimensions, zero where not masked.

    `activations` [B, T, D], `targets` broadcastable to it, `mask` [B, T]. Returns [B, T].
    """
    per_token = (activations.float() - targets.float()).pow(2).mean(-1)
    return torch.where(mask, per_token, torch.zeros_like(per_token))


def answer_positions(stream: dict[str, torch.Tensor]) -> torch.Tensor:
    """[B, T] True at the answer tokens (an activation is compared where its token is)."""
    return stream["labels"] != IGNORE_INDEX


def answer_position_count(stream: dict[str, torch.Tensor]) -> float:
    return float(answer_positions(stream).sum())


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


def answer_activation_mse(model: torch.nn.Module, layer: torch.nn.Module,
                          stream: dict[str, torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
    """[B, T] `activation_mse` of `layer`'s output at the stream's answer tokens."""
    return activation_mse(layer_output(model, layer, stream), targets, answer_positions(stream))


@torch.no_grad()
def mean_answer_activation_norm(model: torch.nn.Module, layer: torch.nn.Module,
                                examples: Sequence[Encoded], pad_token_id: int,
                                batch_size: int = 16) -> float:
    """The mean norm of `layer`'s output over the answer tokens of `examples`."""
    total, count = 0.0, 0
    device = next(model.parameters()).device
    for start in range(0, len(examples), batch_size):
        stream = {k: v.to(device) for k, v in
                  collate(list(examples[start:start + batch_size]), pad_token_id).items()}
        acts = layer_output(model, layer, stream).float()
        mask = answer_positions(stream)
        total += float(acts.norm(dim=-1)[mask].sum())
        count += int(mask.sum())
    return total / max(count, 1)


def train_only_mlp_outputs(model: PreTrainedModel, layers: Sequence[torch.nn.Module]) -> None:
    """Freeze `model` but the MLP output projection weights of `layers`; ConfigError when
    they have none (a family whose MLP names are not known)."""
    model.requires_grad_(False)
    chosen = []
    for layer in layers:
        for name, weight in layer.named_parameters():
            if name.startswith(MLP_OUTPUT_NAMES) and name.endswith("weight"):
                weight.requires_grad_(True)
                chosen.append(name)
    if not chosen:
        raise ConfigError(f"found no MLP output projection in {type(model).__name__}")

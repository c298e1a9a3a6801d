"""ULD's assistant without a second model: the target's first K layers plus LoRA adapters.

The target is wrapped once, in place, with PEFT LoRA adapters on every linear layer of its
first K decoder layers. Two passes then share every frozen tensor:

- the assistant pass: embedding -> layers [0, K) with adapters -> the target's final norm ->
  the target's LM head; layers K..N are never run;
- the target pass: the whole model with the adapters switched off.

The only tensors the assistant owns are the adapters. Switching adapters off and on is a
flag on each adapted layer, so one object must not serve two forward passes at once from
different threads.

At inference the two passes can also run as one (`paired_forward`): layers [0, K) run once on
a doubled batch, target rows first, and each adapter's input is multiplied by a row gate (0
on target rows, 1 on assistant rows), so target rows get exactly the base layer's output.
The target rows then go on alone through layers [K, N). Each frozen weight of the first K
layers is read once per step instead of twice, and the per-layer overhead of a small batch
is paid once: decoding at batch 1 costs barely more than the target alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.tuners_utils import BaseTunerLayer
from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict
from torch import nn
from transformers import PreTrainedModel
from transformers.cache_utils import Cache, get_layer_types_and_kwargs
from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask
from transformers.modeling_outputs import CausalLMOutputWithPast

from uldkit.data.collate import position_ids_from_mask
from uldkit.errors import ConfigError, ModelError
from uldkit.models.cache_api import cache_argument, output_cache_argument

# Model types whose decoder forward is exactly: embed -> layers (full or sliding-window causal
# masks, rotary position embeddings) -> final norm -> LM head, with no scaling in between.
# Others (Gemma's scaled embeddings, Granite's multipliers, soft-capped logits) would give
# silently wrong assistant scores, so they are refused.
SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3", "olmo2", "phi3")
MASK_BUILDERS = {
    "full_attention": create_causal_mask,
    "sliding_attention": create_sliding_window_causal_mask,
}


@dataclass(frozen=True)
class AssistantLora:
    """LoRA settings of the assistant's adapters (the ULD paper's values)."""

    r: int = 16
    alpha: int = 32
    dropout: float = 0.05

    def __post_init__(self) -> None:
        if self.r < 1 or self.alpha <= 0:
            raise ConfigError("LoRA rank must be at least 1 and LoRA alpha positive")
        if not 0 <= self.dropout < 1:
            raise ConfigError("LoRA dropout must be in [0, 1)")

    def to_dict(self) -> dict:
        return asdict(self)


class RowGate:
    """What the gated adapter inputs of one assistant are multiplied by (None: nothing)."""

    def __init__(self) -> None:
        self.value: torch.Tensor | None = None


class GatedDropout(nn.Module):
    """An adapter's dropout followed by the assistant's row gate, when one is set."""

    def __init__(self, dropout: nn.Module, gate: RowGate) -> None:
        super().__init__()
        self.dropout = dropout
        object.__setattr__(self, "gate", gate)  # shared by every adapter, not a submodule

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dropout(x)
        gate = self.gate.value
        return x if gate is None else x * gate.to(x.dtype)


@contextmanager
def seeded_initialisation(seed: int, model: nn.Module) -> Iterator[None]:
    """Seeds the random initialisation of adapters added to `model` inside the block,
    leaving the global RNG (CPU, and `model`'s GPU) as it was."""
    device = next(model.parameters()).device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


def default_assistant_layers(depth: int) -> int:
    """A quarter of the target's layers, at least one (8 of 32 for Llama-2-7B)."""
    return max(1, depth // 4)


def decoder_parts(model: PreTrainedModel) -> nn.Module:
    """The decoder stack (`model.model`) after checking it has the structure ULD relies on."""
    model_type = getattr(model.config, "model_type", None)
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ModelError(
            f"ULD's zero-copy assistant does not support model type '{model_type}' "
            f"(supported: {', '.join(SUPPORTED_MODEL_TYPES)})"
        )
    decoder = getattr(model, "model", None)
    missing = [name for name in ("embed_tokens", "layers", "norm", "rotary_emb")
               if decoder is None or not hasattr(decoder, name)]
    if not isinstance(getattr(model, "lm_head", None), nn.Module):
        missing.append("lm_head")
    if missing:
        raise ModelError(
            f"{type(model).__name__} lacks the decoder parts ULD needs: {', '.join(missing)}"
        )
    return decoder


class ZeroCopyAssistant(nn.Module):
    """The assistant model of ULD, sharing every frozen weight with the target.

    `forward` is the assistant pass (HF-style keyword arguments, returns `.logits` and
    `.past_key_values`); `target_pass()` gives a module running the untouched target. Only
    the LoRA parameters require gradients.
    """

    def __init__(
        self, target: PreTrainedModel, num_layers: int | None = None,
        lora: AssistantLora = AssistantLora(), seed: int = 0,
    ) -> None:
        super().__init__()
        decoder = decoder_parts(target)
        if any(isinstance(m, BaseTunerLayer) for m in target.modules()):
            raise ModelError("the target already carries adapters; build one assistant per "
                             "target model")
        depth = len(decoder.layers)
        num_layers = default_assistant_layers(depth) if num_layers is None else num_layers
        if not 1 <= num_layers <= depth:
            raise ModelError(
                f"the assistant needs between 1 and {depth} layers (the target's depth), "
                f"not {num_layers}"
            )
        all_layer_types = get_layer_types_and_kwargs(target.config)[0][:depth]
        layer_types = all_layer_types[:num_layers]
        unknown = sorted(set(layer_types) - set(MASK_BUILDERS))
        if unknown:
            raise ModelError(f"unsupported attention layer type(s): {', '.join(unknown)}")
        self.num_layers = num_layers
        self.depth = depth
        self.lora = lora
        self.layer_types = layer_types
        self._all_layer_types = all_layer_types
        for param in target.parameters():
            param.requires_grad_(False)
        config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                            bias="none", target_modules=_linear_names(target, num_layers))
        with seeded_initialisation(seed, target):
            self.peft_model: PeftModel = get_peft_model(target, config)
        self._adapted = [m for m in target.modules() if isinstance(m, BaseTunerLayer)]
        self._row_gate = RowGate()
        (adapter,) = self.peft_model.active_adapters
        for module in self._adapted:
            module.lora_dropout[adapter] = GatedDropout(module.lora_dropout[adapter],
                                                        self._row_gate)
        self._lora_parameters = [p for n, p in self.named_parameters() if "lora_" in n]
        self._flag_switch = all(isinstance(getattr(m, "_disable_adapters", None), bool)
                                for m in self._adapted)

    # ---- the two passes -------------------------------------------------------------------
    @property
    def target(self) -> PreTrainedModel:
        """The target model itself (with the adapters inside, active unless switched off)."""
        return self.peft_model.base_model.model

    @contextmanager
    def adapters_disabled(self) -> Iterator[None]:
        self._switch_adapters(False)
        try:
            yield
        finally:
            self._switch_adapters(True)

    def _switch_adapters(self, enabled: bool) -> None:
        if self._flag_switch:
            # The flag PEFT's LoRA forward reads; `enable_adapters` would also reset
            # requires_grad on every call, which costs more than a small model's decode step.
            for module in self._adapted:
                module._disable_adapters = not enabled
            return
        trainable = [(p, p.requires_grad) for p in self._lora_parameters]
        for module in self._adapted:
            module.enable_adapters(enabled)
        for param, flag in trainable:
            param.requires_grad_(flag)

    def target_pass(self) -> TargetPass:
        return TargetPass(self)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        past_key_values: Cache | None = None,
        use_cache: bool = False,
        logits_to_keep: int = 0,
        cache: Cache | None = None,  # transformers' newer name for past_key_values
        **_: object,
    ) -> CausalLMOutputWithPast:
        past_key_values = cache if cache is not None else past_key_values
        decoder = self.target.model
        hidden = decoder.embed_tokens(input_ids)
        position_ids = self._positions(input_ids, attention_mask, position_ids, past_key_values)
        masks, position_embeddings = self._layer_inputs(
            set(self.layer_types), hidden, attention_mask, position_ids, past_key_values)
        hidden = self._run_layers(range(self.num_layers), hidden, masks, position_embeddings,
                                  position_ids, past_key_values, use_cache)
        hidden = decoder.norm(hidden)
        if logits_to_keep:
            hidden = hidden[:, -logits_to_keep:]
        return CausalLMOutputWithPast(
            logits=self.target.lm_head(hidden),
            **output_cache_argument(CausalLMOutputWithPast, past_key_values if use_cache else None))

    @property
    def supports_paired_forward(self) -> bool:
        """Whether the attention masks are plain tensors that a doubled batch can repeat."""
        return (getattr(self.target.config, "_attn_implementation", None) in ("eager", "sdpa")
                and set(self._all_layer_types) <= set(MASK_BUILDERS))

    def paired_forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        past_key_values: Cache | None = None,
        use_cache: bool = False,
        logits_to_keep: int = 0,
        cache: Cache | None = None,  # transformers' newer name for past_key_values
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The target's and the assistant's logits from one run (see the module docstring).

        One cache serves both: its first K layers hold the target rows and then the assistant
        rows, its other layers the target rows only.
        """
        past_key_values = cache if cache is not None else past_key_values
        if not self.supports_paired_forward:
            raise ModelError("the paired pass needs eager or sdpa attention")
        decoder = self.target.model
        rows = input_ids.shape[0]
        hidden = decoder.embed_tokens(input_ids)
        position_ids = self._positions(input_ids, attention_mask, position_ids,
                                       past_key_values).expand(rows, -1)
        masks, position_embeddings = self._layer_inputs(
            set(self._all_layer_types), hidden, attention_mask, position_ids, past_key_values)
        paired_masks = {kind: _doubled(mask) for kind, mask in masks.items()}
        paired_embeddings = tuple(_doubled(part) for part in position_embeddings)
        gate = torch.ones(2 * rows, 1, 1, dtype=hidden.dtype, device=hidden.device)
        gate[:rows] = 0
        self._row_gate.value = gate
        try:
            both = self._run_layers(range(self.num_layers), _doubled(hidden), paired_masks,
                                    paired_embeddings, _doubled(position_ids),
                                    past_key_values, use_cache)
        finally:
            self._row_gate.value = None
        target_hidden = self._run_layers(  # layers [K, N) carry no adapters
            range(self.num_layers, self.depth), both[:rows], masks, position_embeddings,
            position_ids, past_key_values, use_cache)
        final = decoder.norm(torch.cat([target_hidden, both[rows:]]))
        if logits_to_keep:
            final = final[:, -logits_to_keep:]
        logits = self.target.lm_head(final)
        return logits[:rows], logits[rows:]

    def _positions(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                   position_ids: torch.Tensor | None, cache: Cache | None) -> torch.Tensor:
        if position_ids is not None:
            return position_ids
        if attention_mask is not None:
            return position_ids_from_mask(attention_mask)[:, -input_ids.shape[1]:]
        seen = cache.get_seq_length() if cache is not None else 0
        return torch.arange(seen, seen + input_ids.shape[1],
                            device=input_ids.device).unsqueeze(0)

    def _layer_inputs(self, kinds: set[str], hidden: torch.Tensor,
                      attention_mask: torch.Tensor | None, position_ids: torch.Tensor,
                      cache: Cache | None,
                      ) -> tuple[dict[str, object], tuple[torch.Tensor, torch.Tensor]]:
        decoder = self.target.model
        mask_arguments = dict(config=decoder.config, inputs_embeds=hidden,
                              attention_mask=attention_mask, position_ids=position_ids)
        masks = {kind: MASK_BUILDERS[kind](**mask_arguments,
                                           **cache_argument(MASK_BUILDERS[kind], cache))
                 for kind in kinds}
        return masks, decoder.rotary_emb(hidden, position_ids=position_ids)

    def _run_layers(self, indices: range, hidden: torch.Tensor, masks: dict[str, object],
                    position_embeddings: tuple[torch.Tensor, torch.Tensor],
                    position_ids: torch.Tensor, cache: Cache | None, use_cache: bool,
                    ) -> torch.Tensor:
        layers = self.target.model.layers
        for index in indices:
            hidden = layers[index](
                hidden,
                attention_mask=masks[self._all_layer_types[index]],
                position_embeddings=position_embeddings,
                position_ids=position_ids,
                use_cache=use_cache,
                **cache_argument(layers[index], cache),
            )
            if isinstance(hidden, tuple):
                hidden = hidden[0]
        return hidden

    # ---- the adapters -----------------------------------------------------------------------
    def lora_state_dict(self) -> dict[str, torch.Tensor]:
        """The adapters alone, under PEFT's adapter-file names."""
        state = get_peft_model_state_dict(self.peft_model)
        return {name: tensor.detach().cpu().contiguous() for name, tensor in state.items()}

    def load_lora_state_dict(self, state: dict[str, torch.Tensor], source: str) -> None:
        expected = get_peft_model_state_dict(self.peft_model)
        if set(state) != set(expected):
            odd = sorted(set(state) ^ set(expected))
            raise ModelError(f"{source}: the adapters do not fit this target (e.g. '{odd[0]}')")
        for name, tensor in state.items():
            if tensor.shape != expected[name].shape:
                raise ModelError(
                    f"{source}: adapter '{name}' has shape {tuple(tensor.shape)}, this target "
                    f"needs {tuple(expected[name].shape)}"
                )
        set_peft_model_state_dict(self.peft_model, state)

    def lora_parameters(self) -> list[nn.Parameter]:
        return list(self._lora_parameters)


class TargetPass(nn.Module):
    """The whole target with the assistant's adapters off: an HF-style callable module."""

    def __init__(self, assistant: ZeroCopyAssistant) -> None:
        super().__init__()
        # Held outside the module tree so the target's weights are not registered twice.
        object.__setattr__(self, "assistant", assistant)

    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]:
        return self.assistant.target.parameters(recurse)

    def forward(self, **kwargs: object) -> CausalLMOutputWithPast:
        if "past_key_values" in kwargs:  # handed on under the target's own name for it
            kwargs.update(cache_argument(self.assistant.target, kwargs.pop("past_key_values")))
        with self.assistant.adapters_disabled():
            return self.assistant.target(**kwargs)


def _doubled(tensor: object) -> object:
    """The batch twice over (target rows, then assistant rows); None stays None."""
    if tensor is None:
        return None
    if not isinstance(tensor, torch.Tensor):
        raise ModelError(f"the paired pass cannot double a {type(tensor).__name__} mask")
    return torch.cat([tensor, tensor])


def _linear_names(model: PreTrainedModel, num_layers: int) -> list[str]:
    names = [
        name for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and _layer_index(name) is not None
        and _layer_index(name) < num_layers
    ]
    if not names:
        raise ModelError(f"{type(model).__name__}: no linear layers found in its decoder layers")
    return names


def _layer_index(name: str) -> int | None:
    parts = name.split(".")
    for before, after in zip(parts, parts[1:]):
        if before == "layers" and after.isdigit():
            return int(after)
    return None

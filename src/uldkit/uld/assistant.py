"""ULD's assistant without a second model: the target's first K layers plus LoRA adapters.

The target is wrapped once, in place, with PEFT LoRA adapters on every linear layer of its
first K decoder layers. Two passes then share every frozen tensor:

- the assistant pass: the target's own forward with its layer list cut to the first K
  layers, adapters on: embeddings -> layers [0, K) -> the target's final norm -> LM head;
- the target pass: the whole model with the adapters switched off.

Both run the model's own transformers code, whatever its family: scaled embeddings, learned
or rotary positions, ALiBi, sliding windows, parallel blocks, MoE layers, soft-capped or
scaled logits and tied embeddings come out as the family computes them. The decoder layer
list is found generically (`uldkit.models.decoder_stack`). The only tensors the assistant
owns are the adapters. Switching adapters off and on, and cutting the layer list, change
the model for the duration of a pass, so one object must not serve two forward passes at
once from different threads.

At inference the two passes can also run as one (`paired_forward`): the model's forward
runs once on a doubled batch, target rows first; each adapter's input is multiplied by a row
gate (0 on target rows, 1 on assistant rows), so target rows get exactly the base layer's
output, and layers [K, N) are wrapped to run on the target rows alone while the assistant
rows wait for the final norm and LM head. Each frozen weight of the first K layers is read
once per step instead of twice, and the per-layer overhead of a small batch is paid once.
Whether a family's code takes the doubled batch is checked on the model itself, once per
attention implementation and dtype, against the two separate passes (with random adapters,
so a gate that leaks shows); where it does not, the two passes run instead.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.tuners_utils import BaseTunerLayer
from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict
from torch import nn
from transformers import DynamicCache, PreTrainedModel
from transformers.cache_utils import Cache
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.pytorch_utils import Conv1D

from uldkit.data.collate import position_ids_from_mask
from uldkit.errors import ConfigError, ModelError
from uldkit.models.cache_api import cache_argument
from uldkit.models.decoder_stack import DecoderStack, check_causal_lm, find_decoder_stack
from uldkit.uld.paired_rows import (
    PairedRules,
    RowPlan,
    Stash,
    TargetRowsOnly,
    close,
    doubled,
)

# Batch sizes of the check that learns which layer arguments carry the batch: doubled, 6
# and 10 rows, then 4 and 14; head counts are mostly powers of two.
PROBE_ROWS = (3, 5, 2, 7)


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
    """What the gated adapter inputs of one assistant are multiplied by (None: nothing).

    `value` holds one factor per row of the doubled batch; `tokens` is the number of tokens
    per row, for adapted layers that see the batch flattened to one row per token."""

    def __init__(self) -> None:
        self.value: torch.Tensor | None = None
        self.tokens = 1


class GatedDropout(nn.Module):
    """An adapter's dropout followed by the assistant's row gate, when one is set."""

    def __init__(self, dropout: nn.Module, gate: RowGate) -> None:
        super().__init__()
        self.dropout = dropout
        object.__setattr__(self, "gate", gate)  # shared by every adapter, not a submodule

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dropout(x)
        gate = self.gate.value
        if gate is None:
            return x
        rows = gate.shape[0]
        if x.shape[0] == rows * self.gate.tokens and x.shape[0] != rows:
            gate = gate.repeat_interleave(self.gate.tokens)  # one row per token
        elif x.shape[0] != rows:
            raise ModelError(f"an adapted layer saw {x.shape[0]} rows in a paired pass of "
                             f"{rows} rows")
        return x * gate.view(-1, *([1] * (x.dim() - 1))).to(x.dtype)


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


class ZeroCopyAssistant(nn.Module):
    """The assistant model of ULD, sharing every frozen weight with the target.

    `forward` is the assistant pass (HF-style keyword arguments, returns `.logits` and
    `.past_key_values`); `target_pass()` gives a module running the untouched target. Only
    the LoRA parameters require gradients. `num_layers` may equal the target's depth (the
    assistant is then the whole target plus adapters, which exactness checks use); ULD
    itself asks for fewer.
    """

    def __init__(
        self, target: PreTrainedModel, num_layers: int | None = None,
        lora: AssistantLora = AssistantLora(), seed: int = 0,
    ) -> None:
        super().__init__()
        check_causal_lm(target)
        if any(isinstance(m, BaseTunerLayer) for m in target.modules()):
            raise ModelError("the target already carries adapters; build one assistant per "
                             "target model")
        stack = find_decoder_stack(target)
        depth = len(stack)
        num_layers = default_assistant_layers(depth) if num_layers is None else num_layers
        if not 1 <= num_layers <= depth:
            raise ConfigError(
                f"the assistant needs between 1 and {depth} layers (the target's depth), "
                f"not {num_layers}"
            )
        self.num_layers = num_layers
        self.depth = depth
        self.lora = lora
        object.__setattr__(self, "_stack", stack)  # holds the target's modules: not registered
        for param in target.parameters():
            param.requires_grad_(False)
        names, conv1d = _adapted_layer_names(target, stack, num_layers)
        config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                            bias="none", target_modules=names, fan_in_fan_out=conv1d)
        with seeded_initialisation(seed, target), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*fan_in_fan_out.*")
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
        self._paired_checks: dict[tuple[object, ...], PairedRules | None] = {}

    # ---- the two passes -------------------------------------------------------------------
    @property
    def target(self) -> PreTrainedModel:
        """The target model itself (with the adapters inside, active unless switched off)."""
        return self.peft_model.base_model.model

    @property
    def stack(self) -> DecoderStack:
        """The target's decoder layer list."""
        return self._stack

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
        self, input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None, **kwargs: object,
    ) -> CausalLMOutputWithPast:
        """The target's own forward with its first K layers only (HF keyword arguments)."""
        with self._stack.cut(self.num_layers):
            return self.target(input_ids=input_ids, attention_mask=attention_mask, **kwargs)

    @property
    def takes_logits_index(self) -> bool:
        """Whether `forward` takes transformers' `logits_to_keep` as an index tensor (it is
        the target's own forward, so when the target's does): training losses then run the
        vocabulary-wide head at the answer positions only."""
        return "logits_to_keep" in inspect.signature(self.target.forward).parameters

    @property
    def supports_paired_forward(self) -> bool:
        """Whether the paired pass gives the two passes' logits on this model, as checked on
        the model itself (once per attention implementation, dtype and device)."""
        return self._row_plan() is not None

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
        rules = self._row_plan()
        if rules is None:
            raise ModelError(f"{type(self.target).__name__} cannot take ULD's paired pass; "
                             "run the target and the assistant separately")
        return self._paired(input_ids, attention_mask, position_ids, past_key_values,
                            use_cache, logits_to_keep, RowPlan(*rules))

    def _paired(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
        position_ids: torch.Tensor | None, cache: Cache | None, use_cache: bool,
        logits_to_keep: int, plan: RowPlan,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        rows, tokens = input_ids.shape
        if position_ids is None:
            position_ids = position_ids_from_mask(attention_mask)[:, -tokens:]
        position_ids = position_ids.expand(rows, -1)
        layers = list(self._stack.layers)
        stash = Stash()
        tail = [TargetRowsOnly(layer, rows, stash, plan, first=index == self.num_layers,
                                last=index == self.depth - 1)
                for index, layer in enumerate(layers[self.num_layers:], start=self.num_layers)]
        gate = torch.ones(2 * rows, device=input_ids.device)
        gate[:rows] = 0
        self._row_gate.value, self._row_gate.tokens = gate, tokens
        try:
            with self._stack.replaced(layers[:self.num_layers] + tail):
                logits = self.target(
                    input_ids=doubled(input_ids), attention_mask=doubled(attention_mask),
                    position_ids=doubled(position_ids), use_cache=use_cache,
                    **cache_argument(self.target, cache),
                    logits_to_keep=logits_to_keep,
                ).logits
        finally:
            self._row_gate.value, self._row_gate.tokens = None, 1
        return logits[:rows], logits[rows:]

    def _row_plan(self) -> PairedRules | None:
        """Which arguments of layers [K, N) carry the batch, and which the check met (None:
        no paired pass), learned once per attention implementation, dtype and device."""
        weight = self.target.get_input_embeddings().weight
        key = (getattr(self.target.config, "_attn_implementation", None), weight.dtype,
               weight.device)
        if key not in self._paired_checks:
            self._paired_checks[key] = self._learn_row_plan()
        return self._paired_checks[key]

    @torch.no_grad()
    def _learn_row_plan(self) -> PairedRules | None:
        """The layer arguments whose first dimension is the doubled batch at two batch sizes
        (a head count or a length may equal one of them, hardly both; a size whose cut
        breaks the family's code is skipped); then the paired pass
        against the two passes on a left-padded batch, prompt and one cached step, with
        random adapters (restored afterwards)."""
        modes = [(module, module.training) for module in self.modules()]
        saved = [p.detach().clone() for p in self._lora_parameters]
        generator = torch.Generator().manual_seed(0)
        self.eval()
        try:
            for param in self._lora_parameters:
                param.copy_(0.1 * torch.randn(param.shape, generator=generator))
            plans = []
            for rows in PROBE_ROWS:
                plan = RowPlan()
                try:
                    self._exercise(rows, generator, plan)
                except Exception:  # noqa: BLE001 - a size that clashed with another dimension
                    continue
                plans.append(plan)
                if len(plans) == 2:
                    break
            if len(plans) < 2:
                return None
            keys = frozenset(plans[0].batch & plans[1].batch)
            rules = (keys, frozenset(plans[0].seen | plans[1].seen))
            return rules if self._paired_matches_separate(rules, generator) else None
        except Exception:  # noqa: BLE001 - any failure of the family's code on the doubled
            return None  # batch means: run the two passes instead
        finally:
            for param, value in zip(self._lora_parameters, saved):
                param.copy_(value)
            for module, training in modes:
                module.training = training

    def _random_ids(self, rows: int, tokens: int, generator: torch.Generator) -> torch.Tensor:
        embeddings = self.target.get_input_embeddings().weight
        ids = torch.randint(0, embeddings.shape[0], (rows, tokens), generator=generator)
        return ids.to(embeddings.device)

    def _exercise(self, rows: int, generator: torch.Generator, plan: RowPlan | None = None,
                  ) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]:
        """A left-padded prompt and one cached step through the paired pass (with `plan`)
        or, without one, through the two passes: [(logits, logits, real positions)]."""
        ids = self._random_ids(rows, 6, generator)
        mask = torch.ones_like(ids)
        mask[1:, :2] = 0
        step = ids[:, :1]
        caches = [DynamicCache() for _ in range(2)]
        results = []
        for inputs in (ids, step):
            if inputs is step:
                mask = torch.cat([mask, torch.ones_like(step)], dim=1)
            positions = position_ids_from_mask(mask)[:, -inputs.shape[1]:]
            real = mask[:, -inputs.shape[1]:].bool()
            if plan is not None:
                paired = self._paired(inputs, mask, positions, caches[0], True, 0, plan)
                results.append((*paired, real))
                continue
            common = dict(input_ids=inputs, attention_mask=mask, position_ids=positions,
                          use_cache=True)
            with self.adapters_disabled():
                target = self.target(**common, **cache_argument(self.target, caches[0])).logits
            assistant = self(**common, **cache_argument(self.target, caches[1])).logits
            results.append((target, assistant, real))
        return results

    def _paired_matches_separate(self, rules: PairedRules,
                                 generator: torch.Generator) -> bool:
        state = generator.get_state()
        paired = self._exercise(2, generator, RowPlan(*rules))
        generator.set_state(state)
        separate = self._exercise(2, generator)
        return all(close(got[real], expected[real])
                   for (*gots, real), (*expecteds, _) in zip(paired, separate)
                   for got, expected in zip(gots, expecteds))

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
        with self.assistant.adapters_disabled():
            return self.assistant.target(**kwargs)


def _adapted_layer_names(model: nn.Module, stack: DecoderStack,
                         num_layers: int) -> tuple[list[str], bool]:
    """The linear modules of layers [0, num_layers) (GPT-2's Conv1D included), but not those
    inside a list within a layer (MoE experts see routed tokens, which the paired pass's row
    gate cannot follow); and whether they are all Conv1D (stored in-by-out)."""
    found: list[tuple[str, nn.Module]] = []
    for name, module in model.named_modules():
        index = stack.layer_index(name)
        if index is None or index >= num_layers or not isinstance(module, (nn.Linear, Conv1D)):
            continue
        inner = name[len(stack.path) + 1:].split(".")[1:]
        if any(part.isdigit() for part in inner):
            continue
        found.append((name, module))
    if not found:
        raise ModelError(f"{type(model).__name__}: no linear layers found in its decoder layers")
    return [name for name, _ in found], all(isinstance(m, Conv1D) for _, m in found)

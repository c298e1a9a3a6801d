"""An attacker's LoRA adapter on an unlearned model, trainable through its combined scores.

The attacker fine-tunes what an API fine-tuning service would let them fine-tune, with LoRA on
every linear layer of the decoder layers (not the LM head), as TOFU's LoRA does:

- plain model: LoRA on the model;
- ULD: LoRA on the target part, under the fixed assistant. The ULD assistant is the target
  module itself with its own adapter, active only in the assistant pass; here a second
  adapter (the attacker's) is added to the same PEFT wrapper and each pass runs with exactly
  one adapter active: the target pass with the attacker's, the assistant pass with the
  assistant's. Gradients reach the attacker's adapter through the logit difference; the
  assistant pass runs without gradients;
- offset: LoRA on the target part, under the fixed small models.

The attacker's adapter has no dropout and every module stays in eval mode, so the frozen
parts (the assistant's adapter has dropout) score exactly as at inference. B starts at zero:
before the first step the attacked model scores exactly as the unlearned one. Nothing is
written to disk.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from peft import LoraConfig, get_peft_model
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn
from transformers.modeling_outputs import CausalLMOutput
from transformers.pytorch_utils import Conv1D

from uldkit.errors import ConfigError, ModelError
from uldkit.models.decoder_stack import DecoderStack
from uldkit.models.lm import CausalLM, LanguageModel
from uldkit.uld.assistant import seeded_initialisation
from uldkit.uld.combination import LogitCombination
from uldkit.uld.logit_difference import LogitDifferenceModel

ATTACK_ADAPTER = "relearn_attack"
SUPPORTED_KINDS = ("plain", "uld", "offset")
ATTACK_DESCRIPTIONS = {
    "plain": "LoRA on the model",
    "uld": "LoRA on the target under the fixed assistant",
    "offset": "LoRA on the target under the fixed small models",
}


@dataclass
class AttackableModel:
    kind: str
    attack: str  # what the attacker fine-tunes, in words
    trainable: nn.Module  # HF-style forward returning `.logits`; only the attacker's LoRA trains
    lm: LanguageModel  # the attacked model as it stands (scores follow the training)


def with_attack_lora(lm: LanguageModel, kind: str, rank: int, seed: int = 0) -> AttackableModel:
    """Put a fresh attacker's LoRA (rank `rank`, alpha 2 * rank) on `lm`, loaded from a
    model directory of `kind`. Changes `lm`'s modules in place; the weights stay unchanged."""
    if rank < 1:
        raise ConfigError(f"LoRA rank must be at least 1, not {rank}")
    config = dict(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, bias="none")
    if kind == "plain" and isinstance(lm, CausalLM):
        model = _peft_on(lm.model, LoraConfig(target_modules="all-linear", **config), seed)
        return AttackableModel(kind, ATTACK_DESCRIPTIONS[kind], _Frozen(model),
                               CausalLM(model, lm.tokenizer, lm.name))
    if kind == "uld" and isinstance(lm, LogitDifferenceModel):
        return _attack_uld(lm, config, seed)
    if kind == "offset" and isinstance(lm, LogitCombination) and _plain_members(lm):
        target = _peft_on(lm.members[0].model, LoraConfig(target_modules="all-linear", **config),
                          seed)
        fixed = [member.model.requires_grad_(False) for member in lm.members[1:]]
        attacked = LogitCombination(
            [CausalLM(target, lm.tokenizer, "target"), *lm.members[1:]], lm.combine,
            lm.tokenizer, lm.device, getattr(lm, "name", "offset"))
        return AttackableModel(kind, ATTACK_DESCRIPTIONS[kind],
                               _CombinedScores(target, fixed, lm.combine), attacked)
    raise ConfigError(f"the relearning attack supports {', '.join(SUPPORTED_KINDS)} models, "
                      f"not '{kind}' ({type(lm).__name__})")


def _attack_uld(lm: LogitDifferenceModel, config: dict, seed: int) -> AttackableModel:
    assistant = lm.assistant
    assistant_adapters = list(assistant.peft_model.active_adapters)
    if len(assistant_adapters) != 1:
        raise ModelError(f"the ULD assistant should have one adapter, not {assistant_adapters}")
    with seeded_initialisation(seed, assistant.target):
        assistant.peft_model.add_adapter(
            ATTACK_ADAPTER, LoraConfig(target_modules=_decoder_linear_names(assistant.target, assistant.stack),
                                       **config))
    assistant.eval()
    # add_adapter marks every adapter trainable: only the attacker's may be.
    for name, param in assistant.named_parameters():
        param.requires_grad_(f".{ATTACK_ADAPTER}." in name)
    layers = [m for m in assistant.target.modules() if isinstance(m, BaseTunerLayer)]
    if not all(isinstance(getattr(m, "_active_adapter", None), (str, list)) for m in layers):
        raise ModelError("this PEFT version's LoRA layers lack the active-adapter switch the "
                         "attack relies on")
    target = _AdapterPass(assistant.target, layers, ATTACK_ADAPTER)
    helper = _AdapterPass(assistant, layers, assistant_adapters[0])
    attacked = LogitCombination(
        [CausalLM(target, lm.tokenizer, "target"), CausalLM(helper, lm.tokenizer, "assistant")],
        lm.combine, lm.tokenizer, lm.device, lm.name)
    return AttackableModel("uld", ATTACK_DESCRIPTIONS["uld"],
                           _CombinedScores(target, [helper], lm.combine), attacked)


# ---- modules ----------------------------------------------------------------------------------
class _EvalOnly(nn.Module):
    """Stays in eval mode whatever `train()` asks (see the module docstring)."""

    def train(self, mode: bool = True) -> _EvalOnly:
        super().train(False)
        return self


class _Frozen(_EvalOnly):
    """A plain PEFT model whose `train()` keeps every layer in eval mode."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, **inputs: torch.Tensor) -> CausalLMOutput:
        return self.model(**inputs)


class _AdapterPass(_EvalOnly):
    """Runs `module` with only `adapter` active in every LoRA layer of the shared model."""

    def __init__(self, module: nn.Module, layers: Sequence[BaseTunerLayer], adapter: str) -> None:
        super().__init__()
        self.module = module
        object.__setattr__(self, "layers", list(layers))  # already inside `module`
        self.adapter = adapter

    def forward(self, **inputs: object) -> CausalLMOutput:
        with _only_adapter(self.layers, self.adapter):
            return self.module(**inputs)


class _CombinedScores(_EvalOnly):
    """The combined model's scores: `trained` (with gradients) and `fixed` (without)."""

    def __init__(self, trained: nn.Module, fixed: Sequence[nn.Module],
                 combine: Callable[[Sequence[torch.Tensor]], torch.Tensor]) -> None:
        super().__init__()
        self.trained = trained
        self.fixed = nn.ModuleList(fixed)  # shared weights are listed once by `parameters()`
        self.combine = combine

    def forward(self, **inputs: torch.Tensor) -> CausalLMOutput:
        logits = self.trained(**inputs).logits
        with torch.no_grad():
            fixed = [module(**inputs).logits for module in self.fixed]
        return CausalLMOutput(logits=self.combine([logits, *fixed]))


# ---- helpers ----------------------------------------------------------------------------------
@contextmanager
def _only_adapter(layers: Sequence[BaseTunerLayer], adapter: str) -> Iterator[None]:
    # The flag PEFT's forward reads; `set_adapter` would also flip requires_grad.
    saved = [layer._active_adapter for layer in layers]
    for layer in layers:
        layer._active_adapter = [adapter]
    try:
        yield
    finally:
        for layer, value in zip(layers, saved):
            layer._active_adapter = value


def _peft_on(model: nn.Module, config: LoraConfig, seed: int) -> nn.Module:
    if any(isinstance(m, BaseTunerLayer) for m in model.modules()):
        raise ModelError("the model already carries adapters")
    model.requires_grad_(False)
    with seeded_initialisation(seed, model):
        peft_model = get_peft_model(model, config)
    peft_model.eval()
    return peft_model


def _decoder_linear_names(model: nn.Module, stack: DecoderStack) -> list[str]:
    """The decoder layers' linear projections (an adapted one by its wrapper's name; GPT-2's
    Conv1D included)."""
    names = set()
    for name, module in model.named_modules():
        parts = name.split(".")
        if (not isinstance(module, (nn.Linear, Conv1D)) or stack.layer_index(name) is None
                or any(part.startswith("lora_") for part in parts)):
            continue
        names.add(".".join(parts[:-1]) if parts[-1] == "base_layer" else name)
    if not names:
        raise ModelError(f"{type(model).__name__}: no linear layers in its decoder layers")
    return sorted(names)


def _plain_members(lm: LogitCombination) -> bool:
    models = [getattr(member, "model", None) for member in lm.members]
    return all(isinstance(member, CausalLM) for member in lm.members) and len(
        {id(m) for m in models}) == len(models)

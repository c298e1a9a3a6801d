"""ULD and offset runs as transformers models: `ULDForCausalLM.from_pretrained(run_dir)`.

The model's forward returns the combined next-token scores (ULD: the target's log-probabilities
minus alpha times the assistant's logits, relative-top filtered; offset: the target plus the
small models' difference) as `logits`, and keeps a KV cache, so `generate`, `pipeline` and
lm-evaluation-harness's `HFLM` take it like any causal LM. Nothing is copied: the target's
weights are loaded once, and the run's adapters (or small models) sit beside them.

Caches: where ULD takes its paired pass, one cache holds the target and assistant rows (see
`uldkit.uld.assistant`). Otherwise every member runs with a cache of its own; the cache that
`generate` hands in serves the first member and carries the others with it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    DynamicCache,
    GenerationConfig,
    GenerationMixin,
    PretrainedConfig,
    PreTrainedModel,
)
from transformers.modeling_outputs import CausalLMOutputWithPast

from uldkit.data.collate import position_ids_from_mask
from uldkit.errors import ModelError
from uldkit.models.cache_api import cache_argument, output_cache_argument
from uldkit.training.run_dir import read_manifest
from uldkit.uld.combination import LogitCombination
from uldkit.uld.logit_difference import LogitDifferenceModel
from uldkit.uld.method import ULD
from uldkit.uld.offset import Offset

KINDS = ("uld", "offset")


class ULDConfig(PretrainedConfig):
    """What a ULD (or offset) run is: its target, the target's fingerprint and the settings."""

    model_type = "uldkit"

    def __init__(
        self,
        kind: str = "uld",
        run: str | None = None,
        target: str | None = None,
        target_fingerprint: str | None = None,
        assistant_layers: int | None = None,
        alpha: float | None = None,
        tau: float | None = None,
        filter: str | None = None,
        scale: float | None = None,
        adapter_file: str | None = None,
        vocab_size: int | None = None,
        max_position_embeddings: int | None = None,
        **kwargs: Any,
    ) -> None:
        self.kind = kind
        self.run = run
        self.target = target
        self.target_fingerprint = target_fingerprint
        self.assistant_layers = assistant_layers
        self.alpha = alpha
        self.tau = tau
        self.filter = filter  # the relative-top filter (uldkit.uld.relative_top)
        self.scale = scale
        self.adapter_file = adapter_file
        self.vocab_size = vocab_size
        self.max_position_embeddings = max_position_embeddings
        self.target_config: PretrainedConfig | None = None  # set when a run is loaded
        super().__init__(**kwargs)

    def get_text_config(self, *args: Any, **kwargs: Any) -> PretrainedConfig:
        # generate() sizes its KV cache (layer count, sliding windows) from this: the
        # target's, since every cache the model keeps holds target layers.
        if getattr(self, "target_config", None) is not None:
            return self.target_config.get_text_config(*args, **kwargs)
        return super().get_text_config(*args, **kwargs)


class ULDForCausalLM(PreTrainedModel, GenerationMixin):
    """An unlearned model that keeps the target: ULD's logit difference, or offset unlearning."""

    config_class = ULDConfig
    base_model_prefix = "uldkit"
    main_input_name = "input_ids"
    _supports_cache_class = True

    def __init__(self, config: ULDConfig, combination: LogitCombination | None = None) -> None:
        super().__init__(config)
        if combination is None:
            raise ModelError("ULDForCausalLM is built by from_pretrained(run_dir), or from a "
                             "loaded ULD/offset model")
        self.combination = combination
        # The members' modules, registered so .parameters(), .to() and .device see them.
        self.members = nn.ModuleList([member.model for member in combination.members])
        paired = getattr(combination, "_paired", None)
        self.paired = paired.model if paired is not None else None
        paired_decoding = getattr(combination, "_paired_decoding", None)
        self.paired_decoding = paired_decoding.model if paired_decoding is not None else None
        self._generating = False  # generate() runs the combination's generation semantics
        target = _target_module(combination)
        self.generation_config = GenerationConfig.from_model_config(target.config) \
            if target.generation_config is None else target.generation_config

    @classmethod
    def from_combination(cls, combination: LogitCombination, run: str | os.PathLike,
                         manifest: dict[str, Any]) -> ULDForCausalLM:
        target = _target_module(combination)
        text = target.config.get_text_config()
        if isinstance(combination, LogitDifferenceModel):
            settings = {"assistant_layers": combination.assistant.num_layers,
                        "alpha": combination.alpha, "tau": combination.tau,
                        "filter": combination.filter,
                        "adapter_file": manifest.get("adapter_file")}
        else:
            settings = {"scale": manifest.get("scale")}
        config = ULDConfig(
            kind=manifest["kind"], run=str(run), target=manifest.get("target"),
            target_fingerprint=manifest.get("target_fingerprint"),
            vocab_size=getattr(text, "vocab_size", None),
            max_position_embeddings=getattr(text, "max_position_embeddings", None),
            **settings,
        )
        config.target_config = target.config
        model = cls(config, combination)
        model.eval()
        return model

    @classmethod
    def from_pretrained(  # type: ignore[override]
        cls, run_dir: str | os.PathLike, *, device: str | None = None, dtype: str | None = None,
        allow_pickle: bool = False, trust_remote_code: bool = False, **settings: Any,
    ) -> ULDForCausalLM:
        """Load a saved ULD or offset run: its target (checked against the recorded
        fingerprint) and its adapters or small models. `settings` override the run's
        inference settings (ULD: alpha, tau, filter, target; offset: scale, target)."""
        manifest = read_manifest(run_dir)
        if manifest is None or manifest["kind"] not in KINDS:
            found = "a plain model" if manifest is None else f"a {manifest['kind']} run"
            raise ModelError(f"'{run_dir}' is {found}, not a ULD or offset run; load it with "
                             "transformers' AutoModelForCausalLM or uldkit.load")
        method = ULD if manifest["kind"] == "uld" else Offset
        combination = method.load(Path(run_dir), manifest, device=device, dtype=dtype,
                                  allow_pickle=allow_pickle,
                                  trust_remote_code=trust_remote_code, **settings)
        assert isinstance(combination, LogitCombination)
        return cls.from_combination(combination, run_dir, manifest)

    def save_pretrained(self, *args: Any, **kwargs: Any) -> None:
        raise ModelError("a ULD model is its run directory (the target stays where it is); "
                         "copy the run directory instead of saving the model")

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        """transformers' generate; the forward passes it makes score as the model generates
        (ULD's reference filter excludes tokens outside it only when generating)."""
        self._generating = True
        try:
            return super().generate(*args, **kwargs)
        finally:
            self._generating = False

    def get_input_embeddings(self) -> nn.Module:
        return _target_module(self.combination).get_input_embeddings()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        past_key_values: DynamicCache | None = None,
        cache: DynamicCache | None = None,
        use_cache: bool | None = None,
        cache_position: torch.Tensor | None = None,
        logits_to_keep: int = 0,
        labels: torch.Tensor | None = None,
        **_: Any,
    ) -> CausalLMOutputWithPast:
        # transformers renamed `past_key_values` to `cache`; generate() uses the name the
        # installed release has.
        past_key_values = cache if cache is not None else past_key_values
        if attention_mask is None:  # generate() leaves it out when nothing is padded
            past = past_key_values.get_seq_length() if past_key_values is not None else 0
            attention_mask = input_ids.new_ones((input_ids.shape[0], past + input_ids.shape[1]))
        if position_ids is None:
            position_ids = position_ids_from_mask(attention_mask)[:, -input_ids.shape[1]:]
        if use_cache and past_key_values is None:
            past_key_values = DynamicCache()
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask,
                  "position_ids": position_ids, "use_cache": bool(use_cache)}
        paired = self.paired_decoding if self._generating else self.paired
        if paired is not None:
            scores = paired(**inputs, past_key_values=past_key_values).logits
        else:
            scores = self._each_member(inputs, past_key_values)
        if logits_to_keep:
            scores = scores[:, -logits_to_keep:]
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(
                scores[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100)
        return CausalLMOutputWithPast(loss=loss, logits=scores, **output_cache_argument(
            CausalLMOutputWithPast, past_key_values if use_cache else None))

    def _each_member(self, inputs: dict[str, Any], cache: DynamicCache | None) -> torch.Tensor:
        caches: list[DynamicCache | None] = [None] * len(self.members)
        if cache is not None:
            if not hasattr(cache, "uldkit_member_caches"):
                cache.uldkit_member_caches = [DynamicCache() for _ in self.members[1:]]
            caches = [cache, *cache.uldkit_member_caches]
        outputs = []
        for module, member_cache in zip(self.members, caches):
            outputs.append(module(**inputs, **cache_argument(module, member_cache)).logits)
        if self._generating:
            return self.combination.decoding_combine(outputs)
        return self.combination.combine(outputs)


def _target_module(combination: LogitCombination) -> PreTrainedModel:
    if isinstance(combination, LogitDifferenceModel):
        return combination.assistant.target
    return combination.members[0].model


AutoConfig.register(ULDConfig.model_type, ULDConfig, exist_ok=True)
AutoModelForCausalLM.register(ULDConfig, ULDForCausalLM, exist_ok=True)

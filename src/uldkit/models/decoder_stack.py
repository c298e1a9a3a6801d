"""Where a causal LM keeps its decoder layers, found without knowing the model's family.

Every decoder-only model in transformers holds its blocks in one `nn.ModuleList` whose length
is the config's layer count (`model.layers`, `transformer.h`, `gpt_neox.layers`,
`model.decoder.layers`, `transformer.blocks`, ...). `DecoderStack` finds that list and can
swap it for another sequence of modules while a forward pass runs, so the model's own code
(embeddings, masks, positions, final norm, LM head) runs around a shortened or wrapped stack.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

from uldkit.errors import ModelError

LAYER_COUNT_NAMES = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")
# Config lists with one entry per layer, cut with the stack.
PER_LAYER_LISTS = ("layer_types", "no_rope_layers")
_CAUSAL_LM_CLASSES = {name for value in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values()
                      for name in ((value,) if isinstance(value, str) else value)}


def layer_count(config: PretrainedConfig) -> int | None:
    """The number of decoder layers a config declares, under any of its usual names."""
    for name in LAYER_COUNT_NAMES:
        value = getattr(config, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def check_causal_lm(model: nn.Module) -> None:
    """Refuse, in one line naming its type, a model that is not a decoder-only causal LM."""
    kind = type(model).__name__
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", "unknown")
    causal = (kind in _CAUSAL_LM_CLASSES or kind.endswith(("ForCausalLM", "LMHeadModel")))
    if (not causal or getattr(config, "is_encoder_decoder", False)
            or not isinstance(model, PreTrainedModel) or model.get_output_embeddings() is None):
        raise ModelError(f"ULD needs a decoder-only causal language model; {kind} "
                         f"(model type '{model_type}') is not one")


@dataclass
class DecoderStack:
    """The decoder layer list of `model`: `parent.<attribute>`, at `path` inside `model`."""

    model: nn.Module
    parent: nn.Module
    attribute: str
    path: str

    @property
    def layers(self) -> nn.ModuleList:
        return self.parent._modules[self.attribute]  # type: ignore[return-value]

    def __len__(self) -> int:
        return len(self.layers)

    def layer_index(self, module_name: str) -> int | None:
        """The layer a submodule of `model` (by its dotted name) belongs to, if any."""
        prefix = self.path + "."
        if not module_name.startswith(prefix):
            return None
        head = module_name[len(prefix):].split(".", 1)[0]
        return int(head) if head.isdigit() else None

    @contextmanager
    def replaced(self, modules: Sequence[nn.Module]) -> Iterator[None]:
        """Run the model with `modules` as its layer list; the config's layer count and
        per-layer lists follow its length. Not thread-safe: the model itself is changed."""
        original = self.layers
        configs = _configs(self.model, self.parent)
        saved = [_cut_config(config, len(modules)) for config in configs]
        self.parent._modules[self.attribute] = nn.ModuleList(modules)
        try:
            yield
        finally:
            self.parent._modules[self.attribute] = original
            for config, values in zip(configs, saved):
                for name, value in reversed(values.items()):
                    setattr(config, name, value)

    @contextmanager
    def cut(self, count: int) -> Iterator[None]:
        """Run the model with its first `count` layers only."""
        with self.replaced(list(self.layers)[:count]):
            yield


def find_decoder_stack(model: nn.Module) -> DecoderStack:
    """The model's decoder layer list: the shallowest `ModuleList` of one module type whose
    length is the config's layer count."""
    count = layer_count(getattr(model, "config", PretrainedConfig()))
    candidates = [
        (name, module) for name, module in model.named_modules()
        if isinstance(module, nn.ModuleList) and len(module) > 0
        and (count is None or len(module) == count)
        and len({type(layer) for layer in module}) == 1
    ]
    if not candidates:
        raise ModelError(f"{type(model).__name__}: cannot find its decoder layers (no list of "
                         f"{count if count is not None else 'identical'} layers)")
    path, _ = min(candidates, key=lambda item: item[0].count("."))
    parent_path, _, attribute = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    return DecoderStack(model=model, parent=parent, attribute=attribute, path=path)


def _configs(model: nn.Module, parent: nn.Module) -> list[PretrainedConfig]:
    found: list[PretrainedConfig] = []
    for owner in (model, parent):
        config = getattr(owner, "config", None)
        if isinstance(config, PretrainedConfig) and all(config is not c for c in found):
            found.append(config)
    return found


def _cut_config(config: PretrainedConfig, count: int) -> dict[str, object]:
    """Set the config's layer count to `count` and cut its per-layer lists; the old values."""
    depth = layer_count(config)
    saved: dict[str, object] = {}
    if depth is None or depth == count:
        return saved
    for name in PER_LAYER_LISTS:
        value = getattr(config, name, None)
        if isinstance(value, (list, tuple)) and len(value) == depth:
            saved[name] = value
            setattr(config, name, type(value)(value[:count]))
    for name in LAYER_COUNT_NAMES:
        if getattr(config, name, None) == depth:
            saved[name] = depth
            setattr(config, name, count)
            break
    return saved

"""Offset unlearning (delta-unlearning): unlearn through a small model's logit offset.

The unlearned model's next-token scores are

    z(v) = z_target(v) + scale * (z_small_unlearned(v) - z_small_frozen(v))

where the small models share the target's tokenizer. As in the paper, training applies the
chosen unlearning loss (`loss`: grad_ascent, grad_diff, kl, npo, dpo, ...) to these combined
scores, and only the small model learns; the loss's reference model is the target itself
(the combination before training, when the offset is zero). The target is never changed,
and what is saved is the unlearned small model beside a manifest naming the target and the
frozen small model. Scoring and decoding run all three models, each with its own KV cache,
through `uldkit.uld.combination.LogitCombination`.

Defaults: `loss` grad_diff, `scale` 1; training as TOFU's (the paper's benchmark).
Other hyperparameters are passed to the chosen loss (e.g. beta for npo, lora=true to train
LoRA adapters of the small model).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from transformers.modeling_outputs import CausalLMOutput

from uldkit.errors import ConfigError, ModelError
from uldkit.io import atomic_write_json
from uldkit.methods.base import TrainingPlan, UnlearnContext, UnlearnData, UnlearningMethod
from uldkit.methods.editing import TOFU_TRAINING, WeightEditingMethod, frozen_copy
from uldkit.methods.hyperparameters import Hyperparameters, param
from uldkit.methods.registry import get_method, register
from uldkit.models.fingerprint import weight_fingerprint
from uldkit.models.lm import CausalLM, LanguageModel
from uldkit.models.loading import load_model, save_model
from uldkit.training.run_dir import SMALL_MODEL_DIR, RunDir
from uldkit.uld.combination import LogitCombination


@dataclass(frozen=True)
class OffsetHyperparameters(Hyperparameters):
    """Offset's own settings; every other key goes to the chosen loss's schema."""

    small_model: str = param(help="The path of a small model that shares the target's "
                             "tokenizer.")
    loss: str = param("grad_diff", "The unlearning loss trained through the combined scores "
                      "(a method on output scores: grad_ascent, grad_diff, kl, npo, dpo, ...).")
    scale: float = param(1.0, "Weight of the small models' logit offset.")


def offset_scores(
    target: torch.Tensor, unlearned: torch.Tensor, frozen: torch.Tensor, scale: float
) -> torch.Tensor:
    """target + scale * (unlearned - frozen), over the vocabulary the three share."""
    vocab = min(target.shape[-1], unlearned.shape[-1], frozen.shape[-1])
    offset = scale * (unlearned[..., :vocab].float() - frozen[..., :vocab].float())
    combined = target.float().clone()
    combined[..., :vocab] += offset
    return combined


def _combine(scale: float, members: Sequence[torch.Tensor]) -> torch.Tensor:
    target, unlearned, frozen = members
    return offset_scores(target, unlearned, frozen, scale)


class OffsetEnsemble(torch.nn.Module):
    """The combined model during training: only `small` has trainable weights."""

    def __init__(self, target: PreTrainedModel, small: torch.nn.Module,
                 small_frozen: PreTrainedModel, scale: float) -> None:
        super().__init__()
        self.target = target
        self.small = small
        self.small_frozen = small_frozen
        self.scale = scale

    def train(self, mode: bool = True) -> OffsetEnsemble:
        super().train(mode)
        self.target.eval()
        self.small_frozen.eval()
        return self

    def forward(self, **inputs: torch.Tensor) -> CausalLMOutput:
        with torch.no_grad():
            target = self.target(**inputs).logits
            frozen = self.small_frozen(**inputs).logits
        unlearned = self.small(**inputs).logits
        return CausalLMOutput(logits=offset_scores(target, unlearned, frozen, self.scale))


@register
class Offset(UnlearningMethod):
    name = "offset"
    summary = "Unlearn a small model through the target's logits; add its logit offset."
    paper = "Huang et al., 2024, Offset Unlearning for Large Language Models (arXiv 2404.11045)"
    edits_weights = False
    needs_reference = True
    needs_refusals = True  # so that a refusal-based loss (dpo, idk) can be chosen
    default_training: ClassVar[dict[str, Any]] = dict(TOFU_TRAINING)
    schema = OffsetHyperparameters
    schema_note = "Other keys go to the chosen loss: see `uldkit methods LOSS`."

    def __init__(self, params: Hyperparameters | None = None, /, **hyperparameters: Any) -> None:
        """`params` (or the keys of OffsetHyperparameters) are offset's own; the other
        keyword hyperparameters are checked against the loss's schema."""
        own = {f.name for f in fields(OffsetHyperparameters)}
        super().__init__(params, **{k: v for k, v in hyperparameters.items() if k in own})
        loss_cls = get_method(self.params.loss)
        if not (issubclass(loss_cls, WeightEditingMethod) and loss_cls.scores_logits):
            raise ConfigError(f"offset cannot train with '{self.params.loss}': choose a loss on "
                              "output scores (grad_ascent, grad_diff, kl, npo, simnpo, dpo, ...)")
        rest = {k: v for k, v in hyperparameters.items() if k not in own}
        self.loss = loss_cls(loss_cls.schema.parse(rest, self.name, also_known=own))
        self.given = self.given | frozenset(rest)

    @property
    def hyperparameters(self) -> dict[str, Any]:
        return {**self.params.to_dict(), **self.loss.hyperparameters}

    def plan(
        self, target: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, data: UnlearnData
    ) -> TrainingPlan:
        small, small_tokenizer = load_model(self.params.small_model,
                                            device=str(target.device),
                                            dtype=str(target.dtype).removeprefix("torch."))
        if small_tokenizer.get_vocab() != tokenizer.get_vocab():
            raise ConfigError(
                f"small model '{self.params.small_model}' does not share the "
                "target's tokenizer"
            )
        target.requires_grad_(False)
        target.eval()
        small_frozen = frozen_copy(small)
        ensemble = OffsetEnsemble(target, self.loss.trainable_model(small), small_frozen,
                                  self.params.scale)
        plan = self.loss.plan_with(ensemble, target, tokenizer, data)
        plan.extra.update(target_fingerprint=weight_fingerprint(target),
                          small_fingerprint=weight_fingerprint(small_frozen))
        return plan

    def save(
        self,
        plan: TrainingPlan,
        tokenizer: PreTrainedTokenizerBase,
        out_dir: Path,
        context: UnlearnContext,
    ) -> None:
        small = plan.model.small
        if hasattr(small, "merge_and_unload"):
            small = small.merge_and_unload()
        small.eval()
        run = RunDir(Path(out_dir))
        save_model(small, tokenizer, run.small_model)
        atomic_write_json(run.manifest, {
            "kind": "offset",
            "target": _absolute(context.target_path),
            "small_model": _absolute(self.params.small_model),
            "small_unlearned": SMALL_MODEL_DIR,
            "scale": self.params.scale,
            "loss": self.params.loss,
            "hyperparameters": self.hyperparameters,
            "target_fingerprint": plan.extra["target_fingerprint"],
            "small_fingerprint": plan.extra["small_fingerprint"],
            "seed": context.seed,
        })

    @classmethod
    def load(
        cls, path: Path, manifest: dict[str, Any], *, device: str | None = None,
        allow_pickle: bool = False, trust_remote_code: bool = False,
        scale: float | None = None, target: str | None = None, dtype: str | None = None,
        **settings: Any,
    ) -> LanguageModel:
        """Target + scale * (unlearned small - frozen small); `scale` and `target` override
        the manifest's."""
        if settings:
            raise ModelError(f"unknown offset setting(s) {', '.join(sorted(settings))}; "
                             "known: scale, target")
        path = Path(path)
        missing = [k for k in ("target", "small_model", "small_unlearned", "scale")
                   if k not in manifest]
        if missing:
            raise ModelError(f"{RunDir(path).manifest}: missing field '{missing[0]}'")
        options = dict(device=device, dtype=dtype, allow_pickle=allow_pickle,
                       trust_remote_code=trust_remote_code)
        target_path = target or manifest["target"]
        target_model, tokenizer = load_model(target_path, **options)
        frozen, _ = load_model(manifest["small_model"], **options)
        unlearned, _ = load_model(path / manifest["small_unlearned"], **options)
        _check_fingerprint(target_model, manifest.get("target_fingerprint"), target_path, path)
        _check_fingerprint(frozen, manifest.get("small_fingerprint"), manifest["small_model"],
                           path)
        scale = float(manifest["scale"] if scale is None else scale)
        return LogitCombination(
            members=[CausalLM(target_model, tokenizer, "target"),
                     CausalLM(unlearned, tokenizer, "small_unlearned"),
                     CausalLM(frozen, tokenizer, "small_frozen")],
            combine=partial(_combine, scale),
            tokenizer=tokenizer,
            device=next(target_model.parameters()).device,
            name=path.name,
        )


def _check_fingerprint(model: PreTrainedModel, expected: str | None, source: str,
                       artefact: Path) -> None:
    if expected is not None and weight_fingerprint(model) != expected:
        raise ModelError(f"'{source}' is not the model {artefact} was unlearned against "
                         "(its weights differ)")


def _absolute(location: str) -> str:
    path = Path(location)
    return str(path.resolve()) if path.exists() else location

"""Shared base of the methods that edit the target's own weights (GA, NPO, DPO, RMU, ...).

A subclass supplies only its loss, as the `Objective` protocol (`counts` and `losses`), and
the hyperparameters it takes. This base builds the trainable model (all weights, or LoRA
adapters), the frozen reference copy of the target, the data streams (forget, retain, and
refusal answers to the forget questions), and saves a plain model directory.
"""

from __future__ import annotations

import copy
import random
from pathlib import Path
from typing import Any, ClassVar

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from uldkit.data.collate import token_nll
from uldkit.data.documents import encode_document_chunks
from uldkit.data.formatting import IGNORE_INDEX, Encoded, encode_pairs, encode_qa
from uldkit.errors import ConfigError
from uldkit.io import atomic_write_json
from uldkit.methods.base import TrainingPlan, UnlearnContext, UnlearnData, UnlearningMethod
from uldkit.methods.hyperparameters import (
    ForgetWeighted,
    Hyperparameters,
    LoraHyperparameters,
    RetainWeighted,
)
from uldkit.models.loading import save_model
from uldkit.training.losses import answer_logits
from uldkit.training.run_dir import RunDir
from uldkit.training.trainer import Batch, LossTerm, StreamData, answer_token_count

TOFU_PAPER = "Maini et al., 2024, TOFU: A Task of Fictitious Unlearning for LLMs (arXiv 2401.06121)"
# TOFU (Maini et al., 2024; locuslab/tofu config/forget.yaml): lr 1e-5, 5 epochs, effective
# batch 32, weight decay 0.01, linear schedule warmed up over the first epoch.
TOFU_TRAINING: dict[str, Any] = dict(
    lr=1e-5, epochs=5, batch_size=8, grad_accum=4, weight_decay=0.01, warmup_ratio=0.2
)
# OpenUnlearning's TOFU experiments (configs/experiment/unlearn/tofu/default.yaml, trainer
# finetune.yaml): lr 1e-5, 10 epochs, batch 8 x 4 accumulation, weight decay 0.01, 1 warmup epoch.
OPEN_UNLEARNING_TRAINING: dict[str, Any] = dict(
    lr=1e-5, epochs=10, batch_size=8, grad_accum=4, weight_decay=0.01, warmup_ratio=0.1
)
RETAIN_LOSSES = (None, "nll", "kl")


class WeightEditingMethod(UnlearningMethod):
    """Unlearning by training the target itself; subclasses define the loss.

    Class attributes a subclass sets:
      `schema`: its hyperparameters (a `Hyperparameters` dataclass; a subclass of
      `LoraHyperparameters` lets the user train LoRA adapters instead of all weights);
      `retain_loss`: None, "nll" (retain next-token loss) or "kl" (KL(p_ref || p_theta) on
      retain answer tokens), weighted by the `retain_weight` hyperparameter (so its schema
      derives from `RetainWeighted`);
      `needs_reference`: keep a frozen copy of the target (built automatically for "kl");
      `needs_refusals`: add the "idk" stream, a refusal answer for every forget question,
      aligned row for row with the forget stream.
    """

    schema: ClassVar[type[Hyperparameters]] = ForgetWeighted
    retain_loss: ClassVar[str | None] = None
    scores_logits: ClassVar[bool] = True  # its loss reads only output scores (offset can use it)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.retain_loss not in RETAIN_LOSSES:
            raise TypeError(f"{cls.__name__}: unknown retain loss {cls.retain_loss!r}")
        if cls.retain_loss and not issubclass(cls.schema, RetainWeighted):
            raise TypeError(f"{cls.__name__} has a retain loss: its schema needs retain_weight "
                            "(derive it from RetainWeighted)")

    def __init__(self, params: Hyperparameters | None = None, /, **hyperparameters: Any) -> None:
        super().__init__(params, **hyperparameters)
        self.reference: torch.nn.Module | None = None

    @property
    def uses_retain(self) -> bool:
        return self.retain_loss is not None and self.params.retain_weight != 0

    @property
    def uses_reference(self) -> bool:
        return self.needs_reference or (self.uses_retain and self.retain_loss == "kl")

    # ---- the plan ---------------------------------------------------------------------
    def plan(
        self, target: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, data: UnlearnData
    ) -> TrainingPlan:
        reference = frozen_copy(target) if self.uses_reference else None
        return self.plan_with(self.trainable_model(target), reference, tokenizer, data)

    def plan_with(
        self,
        model: torch.nn.Module,
        reference: torch.nn.Module | None,
        tokenizer: PreTrainedTokenizerBase,
        data: UnlearnData,
    ) -> TrainingPlan:
        """Train `model` with this loss, `reference` giving the original scores (offset
        unlearning passes a target-plus-offset ensemble and the frozen target)."""
        self.reference = reference
        streams = self.streams(tokenizer, data)
        aligned = ("idk",) if "idk" in streams else ()
        return TrainingPlan(model, self, StreamData(streams, primary="forget", aligned=aligned))

    def trainable_model(self, target: PreTrainedModel) -> torch.nn.Module:
        hp = self.params
        if not (isinstance(hp, LoraHyperparameters) and hp.lora):
            for p in target.parameters():
                p.requires_grad_(True)
            return target
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(r=hp.lora_r, lora_alpha=hp.lora_alpha, lora_dropout=hp.lora_dropout,
                            target_modules="all-linear", task_type="CAUSAL_LM")
        return get_peft_model(target, config)

    def streams(
        self, tokenizer: PreTrainedTokenizerBase, data: UnlearnData
    ) -> dict[str, list[Encoded]]:
        streams = {"forget": forget_examples(tokenizer, data)}
        if self.uses_retain or self.needs_retain_stream():
            streams["retain"] = retain_examples(tokenizer, data)
            if not streams["retain"]:
                raise ConfigError(f"method '{self.name}' needs retain data; the retain side "
                                  "is empty")
        if self.needs_refusals:
            if data.forgets_documents:
                raise ConfigError(f"method '{self.name}' cannot unlearn passages: it needs "
                                  "a forget question to answer with a refusal")
            if not data.refusals:
                raise ConfigError(f"method '{self.name}' needs refusal answers; none were given")
            picker = random.Random(0)
            streams["idk"] = [
                encode_qa(tokenizer, pair.question, picker.choice(data.refusals), data.max_length)
                for pair in data.forget
            ]
        return streams

    def needs_retain_stream(self) -> bool:
        """A method whose own loss reads the retain stream (RMU) says so here."""
        return False

    # ---- loss pieces subclasses use ---------------------------------------------------------
    def counts(self, batch: Batch) -> dict[str, float]:
        counts = self.forget_counts(batch)
        if self.uses_retain:
            counts["retain"] = answer_token_count(batch["retain"])
        return counts

    def losses(self, model: torch.nn.Module, batch: Batch) -> dict[str, LossTerm]:
        terms = self.forget_losses(model, batch)
        if self.uses_retain:
            terms["retain"] = self.retain_term(model, batch["retain"])
        return terms

    def forget_counts(self, batch: Batch) -> dict[str, float]:
        raise NotImplementedError

    def forget_losses(self, model: torch.nn.Module, batch: Batch) -> dict[str, LossTerm]:
        raise NotImplementedError

    def retain_term(self, model: torch.nn.Module, stream: dict[str, torch.Tensor]) -> LossTerm:
        weight = self.params.retain_weight
        if self.retain_loss == "nll":
            nll, _ = token_nll(*answer_logits(model, stream))
            return LossTerm(nll.sum(), weight)
        logits, labels = answer_logits(model, stream)
        kl, _ = token_kl(self.reference_logits(stream), logits, labels)
        return LossTerm(kl.sum(), weight)

    @torch.no_grad()
    def reference_logits(self, stream: dict[str, torch.Tensor]) -> torch.Tensor:
        """The reference model's logits at the scored positions, laid out as `answer_logits`."""
        assert self.reference is not None, "this method was planned without a reference model"
        return answer_logits(self.reference, stream)[0]

    # ---- saving --------------------------------------------------------------------------
    def save(
        self,
        plan: TrainingPlan,
        tokenizer: PreTrainedTokenizerBase,
        out_dir: Path,
        context: UnlearnContext,
    ) -> None:
        model = plan.model
        if hasattr(model, "merge_and_unload"):
            model = model.merge_and_unload()
        model.eval()
        save_model(model, tokenizer, out_dir)
        atomic_write_json(RunDir(Path(out_dir)).manifest, {
            "kind": "plain",
            "method": self.name,
            "hyperparameters": self.hyperparameters,
            "target": context.target_path,
        })


def forget_examples(tokenizer: PreTrainedTokenizerBase, data: UnlearnData) -> list[Encoded]:
    """The forget side: the forget passages (every token scored) or the forget QA answers."""
    if data.forget_documents is not None:
        return encode_document_chunks(tokenizer, data.forget_documents, data.max_length)
    return encode_pairs(tokenizer, data.forget, data.max_length)


def retain_examples(tokenizer: PreTrainedTokenizerBase, data: UnlearnData) -> list[Encoded]:
    """The retain side: the retain QA answers, then the retain passages if any."""
    examples = encode_pairs(tokenizer, data.retain, data.max_length)
    if data.retain_documents is not None:
        examples += encode_document_chunks(tokenizer, data.retain_documents, data.max_length)
    return examples


def frozen_copy(model: PreTrainedModel) -> PreTrainedModel:
    """A deep copy that never trains: eval mode, no gradients."""
    reference = copy.deepcopy(model)
    reference.eval()
    for p in reference.parameters():
        p.requires_grad_(False)
    return reference


def sequence_logprob(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log p(answer | prompt) per sample: answer-token log-probabilities summed, [B]."""
    nll, _ = token_nll(logits, labels)
    return -nll.sum(-1)


def token_kl(
    ref_logits: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """KL(p_ref || p_theta) of the next-token distributions at answer positions.

    The direction of TOFU's and OpenUnlearning's `kl_div(log p_theta, log p_ref,
    log_target=True)`. Returns (kl [B, T-1], mask [B, T-1]), zero off the answer.
    """
    mask = labels[:, 1:] != IGNORE_INDEX
    ref_logp = torch.log_softmax(ref_logits[:, :-1].float(), dim=-1)
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    kl = (ref_logp.exp() * (ref_logp - logp)).sum(-1)
    return torch.where(mask, kl, torch.zeros_like(kl)), mask


def sample_count(stream: dict[str, torch.Tensor]) -> float:
    return float(stream["input_ids"].shape[0])

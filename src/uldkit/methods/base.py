"""What an unlearning method is: its loss, the data it needs, and what it saves.

A method turns a target model plus forget/retain data into a `TrainingPlan` (the module to
train, its objective and data streams), then saves the unlearned model once the shared
`Trainer` has run the plan. Weight-editing methods save a full model; ULD and offset save
an assistant next to a manifest naming the target.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from uldkit.data.types import Augmentation, DocumentDataset, QADataset
from uldkit.errors import ConfigError
from uldkit.methods.hyperparameters import Hyperparameters
from uldkit.models.lm import LanguageModel
from uldkit.training.trainer import Objective, StreamData


@dataclass
class UnlearnData:
    """What to forget and what to keep. With `forget_documents` (a document forget set, as in
    MUSE) the forget side is those passages, not the forget QA pairs; the retain side is the
    retain QA pairs plus `retain_documents`. A method that needs a question per forget item
    (refusals, ULD's augmentation) cannot take passages and says so."""

    forget: QADataset
    retain: QADataset
    augmentation: Augmentation | None = None
    refusals: list[str] = field(default_factory=list)  # "I don't know" answers (IdkPO/DPO)
    max_length: int = 256
    forget_documents: DocumentDataset | None = None
    retain_documents: DocumentDataset | None = None

    @property
    def forgets_documents(self) -> bool:
        return self.forget_documents is not None


@dataclass
class TrainingPlan:
    model: torch.nn.Module  # what the Trainer optimises (only its requires_grad parameters)
    objective: Objective
    data: StreamData
    extra: dict[str, Any] = field(default_factory=dict)  # method-specific, for `save`


@dataclass
class UnlearnContext:
    """Where the target came from, for manifests and run records."""

    target_path: str
    seed: int = 0


class UnlearningMethod(ABC):
    """A method: a name, its hyperparameter schema, its loss (through `plan`) and `save`.

    `method_cls(beta=0.2)` parses keyword values against `schema` (ConfigError naming the
    method on an unknown key, a wrong type or a value out of bounds); `method_cls(params)`
    takes a ready schema instance. `self.params` holds the resolved values.
    """

    name: ClassVar[str]
    summary: ClassVar[str]  # one line for `uldkit methods`
    paper: ClassVar[str]
    schema: ClassVar[type[Hyperparameters]] = Hyperparameters
    schema_note: ClassVar[str] = ""  # what `uldkit methods NAME` adds below the schema
    edits_weights: ClassVar[bool] = True
    needs_reference: ClassVar[bool] = False
    needs_augmentation: ClassVar[bool] = False
    needs_refusals: ClassVar[bool] = False
    # Training defaults a method's paper or reference code uses; the user can override.
    default_training: ClassVar[dict[str, Any]] = {}

    def __init__(self, params: Hyperparameters | None = None, /, **hyperparameters: Any) -> None:
        if params is None:
            self.params = self.schema.parse(hyperparameters, self.name)
            self.given = frozenset(hyperparameters)  # what the user set, not defaulted
            return
        if hyperparameters or type(params) is not self.schema:
            raise ConfigError(f"method '{self.name}' takes keyword hyperparameters or one "
                              f"{self.schema.__name__}, not {type(params).__name__}"
                              + (" and keywords" if hyperparameters else ""))
        self.params = params
        self.given = params.changed()

    @property
    def hyperparameters(self) -> dict[str, Any]:
        """The resolved hyperparameters, as run_config.json and manifests record them."""
        return self.params.to_dict()

    @abstractmethod
    def plan(
        self, target: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, data: UnlearnData
    ) -> TrainingPlan:
        """Build the trainable module, objective and data streams."""

    @abstractmethod
    def save(
        self,
        plan: TrainingPlan,
        tokenizer: PreTrainedTokenizerBase,
        out_dir: Path,
        context: UnlearnContext,
    ) -> None:
        """Write the unlearned model so `load_language_model(out_dir)` can load it."""

    @classmethod
    def load(
        cls, path: Path, manifest: dict[str, Any], *, device: str | None = None,
        allow_pickle: bool = False, trust_remote_code: bool = False, **settings: Any,
    ) -> LanguageModel:
        """Load what `save` wrote, when it is not a plain model directory (ULD, offset)."""
        raise NotImplementedError(f"{cls.name} saves plain model directories")

    def describe(self) -> dict[str, Any]:
        return {"method": self.name, "hyperparameters": self.hyperparameters}


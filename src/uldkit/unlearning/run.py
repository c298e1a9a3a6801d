"""One unlearning run: a method, ready data and a target in, an unlearned model out.

`run_unlearning` is the run step: it takes a method instance, `UnlearnData` (see
`uldkit.unlearning.data`) and the target in memory, trains and saves. `unlearn` is
`uldkit.unlearn` (and so `uldkit unlearn`): it checks the settings, resolves the data, loads
the target and runs, recording an `UnlearnConfig`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from uldkit.data.types import DocumentDataset
from uldkit.errors import ConfigError
from uldkit.io import atomic_write_json
from uldkit.methods.base import UnlearnContext, UnlearnData, UnlearningMethod
from uldkit.methods.hyperparameters import Hyperparameters
from uldkit.models.loading import load_model
from uldkit.training.run_start import check_out_dir, finish_run, open_run
from uldkit.training.schema import parse_settings
from uldkit.training.trainer import TrainConfig, Trainer
from uldkit.unlearning.catalog import get_method
from uldkit.unlearning.data import DataSpec, resolve_unlearn_data


@dataclass
class UnlearnConfig:
    method: str
    model: str  # the target model directory
    out: str
    data: str = "synthetic"
    forget: str = "forget10"
    retain: str | None = None  # default: the forget split's complement ("none" with documents)
    # A document forget set (MUSE-style): a path for `load_documents`, or for the synthetic
    # world "synthetic:<people split>" (e.g. synthetic:forget10). The forget side is then
    # these passages; the retain QA split is used only when `retain` names one.
    forget_documents: str | None = None
    retain_documents: str | None = None  # passages to keep, added to the retain side
    people: int = 40
    data_seed: int = 0
    max_length: int = 128
    refusals: str | None = None  # a file of refusal lines; default: TOFU's, else built-in
    # KEY=VALUE (checked against the method's schema), or an instance of that schema.
    hyperparameters: dict[str, Any] | Hyperparameters = field(default_factory=dict)
    # Only the training settings the user set; the rest come from the method's defaults.
    train_overrides: dict[str, Any] = field(default_factory=dict)
    device: str | None = None
    allow_pickle: bool = False
    trust_remote_code: bool = False

    def data_spec(self) -> DataSpec:
        return DataSpec(data=self.data, forget=self.forget, retain=self.retain,
                        forget_documents=self.forget_documents,
                        retain_documents=self.retain_documents, refusals=self.refusals,
                        people=self.people, data_seed=self.data_seed,
                        max_length=self.max_length)


@dataclass
class UnlearnResult:
    out: Path
    method: str
    steps: int
    train_seconds: float
    final_loss: float


def resolve_train_config(
    method: type[UnlearningMethod], overrides: dict[str, Any], seed: int | None = None
) -> TrainConfig:
    """The method's training defaults with `overrides` on top, checked against TrainConfig."""
    settings = {**method.default_training, **overrides}
    settings.setdefault("description", f"unlearning ({method.name})")
    if seed is not None:
        settings["seed"] = seed
    return parse_settings(TrainConfig, settings, noun="training setting")


def checked_settings(
    method: str, hyperparameters: Mapping[str, Any] | Hyperparameters,
    train_overrides: Mapping[str, Any],
) -> tuple[UnlearningMethod, TrainConfig]:
    """The method and training configuration these settings make; ConfigError naming the
    method and key when one is unknown, of the wrong type or out of bounds.
    `hyperparameters` is KEY=VALUE input or an instance of the method's schema."""
    method_cls = get_method(method)
    instance = (method_cls(hyperparameters) if isinstance(hyperparameters, Hyperparameters)
                else method_cls(**hyperparameters))
    return instance, resolve_train_config(method_cls, dict(train_overrides))


def load_unlearn_data(config: UnlearnConfig, method: type[UnlearningMethod]) -> UnlearnData:
    return resolve_unlearn_data(config.data_spec(), method)


def unlearn(config: UnlearnConfig, *, resume: bool = False, overwrite: bool = False,
            show_progress: bool = True, spec: DataSpec | None = None,
            target: PreTrainedModel | None = None,
            tokenizer: PreTrainedTokenizerBase | None = None) -> UnlearnResult:
    """Check the settings, resolve the data, load the target, run; `config` is what
    run_config.json records. `spec` and `target` (with its `tokenizer`) are what the user
    holds when it is not what `config` names: data or a model in memory (`uldkit.unlearn`)."""
    method, train_config = checked_settings(config.method, config.hyperparameters,
                                            config.train_overrides)
    train_config.show_progress = show_progress and train_config.show_progress
    # Inputs are read and checked before the output directory is touched: bad input leaves
    # no run directory behind (and --overwrite keeps the old run until the new one finished).
    check_out_dir(config.out, overwrite=overwrite, resume=resume)
    data = resolve_unlearn_data(spec or config.data_spec(), type(method))
    if target is None:
        target, loaded = load_model(config.model, device=config.device,
                                    allow_pickle=config.allow_pickle,
                                    trust_remote_code=config.trust_remote_code)
        tokenizer = tokenizer or loaded
    if tokenizer is None:
        raise ConfigError("unlearning a model in memory needs its tokenizer")
    return run_unlearning(method, data, target, tokenizer, config.out, target_path=config.model,
                          train=train_config, record=asdict(config), resume=resume,
                          overwrite=overwrite, cpu=config.device == "cpu")


def run_unlearning(
    method: UnlearningMethod,
    data: UnlearnData,
    target: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    out: str | os.PathLike,
    *,
    target_path: str,
    train: TrainConfig | None = None,
    record: dict[str, Any] | None = None,
    resume: bool = False,
    overwrite: bool = False,
    cpu: bool = False,
) -> UnlearnResult:
    """Train `method` on ready data from the in-memory target and save the unlearned model
    to `out`. `target_path` is where the target can be loaded again (ULD and offset record
    it in their manifest); `train` defaults to the method's training defaults; `record`
    (e.g. the command's settings) is saved in run_config.json beside the resolved ones."""
    train = train or resolve_train_config(type(method), {})
    out = check_out_dir(out, overwrite=overwrite, resume=resume)
    accelerator = Accelerator(cpu=cpu or not torch.cuda.is_available())
    plan = method.plan(target, tokenizer, data)
    # Refused here, before anything is written, when resuming with other settings.
    run = open_run(out, "unlearn", {
        **(record or {"method": method.name, "model": target_path}),
        "train": asdict(train), "method": method.describe(),
        "forget_examples": len(data.forget), "retain_examples": len(data.retain),
        "forget_passages": _count(data.forget_documents),
        "retain_passages": _count(data.retain_documents),
        "streams": {k: len(v) for k, v in plan.data.streams.items()},
    }, overwrite=overwrite, resume=resume, main_process=accelerator.is_main_process,
        wait_for_everyone=accelerator.wait_for_everyone,
        saved_as_now=lambda saved: _completed_hyperparameters(saved, type(method)))
    accelerator.wait_for_everyone()
    trainer = Trainer(plan.model, plan.objective, plan.data, train,
                      pad_token_id=tokenizer.pad_token_id, checkpoint_dir=run.checkpoints,
                      accelerator=accelerator)
    result = trainer.train(resume=resume)
    plan.model = accelerator.unwrap_model(trainer.model)
    if accelerator.is_main_process:
        method.save(plan, tokenizer, run.path, UnlearnContext(target_path, train.seed))
        atomic_write_json(run.summary("unlearn"), {
            "method": method.name,
            "steps": result.steps,
            "train_seconds": result.seconds,
            "final_loss": result.final_loss,
            "forget_split": data.forget.name,
            "hyperparameters": method.hyperparameters,
            "resumed_from_step": result.resumed_from,
        })
    accelerator.wait_for_everyone()
    finish_run(run, main_process=accelerator.is_main_process)
    accelerator.wait_for_everyone()
    return UnlearnResult(out, method.name, result.steps, result.seconds, result.final_loss)


def _completed_hyperparameters(saved: dict[str, Any],
                               method: type[UnlearningMethod]) -> dict[str, Any]:
    """A saved run configuration whose method hyperparameters lack keys (an older uldkit
    recorded only those the user gave) with them filled in from the method's defaults."""
    described = saved.get("method")
    if not (isinstance(described, dict) and described.get("method") == method.name
            and isinstance(described.get("hyperparameters"), dict)):
        return saved
    completed = method.schema.completed(described["hyperparameters"])
    return {**saved, "method": {**described, "hyperparameters": completed}}


def _count(documents: DocumentDataset | None) -> int | None:
    return None if documents is None else len(documents)

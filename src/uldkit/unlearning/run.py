"""Run any registered unlearning method on a target model: `uldkit unlearn`."""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator

from uldkit.data.refusals import DEFAULT_REFUSALS, load_refusals
from uldkit.data.sources import DataSource
from uldkit.data.types import DocumentDataset, QADataset
from uldkit.errors import ConfigError, DataError
from uldkit.io import atomic_write_json
from uldkit.methods.base import UnlearnContext, UnlearnData, UnlearningMethod
from uldkit.models.loading import load_model
from uldkit.training.run_start import check_out_dir, finish_run, open_run
from uldkit.training.trainer import TrainConfig, Trainer
from uldkit.unlearning.catalog import get_method


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
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    # Only the training settings the user set; the rest come from the method's defaults.
    train_overrides: dict[str, Any] = field(default_factory=dict)
    device: str | None = None
    allow_pickle: bool = False
    trust_remote_code: bool = False


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
    known = {f.name for f in fields(TrainConfig)}
    settings = {**method.default_training, **overrides}
    unknown = set(settings) - known
    if unknown:
        raise DataError(f"unknown training setting(s): {', '.join(sorted(unknown))}")
    settings.setdefault("description", f"unlearning ({method.name})")
    if seed is not None:
        settings["seed"] = seed
    return TrainConfig(**settings)


def load_unlearn_data(config: UnlearnConfig, method: type[UnlearningMethod]) -> UnlearnData:
    from uldkit.data.tofu import retain_split_for

    source = DataSource(config.data, people=config.people, seed=config.data_seed)
    forget = source.load(config.forget)
    if len(forget) == 0:
        raise DataError(f"the forget set '{config.forget}' is empty")
    forget_documents, retain_documents = _documents(config, source)
    if forget_documents is None and retain_documents is not None:
        raise ConfigError("retain_documents needs forget_documents (a document forget set)")
    if forget_documents is not None and method.needs_refusals:
        raise ConfigError(f"method '{method.name}' cannot unlearn passages: it answers each "
                          "forget question with a refusal, and passages have no question")
    if forget_documents is not None and config.retain in (None, "none"):
        retain_split = "none"
        retain = QADataset([], "none")
    else:
        retain_split = config.retain or retain_split_for(config.forget)
        retain = source.load(retain_split)
    overlap = forget.questions() & retain.questions()
    if overlap:
        warnings.warn(
            f"{len(overlap)} of {len(forget)} forget questions also appear in the retain set "
            f"'{retain_split}'; they are removed from the retain side",
            stacklevel=2,
        )
        retain = QADataset([p for p in retain if p.question not in overlap], retain.name)
    augmentation = None
    if method.needs_augmentation and forget_documents is None:
        augmentation = source.augmentation(config.forget)
    return UnlearnData(
        forget=forget,
        retain=retain,
        augmentation=augmentation,
        refusals=_refusals(config, source) if method.needs_refusals else [],
        max_length=config.max_length,
        forget_documents=forget_documents,
        retain_documents=retain_documents,
    )


def _documents(
    config: UnlearnConfig, source: DataSource
) -> tuple[DocumentDataset | None, DocumentDataset | None]:
    from uldkit.data.documents import resolve_documents
    from uldkit.data.synthetic import generate_world

    world = generate_world(config.people, config.data_seed) if source.is_synthetic else None
    loaded = []
    for name, spec in (("forget_documents", config.forget_documents),
                       ("retain_documents", config.retain_documents)):
        documents = None if spec is None else resolve_documents(spec, world)
        if documents is not None and len(documents) == 0:
            raise DataError(f"{name} '{spec}' holds no passages")
        loaded.append(documents)
    return loaded[0], loaded[1]


def _refusals(config: UnlearnConfig, source: DataSource) -> list[str]:
    if config.refusals:
        return load_refusals(config.refusals)
    if not source.is_synthetic and (Path(source.location) / "idontknow.jsonl").exists():
        return load_refusals(Path(source.location) / "idontknow.jsonl")
    return list(DEFAULT_REFUSALS)


def unlearn(config: UnlearnConfig, *, resume: bool = False, overwrite: bool = False,
            show_progress: bool = True) -> UnlearnResult:
    method_cls = get_method(config.method)
    method = method_cls(**config.hyperparameters)
    train_config = resolve_train_config(method_cls, config.train_overrides)
    train_config.show_progress = show_progress and train_config.show_progress
    # Inputs are read and checked before the output directory is touched: bad input leaves
    # no run directory behind (and --overwrite keeps the old run until the new one finished).
    out = check_out_dir(config.out, overwrite=overwrite, resume=resume)
    data = load_unlearn_data(config, method_cls)
    target, tokenizer = load_model(config.model, device=config.device,
                                   allow_pickle=config.allow_pickle,
                                   trust_remote_code=config.trust_remote_code)
    accelerator = Accelerator(cpu=not torch.cuda.is_available() or config.device == "cpu")
    plan = method.plan(target, tokenizer, data)
    # Refused here, before anything is written, when resuming with other settings.
    run = open_run(out, "unlearn", {
        **asdict(config), "train": asdict(train_config), "method": method.describe(),
        "forget_examples": len(data.forget), "retain_examples": len(data.retain),
        "forget_passages": _count(data.forget_documents),
        "retain_passages": _count(data.retain_documents),
        "streams": {k: len(v) for k, v in plan.data.streams.items()},
    }, overwrite=overwrite, resume=resume, main_process=accelerator.is_main_process)
    accelerator.wait_for_everyone()
    trainer = Trainer(plan.model, plan.objective, plan.data, train_config,
                      pad_token_id=tokenizer.pad_token_id, checkpoint_dir=run.checkpoints,
                      accelerator=accelerator)
    result = trainer.train(resume=resume)
    plan.model = accelerator.unwrap_model(trainer.model)
    if accelerator.is_main_process:
        method.save(plan, tokenizer, run.path, UnlearnContext(config.model, train_config.seed))
        atomic_write_json(run.summary("unlearn"), {
            "method": config.method,
            "steps": result.steps,
            "train_seconds": result.seconds,
            "final_loss": result.final_loss,
            "forget_split": config.forget,
            "hyperparameters": method.hyperparameters,
            "resumed_from_step": result.resumed_from,
        })
    accelerator.wait_for_everyone()
    finish_run(run, main_process=accelerator.is_main_process)
    accelerator.wait_for_everyone()
    return UnlearnResult(out, config.method, result.steps, result.seconds, result.final_loss)


def _count(documents: DocumentDataset | None) -> int | None:
    return None if documents is None else len(documents)

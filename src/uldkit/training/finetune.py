"""Fine-tune the target (all data) or the retain model (retain data only)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator

from uldkit.data.documents import document_texts, encode_document_chunks, resolve_documents
from uldkit.data.formatting import encode_pairs
from uldkit.data.sources import DataSource
from uldkit.data.synthetic import generate_world
from uldkit.data.types import Document
from uldkit.errors import DataError
from uldkit.io import atomic_write_json
from uldkit.models.lm import CausalLM
from uldkit.models.loading import load_model, load_tokenizer, save_model
from uldkit.models.scoring import mean_answer_probability
from uldkit.models.tiny import build_tiny_llama, check_size
from uldkit.models.tokenizer import train_bpe_tokenizer
from uldkit.training.losses import NextTokenObjective
from uldkit.training.run_dir import RunDir
from uldkit.training.run_start import check_out_dir, start_run
from uldkit.training.trainer import StreamData, TrainConfig, Trainer


@dataclass
class LoraSettings:
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05


@dataclass
class FinetuneConfig:
    out: str
    data: str = "synthetic"
    splits: list[str] = field(default_factory=lambda: ["full"])
    include_general: bool = True  # the synthetic world's stand-in for pre-training knowledge
    base_model: str | None = None  # a local pretrained model; None builds a tiny one
    size: str = "tiny"
    vocab_size: int = 1024
    lora: LoraSettings | None = None
    max_length: int = 128
    people: int = 40
    data_seed: int = 0
    holdout_people: int = 0  # synthetic: held-out people, in the tokenizer, never trained on
    # passages trained on too: a path (see data.documents.load_documents),
    # "synthetic:biographies" or "synthetic:<people split>" (e.g. synthetic:retain90)
    documents: str | None = None
    device: str | None = None
    allow_pickle: bool = False
    trust_remote_code: bool = False
    train: TrainConfig = field(default_factory=TrainConfig)


@dataclass
class FinetuneResult:
    out: Path
    steps: int
    train_seconds: float
    final_loss: float
    train_answer_prob: float
    examples: int


def finetune(
    config: FinetuneConfig,
    *,
    resume: bool = False,
    overwrite: bool = False,
    on_step: Callable[[int, float], None] | None = None,
) -> FinetuneResult:
    accelerator = Accelerator(cpu=config.device == "cpu" or not torch.cuda.is_available())
    out = check_out_dir(config.out, overwrite=overwrite, resume=resume)
    # Everything the user gave is read and checked before the output directory is touched:
    # bad input leaves no run directory behind (and --overwrite keeps the old run).
    source = DataSource(config.data, people=config.people, seed=config.data_seed,
                        holdout=config.holdout_people)
    splits = list(config.splits)
    if config.include_general and "general" not in splits and source.has_split("general"):
        splits.append("general")
    data = source.load_many(splits)
    if len(data) == 0:
        raise DataError(f"the training data ({', '.join(splits)}) is empty")
    documents = _training_documents(config, source)
    base = tokenizer_texts = None
    if config.base_model:
        base = load_model(config.base_model, device="cpu", allow_pickle=config.allow_pickle,
                          trust_remote_code=config.trust_remote_code)
    else:
        check_size(config.size)
        tokenizer_texts = list(source.texts())
        known = set(tokenizer_texts)
        tokenizer_texts += [t for t in document_texts(documents) if t not in known]

    model, tokenizer = base or (None, _tokenizer(config, tokenizer_texts, RunDir(out), resume))
    encoded = encode_pairs(tokenizer, data, config.max_length)
    encoded += encode_document_chunks(tokenizer, documents, config.max_length)
    run_config = {**asdict(config), "resolved_splits": splits, "examples": len(encoded)}
    with start_run(out, "finetune", run_config, overwrite=overwrite, resume=resume,
                   main_process=accelerator.is_main_process,
                   wait_for_everyone=accelerator.wait_for_everyone) as run:
        if model is None:
            if accelerator.is_main_process and not run.tokenizer.exists():
                tokenizer.save_pretrained(run.tokenizer)
            model = build_tiny_llama(tokenizer, config.size, seed=config.train.seed)
        accelerator.wait_for_everyone()
        if config.lora is not None:
            model = _with_lora(model, config.lora)
        model.to(accelerator.device)
        trainer = Trainer(
            model,
            NextTokenObjective("train"),
            StreamData({"train": encoded}, primary="train"),
            config.train,
            pad_token_id=tokenizer.pad_token_id,
            checkpoint_dir=run.checkpoints,
            accelerator=accelerator,
            on_step=on_step,
        )
        result = trainer.train(resume=resume)

        final = accelerator.unwrap_model(trainer.model)
        if config.lora is not None:
            final = final.merge_and_unload()
        final.eval()
        prob = mean_answer_probability(
            CausalLM(final, tokenizer), [p.question for p in data], [p.answer for p in data]
        )
        if accelerator.is_main_process:
            save_model(final, tokenizer, run.path)
            atomic_write_json(run.summary("train"), {
                "steps": result.steps,
                "train_seconds": result.seconds,
                "final_loss": result.final_loss,
                "train_answer_prob": prob,
                "examples": len(encoded),
                "splits": splits,
                "resumed_from_step": result.resumed_from,
                "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
            })
        accelerator.wait_for_everyone()
    accelerator.wait_for_everyone()
    return FinetuneResult(out, result.steps, result.seconds, result.final_loss, prob,
                          len(encoded))


def _training_documents(config: FinetuneConfig, source: DataSource) -> list[Document]:
    if config.documents is None:
        return []
    world = None
    if source.is_synthetic:
        world = generate_world(config.people, config.data_seed, config.holdout_people)
    return list(resolve_documents(config.documents, world))


def _tokenizer(config: FinetuneConfig, texts: Sequence[str], out: RunDir, resume: bool):
    """For a tiny model built from scratch: a tokenizer trained on `texts`, or the one a
    resumed run trained before."""
    if resume and (out.tokenizer / "tokenizer.json").exists():
        return load_tokenizer(out.tokenizer)
    return train_bpe_tokenizer(texts, vocab_size=config.vocab_size)


def _with_lora(model, settings: LoraSettings):
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                      target_modules="all-linear", task_type="CAUSAL_LM")
    return get_peft_model(model, lora)

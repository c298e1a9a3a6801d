"""`uldkit finetune`: train the target (all data) or the retain model (retain data only)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from uldkit.cli import options
from uldkit.cli.app import app


@app.command("finetune")
def finetune_command(
    out: Path = typer.Option(..., "--out", help="Directory for the model and run records."),
    split: list[str] = typer.Option(
        ["full"], "--split", help="Split(s) to train on: 'full' for the target, 'retain90' "
        "(etc.) for the retain model. Repeat to combine."),
    data: str = options.DATA,
    base_model: str = typer.Option(
        None, "--base-model", help="Start from this pretrained model (local dir or hub id); "
        "default: a tiny Llama built from scratch with a tokenizer trained on the data."),
    size: str = typer.Option("tiny", "--size", help="From-scratch model size: tiny, small, base."),
    general: bool = typer.Option(
        True, "--general/--no-general",
        help="Also train on the data's general-knowledge split when it has one."),
    lora: bool = typer.Option(False, "--lora", help="Train LoRA adapters, merged at the end."),
    epochs: int = options.training_option("epochs", 30, "--epochs"),
    lr: float = options.training_option("lr", 3e-3, "--lr"),
    batch_size: int = options.training_option("batch_size", 16, "--batch-size"),
    grad_accum: int = options.training_option("grad_accum", 1, "--grad-accum"),
    max_length: int = typer.Option(128, "--max-length", min=8),
    vocab_size: int = typer.Option(1024, "--vocab-size", min=300,
                                   help="From-scratch tokenizer's vocabulary size."),
    checkpoint_every: int = options.training_option("checkpoint_every", 0, "--checkpoint-every"),
    people: int = options.PEOPLE,
    data_seed: int = options.DATA_SEED,
    seed: int = options.SEED,
    resume: bool = options.RESUME,
    overwrite: bool = options.OVERWRITE,
    device: str = options.DEVICE,
    allow_pickle: bool = options.ALLOW_PICKLE,
    trust_remote_code: bool = options.TRUST_REMOTE_CODE,
) -> None:
    """Fine-tune a model on QA data; saves safetensors, tokenizer and the run's record."""
    from accelerate import PartialState

    from uldkit.training.finetune import FinetuneConfig, LoraSettings, finetune
    from uldkit.training.trainer import TrainConfig

    config = FinetuneConfig(
        out=str(out), data=data, splits=split, include_general=general, base_model=base_model,
        size=size, vocab_size=vocab_size, lora=LoraSettings() if lora else None, max_length=max_length, people=people,
        data_seed=data_seed, device=device, allow_pickle=allow_pickle,
        trust_remote_code=trust_remote_code,
        train=TrainConfig(epochs=epochs, lr=lr, batch_size=batch_size, grad_accum=grad_accum,
                          warmup_ratio=0.05, seed=seed, checkpoint_every=checkpoint_every,
                          description=f"fine-tuning {out.name}"),
    )
    result = finetune(config, resume=resume, overwrite=overwrite)
    if not PartialState().is_main_process:
        return
    Console().print(
        f"[bold green]done[/] {result.out}: {result.examples} examples, {result.steps} steps in "
        f"{result.train_seconds:.1f}s, final loss {result.final_loss:.4f}, "
        f"mean answer probability on the training data {result.train_answer_prob:.3f}"
    , soft_wrap=True)

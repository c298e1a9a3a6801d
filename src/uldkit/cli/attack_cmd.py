"""`uldkit attack ...`: attacks that try to bring forgotten knowledge back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from uldkit.cli import options
from uldkit.cli.app import app

attack_app = typer.Typer(
    help="Attack an unlearned model: does what it forgot come back?", no_args_is_help=True
)
app.add_typer(attack_app, name="attack")


@attack_app.command("relearn")
def relearn_command(
    model: Path = options.ATTACKED_MODEL,
    out: Path = typer.Option(..., "--out", help="Directory for relearn.json and the "
                             "per-sample rows."),
    data: str = options.DATA,
    forget: str = options.ATTACK_FORGET,
    people: int = options.PEOPLE,
    data_seed: int = options.DATA_SEED,
    fraction: float = typer.Option(0.1, "--fraction", help="Share of the forget pairs the "
                                   "attacker fine-tunes on; the rest is held out."),
    steps: int = typer.Option(20, "--steps", min=1, help="Optimizer steps of the attack."),
    lr: float = typer.Option(1e-3, "--lr", help="Learning rate of the attacker's LoRA."),
    lora_rank: int = typer.Option(8, "--lora-rank", min=1, help="Rank of the attacker's LoRA."),
    batch_size: int = typer.Option(4, "--batch-size", min=1),
    seed: int = typer.Option(0, "--seed", help="Seed of the split, the LoRA and the data order."),
    original: Path | None = options.ATTACK_ORIGINAL,
    max_new_tokens: int | None = options.ATTACK_MAX_NEW_TOKENS,
    overwrite: bool = options.OVERWRITE,
    device: str = options.DEVICE,
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Fine-tune part of the forget set back in; measure how much of the rest returns."""
    # Imported here: torch, transformers and PEFT would slow every other command's start.
    from uldkit.attacks.relearn import RelearnConfig, relearn_attack
    from uldkit.training.run_dir import RunDir

    summary = relearn_attack(RelearnConfig(
        model=str(model), out=str(out), data=data, forget=forget, people=people,
        data_seed=data_seed, fraction=fraction, steps=steps, lr=lr, lora_rank=lora_rank,
        batch_size=batch_size, seed=seed, original=None if original is None else str(original),
        device=device, max_new_tokens=max_new_tokens,
    ), overwrite=overwrite, show_progress=not quiet)
    console = Console()
    console.print(_table(summary))
    console.print(f"attack: {summary['attack']} ({summary['kind']} model), "
                  f"{summary['steps']} steps on {summary['trained_on']} forget pairs; "
                  f"scores above are of the {summary['held_out']} held out", highlight=False, soft_wrap=True)
    console.print(f"results: {RunDir(out).summary('relearn')}", highlight=False, soft_wrap=True)


def _table(summary: dict[str, Any]) -> Table:
    table = Table(title="Relearning attack")
    table.add_column("")
    for column in ("Prob.", "ROUGE"):
        table.add_column(column, justify="right")
    rows = [("before", summary["before"]), ("after", summary["after"]),
            ("original", summary["original"]), ("recovered", summary["recovered"])]
    for label, values in rows:
        table.add_row(label, *(_cell(None if values is None else values[m])
                               for m in ("prob", "rouge")))
    return table


def _cell(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"

"""`uldkit attack quantize`: do 4- or 8-bit weights bring forgotten answers back?"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from uldkit.cli import options
from uldkit.cli.attack_cmd import attack_app


@attack_app.command("quantize")
def quantize_command(
    model: Path = options.ATTACKED_MODEL,
    out: Path = typer.Option(..., "--out", help="Directory for quantize.json and the "
                             "per-sample rows."),
    bits: int = typer.Option(..., "--bits", help="Weight bits: 4 or 8 (optimum-quanto "
                             "qint4 / qint8; needs pip install 'uldkit\\[quantize]')."),
    data: str = options.DATA,
    forget: str = options.ATTACK_FORGET,
    people: int = options.PEOPLE,
    data_seed: int = options.DATA_SEED,
    original: Path | None = options.ATTACK_ORIGINAL,
    max_new_tokens: int | None = options.ATTACK_MAX_NEW_TOKENS,
    overwrite: bool = options.OVERWRITE,
    device: str = options.DEVICE,
) -> None:
    """Quantise the unlearned model's weights; measure how much of the forget set returns."""
    # Imported here: torch, transformers and optimum-quanto would slow every other command.
    from uldkit.attacks.quantize import QuantizeConfig, quantize_attack
    from uldkit.training.run_dir import RunDir

    summary = quantize_attack(QuantizeConfig(
        model=str(model), out=str(out), bits=bits, data=data, forget=forget, people=people,
        data_seed=data_seed, original=None if original is None else str(original),
        device=device, max_new_tokens=max_new_tokens,
    ), overwrite=overwrite)
    console = Console()
    console.print(_table(summary))
    quantised = summary["quantised"]
    console.print(f"attack: {summary['attack']} on {quantised['linear_layers']} linear layers "
                  f"of the {summary['kind']} model; scores above are of all "
                  f"{summary['pairs']} forget pairs", highlight=False, soft_wrap=True)
    console.print(f"results: {RunDir(out).summary('quantize')}", highlight=False,
                  soft_wrap=True)


def _table(summary: dict[str, Any]) -> Table:
    table = Table(title=f"Quantisation attack ({summary['bits']}-bit weights)")
    table.add_column("")
    for column in ("Prob.", "ROUGE"):
        table.add_column(column, justify="right")
    rows = [("before", summary["before"]), ("after", summary["after"]),
            ("original", summary["original"]), ("recovered", summary["recovered"])]
    for label, values in rows:
        table.add_row(label, *("n/a" if values is None or values[m] is None
                               else f"{values[m]:.4f}" for m in ("prob", "rouge")))
    return table

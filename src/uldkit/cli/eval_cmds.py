"""`uldkit eval ...`: evaluate models and aggregate evaluation logs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

from uldkit.cli.app import app
from uldkit.eval.tofu_log import FORGET_SET, load_tofu_log

if TYPE_CHECKING:
    from uldkit.eval.tofu_metrics import TofuSummary

eval_app = typer.Typer(
    help="Evaluate models and aggregate evaluation logs.", no_args_is_help=True
)
app.add_typer(eval_app, name="eval")


@eval_app.command("aggregate")
def aggregate(
    log: Path = typer.Argument(
        ..., help="TOFU log: eval_log_aggregated.json, or a directory holding it or the "
        "four per-set eval_*.json files."
    ),
    retain_logs: Path | None = typer.Option(
        None, "--retain-logs", help="The retain model's TOFU log, for forget quality."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Compute TOFU model utility, forget quality and their components from a log."""
    from uldkit.eval.tofu_metrics import aggregate_tofu

    model_log = load_tofu_log(log)
    retain_log = None if retain_logs is None else load_tofu_log(retain_logs, (FORGET_SET,))
    summary = aggregate_tofu(model_log, retain_log)
    if as_json:
        typer.echo(json.dumps(summary.to_dict()))
        return
    console = Console()
    console.print(f"TOFU log: {log}", highlight=False, soft_wrap=True)
    console.print(_components_table(summary))
    console.print(f"Model Utility   {summary.model_utility:.4f}", soft_wrap=True)
    if summary.forget_quality is None:
        console.print("Forget Quality  n/a (pass --retain-logs with the retain model's log)", soft_wrap=True)
    else:
        console.print(
            f"Forget Quality  {summary.forget_quality:.3e}"
            f"  (KS statistic {summary.ks_statistic:.4f})"
        , soft_wrap=True)


def _components_table(summary: TofuSummary) -> Table:
    from uldkit.eval.tofu_metrics import SET_NAMES

    figures = summary.to_dict()
    table = Table(title="TOFU components")
    table.add_column("set")
    for metric in ("Prob.", "ROUGE", "Truth Ratio"):
        table.add_column(metric, justify="right")
    for name in SET_NAMES.values():
        cells = (figures[f"{name}_{metric}"] for metric in ("prob", "rouge", "truth_ratio"))
        table.add_row(name.replace("_", " "), *(f"{value:.4f}" for value in cells))
    return table

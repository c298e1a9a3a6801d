"""`uldkit eval ...`: evaluate models and aggregate evaluation logs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

from uldkit.cli.app import app
from uldkit.errors import ConfigError

if TYPE_CHECKING:
    from uldkit.eval.tofu_metrics import TofuSummary

eval_app = typer.Typer(
    help="Evaluate models and aggregate evaluation logs.", no_args_is_help=True
)
app.add_typer(eval_app, name="eval")


@eval_app.command("aggregate")
def aggregate(
    log: Path = typer.Argument(
        ..., help="TOFU log: eval_log_aggregated.json or OpenUnlearning's TOFU_EVAL.json "
        "(told apart by content), or a directory holding one of them or the four per-set "
        "eval_*.json files."
    ),
    retain_logs: Path | None = typer.Option(
        None, "--retain-logs", help="The retain model's TOFU log (either format), for "
        "forget quality."
    ),
    formulas: str = typer.Option(
        "auto", "--formulas", help="Aggregation formulas: tofu (the TOFU authors'), "
        "openunlearning (with its 1e-10 guards), or auto: those of the log's format."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Compute TOFU model utility, forget quality and their components from a log."""
    from uldkit.eval.log_formats import read_tofu_log
    from uldkit.eval.tofu_log import FORGET_SET
    from uldkit.eval.tofu_metrics import FORMULAS, aggregate_tofu

    if formulas not in ("auto", *FORMULAS):
        raise ConfigError(f"--formulas must be auto, {' or '.join(FORMULAS)}, not {formulas!r}")
    model_log, log_format = read_tofu_log(log)
    retain_log = None if retain_logs is None else read_tofu_log(retain_logs, (FORGET_SET,))[0]
    summary = aggregate_tofu(model_log, retain_log,
                             formulas=log_format if formulas == "auto" else formulas)
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


@eval_app.command("convert")
def convert(
    log: Path = typer.Argument(..., help="TOFU log in either format (file or directory)."),
    to: str = typer.Option(..., "--to", help="openunlearning (TOFU_EVAL.json + "
                           "TOFU_SUMMARY.json) or tofu (eval_log_aggregated.json)."),
    out: Path = typer.Option(..., "--out", help="Directory to write into."),
    retain_logs: Path | None = typer.Option(
        None, "--retain-logs", help="The retain model's log: fills in forget quality."),
) -> None:
    """Convert a TOFU log between uldkit's layout and OpenUnlearning's."""
    from uldkit.eval.log_formats import read_tofu_log
    from uldkit.eval.openunlearning_log import save_openunlearning
    from uldkit.eval.tofu_log import AGGREGATED_FILE, FORGET_SET, save_tofu_log

    if to not in ("openunlearning", "tofu"):
        raise ConfigError(f"--to must be openunlearning or tofu, not {to!r}")
    model_log, _ = read_tofu_log(log)
    if to == "tofu":
        save_tofu_log(model_log, out / AGGREGATED_FILE)
        typer.echo(f"wrote {out / AGGREGATED_FILE}")
        return
    retain_log = None if retain_logs is None else read_tofu_log(retain_logs, (FORGET_SET,))[0]
    written = save_openunlearning(model_log, out, retain_log)
    typer.echo(f"wrote {written[0]} and {written[1]}")

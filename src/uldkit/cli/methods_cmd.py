"""`uldkit methods [METHOD]`: list the unlearning methods, or one method's hyperparameters."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.table import Table

from uldkit.cli.app import app

if TYPE_CHECKING:
    from uldkit.methods.base import UnlearningMethod


def method_info(cls: type[UnlearningMethod]) -> dict[str, Any]:
    return {
        "name": cls.name,
        "kind": "edits weights" if cls.edits_weights else "adds an assistant",
        "summary": cls.summary,
        "paper": cls.paper,
        "needs_reference": cls.needs_reference,
        "needs_augmentation": cls.needs_augmentation,
        "needs_refusals": cls.needs_refusals,
        "hyperparameters": cls.schema.defaults(),
        "parameters": [setting.describe() for setting in cls.schema.settings()],
        "parameters_note": cls.schema_note,
        "default_training": dict(cls.default_training),
    }


@app.command("methods")
def methods(
    method: str = typer.Argument(None, help="Show this method's hyperparameters (--param "
                                 "KEY=VALUE of `uldkit unlearn`) and training defaults."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """List the unlearning methods `uldkit unlearn --method` accepts, or one method's
    hyperparameters with their defaults, bounds and help."""
    from uldkit.unlearning.catalog import all_methods, get_method

    if method is not None:
        info = method_info(get_method(method))
        if as_json:
            typer.echo(json.dumps(info, indent=2))
        else:
            _print_method(info)
        return
    infos = [method_info(cls) for cls in all_methods().values()]
    if as_json:
        typer.echo(json.dumps(infos, indent=2))
        return
    table = Table(title="Unlearning methods (`uldkit methods METHOD` for its hyperparameters)")
    for column in ("method", "kind", "summary", "paper"):
        table.add_column(column, overflow="fold")
    for info in infos:
        table.add_row(info["name"], info["kind"], info["summary"], info["paper"])
    Console().print(table)


def _print_method(info: dict[str, Any]) -> None:
    console = Console()
    console.print(f"[bold]{info['name']}[/] ({info['kind']}): {info['summary']}",
                  highlight=False, soft_wrap=True)
    table = Table(title="Hyperparameters (--param KEY=VALUE)")
    for column in ("key", "type", "default", "bounds", "help"):
        table.add_column(column, overflow="fold")
    for row in info["parameters"]:
        default = "required" if row["required"] else repr(row["default"])
        table.add_row(row["name"], row["type"], default, row["bounds"], row["help"])
    console.print(table)
    if info["parameters_note"]:
        console.print(info["parameters_note"], highlight=False, soft_wrap=True)
    training = ", ".join(f"{k}={v}" for k, v in info["default_training"].items())
    console.print(f"Training defaults: {training or 'TrainConfig defaults'}", highlight=False,
                  soft_wrap=True)

"""`uldkit methods`: list every registered unlearning method."""

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
    defaults = getattr(cls, "all_defaults", None)
    return {
        "name": cls.name,
        "kind": "edits weights" if cls.edits_weights else "adds an assistant",
        "summary": cls.summary,
        "paper": cls.paper,
        "needs_reference": cls.needs_reference,
        "needs_augmentation": cls.needs_augmentation,
        "needs_refusals": cls.needs_refusals,
        "hyperparameters": defaults() if callable(defaults) else None,
        "default_training": dict(cls.default_training),
    }


@app.command("methods")
def methods(
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list instead of a table."),
) -> None:
    """List the unlearning methods `uldkit unlearn --method` accepts."""
    from uldkit.unlearning.catalog import all_methods

    infos = [method_info(cls) for cls in all_methods().values()]
    if as_json:
        typer.echo(json.dumps(infos, indent=2))
        return
    table = Table(title="Unlearning methods")
    for column in ("method", "kind", "summary", "paper"):
        table.add_column(column, overflow="fold")
    for info in infos:
        table.add_row(info["name"], info["kind"], info["summary"], info["paper"])
    Console().print(table)

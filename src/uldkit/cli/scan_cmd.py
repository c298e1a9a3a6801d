"""`uldkit scan PATH`: list what a model directory would unpickle or execute when loaded."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console

from uldkit.cli.app import app
from uldkit.models.scan import scan_model_dir

_LINE_STYLES = {
    "warning": "bold red",
    "remote code": "red",
    "note": "yellow",
    "verdict": "bold",
}


@app.command("scan")
def scan(
    path: Path = typer.Argument(..., help="Model directory, or a single checkpoint file."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Scan a model for pickle weights and remote code without loading anything.

    Exit code 0: safe (safetensors only, no code). 1: pickle or remote code found.
    """
    report = scan_model_dir(path)
    if as_json:
        typer.echo(json.dumps(report.to_dict()))
    else:
        console = Console()
        for line in report.summary_lines():
            console.print(line, style=_style(line, report.is_safe), markup=False,
                          highlight=False, soft_wrap=True)
    if not report.is_safe:
        raise typer.Exit(code=1)


def _style(line: str, safe: bool) -> str | None:
    if line.startswith("pickle:"):
        return "red" if "DANGEROUS" in line or "unparseable" in line else "yellow"
    if line.startswith("verdict:"):
        return "bold green" if safe else "bold red"
    for prefix, style in _LINE_STYLES.items():
        if line.startswith(prefix + ":"):
            return style
    return None

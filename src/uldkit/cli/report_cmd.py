"""`uldkit report`: render run results as Markdown, self-contained HTML and a trade-off plot."""

from __future__ import annotations

from pathlib import Path

import typer

from uldkit.cli.app import app


@app.command("report")
def report(
    run_dirs: list[Path] = typer.Argument(
        ..., help="Run directories, each holding results.json (or a one-method summary.json)."
    ),
    out: Path = typer.Option(..., "--out", help="Directory to write the report into."),
    title: str | None = typer.Option(
        None, "--title", help="Report title (default: 'Unlearning report')."),
    max_samples: int = typer.Option(
        5, "--max-samples", min=0, help="Forget questions to show generated answers for, per run."
    ),
) -> None:
    """Write report.md, report.html (self-contained) and tradeoff.png for the given runs."""
    from uldkit.report.render import render_report

    files = render_report(run_dirs, out, max_samples=max_samples,
                          **({} if title is None else {"title": title}))
    for path in (files.markdown, files.html, files.plot):
        typer.echo(str(path))

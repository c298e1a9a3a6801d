"""`uldkit report`: render run results as Markdown, self-contained HTML and a trade-off plot."""

from __future__ import annotations

from pathlib import Path

import typer

from uldkit.cli import options
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
    overwrite: bool = options.OVERWRITE,
) -> None:
    """Write report.md, report.html (self-contained) and tradeoff.png for the given runs."""
    from uldkit.report.render import render_report
    from uldkit.training.run_dir import RunDir
    from uldkit.training.run_start import start_output

    config = {"run_dirs": [str(d) for d in run_dirs], "title": title, "max_samples": max_samples}
    with start_output(out, "report", config, overwrite=overwrite, inputs=run_dirs) as run:
        render_report(run_dirs, run.path, max_samples=max_samples,
                      **({} if title is None else {"title": title}))
    for kind in ("markdown", "html", "plot"):
        typer.echo(str(RunDir(out).report(kind)))

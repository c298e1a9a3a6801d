"""Human-readable reports over run results: report.md, a self-contained report.html, tradeoff.png.

Per run: a table of the unlearning methods beside the target and retain models (TOFU's or
MUSE's figures, with memorisation and fluency when measured), the membership-inference and
relearning-attack tables when the run has them (`report_tables`), the trade-off plot
(`report_plot`), and a few generated answers to forget questions beside the truth. Every
piece of text from a results file is escaped before it reaches HTML/Markdown.
"""

from __future__ import annotations

import base64
import html
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from uldkit.errors import DataError
from uldkit.io import atomic_write_bytes, atomic_write_text
from uldkit.report.plot import plot_description, tradeoff_png
from uldkit.report.results import AnswerSample, ModelResult, RunResults, load_run
from uldkit.report.tables import (
    TOFU_NOTE,
    ReportTable,
    mia_table,
    ordered,
    quantize_table,
    relearn_table,
    results_table,
)
from uldkit.training.run_dir import RunDir

DEFAULT_TITLE = "Unlearning report"
METRIC_NOTES = TOFU_NOTE


@dataclass(frozen=True)
class ReportFiles:
    markdown: Path
    html: Path
    plot: Path


def render_report(
    run_dirs: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    title: str = DEFAULT_TITLE,
    max_samples: int = 5,
) -> ReportFiles:
    """Read each run directory and write report.md, report.html and tradeoff.png to out_dir."""
    if not run_dirs:
        raise DataError("no run directories given for the report")
    runs = _distinct_names([load_run(run_dir) for run_dir in run_dirs])
    png = tradeoff_png(runs, title=f"{title}: {plot_description(runs)[0]}")
    out = RunDir(Path(out_dir))
    files = ReportFiles(out.report("markdown"), out.report("html"), out.report("plot"))
    atomic_write_bytes(files.plot, png)
    atomic_write_text(files.markdown, markdown_report(runs, title, files.plot.name, max_samples))
    atomic_write_text(files.html, html_report(runs, title, png, max_samples))
    return files


def markdown_report(
    runs: Sequence[RunResults], title: str, plot_file: str, max_samples: int = 5
) -> str:
    lines = [f"# {_md(title)}", "", f"![{_md(plot_description(runs)[1])}]({plot_file})", ""]
    for run in runs:
        lines += [f"## Run: {_md(run.name)}", "", f"Source: `{run.path}`", ""]
        for table in _tables(run):
            lines += _markdown_table(table)
        if run.skipped:
            lines += [f"Not run: {_md(_skipped(run))}", ""]
        models, questions = _sample_grid(run, max_samples)
        if questions:
            lines += ["### Answers to forget questions", ""]
            for question, truth, answers in questions:
                lines += [f"**Q:** {_md(question)}", "", "| | answer |", "|---|---|",
                          f"| **truth** | {_md(truth)} |"]
                lines += [f"| {_md(model.name)} | {_md(answers.get(model.name, '—'))} |"
                          for model in models]
                lines.append("")
        if run.config:
            lines += ["<details><summary>Configuration</summary>", "", "```json",
                      json.dumps(run.config, indent=2, default=str), "```", "", "</details>", ""]
    return "\n".join(lines)


def html_report(
    runs: Sequence[RunResults], title: str, png: bytes, max_samples: int = 5
) -> str:
    image = base64.b64encode(png).decode("ascii")
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_h(title)}</title>", f"<style>{_CSS}</style></head><body>",
        f"<h1>{_h(title)}</h1>",
        f'<img class="plot" src="data:image/png;base64,{image}" '
        f'alt="{_h(plot_description(runs)[1])}">',
    ]
    for run in runs:
        parts += [f"<h2>Run: {_h(run.name)}</h2>", f'<p class="source">{_h(str(run.path))}</p>']
        for table in _tables(run):
            parts += _html_table(table)
        if run.skipped:
            parts.append(f'<p class="note">Not run: {_h(_skipped(run))}</p>')
        parts += _html_samples(run, max_samples)
        if run.config:
            config = json.dumps(run.config, indent=2, default=str)
            parts.append(f"<details><summary>Configuration</summary><pre>{_h(config)}</pre>"
                         "</details>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _tables(run: RunResults) -> list[ReportTable]:
    tables = [results_table(run, _duration), mia_table(run), relearn_table(run),
              quantize_table(run)]
    return [table for table in tables if table is not None]


def _markdown_table(table: ReportTable) -> list[str]:
    aligns = ["---" if i == 0 or i in table.text_columns else "---:"
              for i in range(len(table.headers))]
    lines = [f"### {_md(table.title)}", "", "| " + " | ".join(map(_md, table.headers)) + " |",
             "|" + "|".join(aligns) + "|"]
    lines += ["| " + " | ".join(_md(cell) for cell in cells) + " |" for _, cells in table.rows]
    lines += ["", f"_{_md(table.note)}_", ""]
    if table.details:
        lines += ["<details><summary>Verdicts</summary>", ""]
        lines += [f"- {_md(line)}" for line in table.details]
        lines += ["", "</details>", ""]
    return lines


def _html_table(table: ReportTable) -> list[str]:
    parts = [f"<h3>{_h(table.title)}</h3>", "<table><thead><tr>"
             + "".join(f"<th>{_h(c)}</th>" for c in table.headers) + "</tr></thead><tbody>"]
    for number, (role, cells) in enumerate(table.rows):
        titles = table.hover[number] if number < len(table.hover) else []
        parts.append(f'<tr class="{_h(role)}">' + "".join(
            _html_cell(cell, titles[i] if i < len(titles) else "", i in table.text_columns)
            for i, cell in enumerate(cells)) + "</tr>")
    parts.append("</tbody></table>")
    parts.append(f'<p class="note">{_h(table.note)}</p>')
    if table.details:
        parts.append("<details><summary>Verdicts</summary><ul>"
                     + "".join(f"<li>{_h(line)}</li>" for line in table.details)
                     + "</ul></details>")
    return parts


def _html_cell(cell: str, title: str, text: bool) -> str:
    attributes = (f' title="{_h(title)}"' if title else "") + (' class="text"' if text else "")
    return f"<td{attributes}>{_h(cell)}</td>"


def _skipped(run: RunResults) -> str:
    return "; ".join(f"{name} ({reason})" for name, reason in run.skipped.items())


def _html_samples(run: RunResults, max_samples: int) -> list[str]:
    models, questions = _sample_grid(run, max_samples)
    if not questions:
        return []
    header = "".join(f"<th>{_h(model.name)}</th>" for model in models)
    rows = [f'<h3>Answers to forget questions</h3><div class="scroll"><table class="samples">'
            f"<thead><tr><th>Question</th><th>Truth</th>{header}</tr></thead><tbody>"]
    for question, truth, answers in questions:
        cells = "".join(f"<td>{_h(answers.get(model.name, '—'))}</td>" for model in models)
        rows.append(f"<tr><td>{_h(question)}</td><td class=\"truth\">{_h(truth)}</td>{cells}</tr>")
    rows.append("</tbody></table></div>")
    return rows


def _sample_grid(
    run: RunResults, max_samples: int
) -> tuple[list[ModelResult], list[tuple[str, str, dict[str, str]]]]:
    """Models that have samples, and up to max_samples (question, truth, {model: answer})."""
    models = [model for model in _ordered(run) if model.samples]
    by_question: dict[str, tuple[str, dict[str, str]]] = {}
    for model in models:
        for sample in model.samples:
            _add_sample(by_question, model.name, sample)
    questions = [(q, truth, answers) for q, (truth, answers) in by_question.items()]
    return models, questions[:max_samples]


def _add_sample(grid: dict[str, tuple[str, dict[str, str]]], model: str, sample: AnswerSample):
    truth, answers = grid.setdefault(sample.question, (sample.truth, {}))
    answers.setdefault(model, sample.generated)


_ordered = ordered


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"


def _distinct_names(runs: list[RunResults]) -> list[RunResults]:
    names = [run.name for run in runs]
    return [run if names.count(run.name) == 1 else replace(run, name=str(run.path))
            for run in runs]


def _h(text: str) -> str:
    return html.escape(text, quote=True)


def _md(text: str) -> str:
    escaped = html.escape(text, quote=False)
    for char in "\\`*_[]|":
        escaped = escaped.replace(char, "\\" + char)
    return escaped.replace("\r\n", "\n").replace("\n", "<br>")


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1100px;
       margin: 2em auto; padding: 0 1em; color: #222; line-height: 1.45; }
h1, h2, h3 { line-height: 1.2; }
img.plot { max-width: 100%; height: auto; display: block; margin: 1em 0; }
table { border-collapse: collapse; margin: 0.8em 0 1.5em; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.35em 0.6em; vertical-align: top; text-align: right; }
th { background: #f2f2f2; }
td:first-child, th:first-child, td.text, table.samples td, table.samples th {
  text-align: left; }
tr.target td { background: #fdecea; }
tr.retain td { background: #e9f7ef; }
td.truth { background: #f7f7f7; }
table.samples td { max-width: 22em; white-space: pre-wrap; }
div.scroll { overflow-x: auto; }
p.note, p.source { color: #555; font-size: 0.9em; }
pre { background: #f6f8fa; padding: 0.8em; overflow-x: auto; }
"""

"""`uldkit data ...`: generate the synthetic world and look inside QA data sets."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from uldkit.cli import options
from uldkit.cli.app import app
from uldkit.data.records import record_from_qa
from uldkit.data.sources import SYNTHETIC, DataSource
from uldkit.data.synthetic import SYNTHETIC_SPLITS, generate_world
from uldkit.data.tofu import load_tofu
from uldkit.data.types import QADataset
from uldkit.errors import ConfigError, DataError

data_app = typer.Typer(
    help="Generate the synthetic world and inspect QA data sets.", no_args_is_help=True
)
app.add_typer(data_app, name="data")

_FIELDS = ("question", "answer", "paraphrased_answer", "perturbed_answer",
           "paraphrased_question", "subject")


@data_app.command("synth")
def synth(
    out: Path = typer.Option(..., "--out", help="Directory to write (TOFU layout)."),
    people: int = typer.Option(40, "--people", min=2, help="Number of fictitious people."),
    seed: int = typer.Option(0, "--seed", help="Random seed; the same seed gives the same world."),
    overwrite: bool = options.OVERWRITE,
) -> None:
    """Write the built-in synthetic world in TOFU's layout (load it with --data DIR)."""
    from uldkit.training.run_start import start_output

    world = generate_world(people, seed)
    with start_output(out, "data synth", {"people": people, "seed": seed},
                      overwrite=overwrite) as run:
        world.save(run.path)
    counts = ", ".join(
        f"{name} {len(world.split(name))}" for name in SYNTHETIC_SPLITS if name != "full"
    )
    typer.echo(f"wrote {out}: {len(world.people)} people, {counts}, aug for forget01/05/10")


@data_app.command("show")
def show(
    data: str | None = typer.Option(None, "--data", help=options.DATA_HELP
                                    + " Default: synthetic."),
    split: str | None = typer.Option(
        None, "--split", help="Split to show (default forget10; not for a single file)."
    ),
    rows: int = typer.Option(5, "--rows", min=0, help="How many rows to print."),
    tofu: Path | None = typer.Option(None, "--tofu", hidden=True,
                                     help="Deprecated: use --data DIR."),
    file: Path | None = typer.Option(None, "--file", hidden=True,
                                     help="Deprecated: use --data FILE."),
    synthetic: bool = typer.Option(False, "--synthetic", hidden=True,
                                   help="Deprecated: use --data synthetic."),
) -> None:
    """Print counts and the first rows of a QA data set."""
    location = _one_location(data, tofu, file, synthetic)
    if Path(location).is_file():
        if split is not None:
            raise ConfigError(f"--split goes with a folder or a built-in set, not the file "
                              f"{location}")
        dataset = load_tofu(location)
    else:
        dataset = DataSource(location).load(split or "forget10")
    if not len(dataset):
        raise DataError(f"data set '{dataset.name}' is empty")
    console = Console()
    for line in summary_lines(dataset):
        console.print(line, highlight=False, soft_wrap=True)
    if rows:
        console.print(_rows_table(dataset, rows))


def _one_location(data: str | None, tofu: Path | None, file: Path | None,
                  synthetic: bool) -> str:
    """--data, or one of the aliases it replaces (kept for one release, with a warning)."""
    given = [(flag, str(value)) for flag, value in (
        ("--data", data), ("--tofu", tofu), ("--file", file),
        ("--synthetic", SYNTHETIC if synthetic else None)) if value is not None]
    if len(given) > 1:
        raise ConfigError(f"give the data once: {' and '.join(f for f, _ in given)} both name "
                          "it (use --data)")
    if not given:
        return SYNTHETIC
    flag, location = given[0]
    if flag != "--data":
        typer.echo(f"warning: {flag} is deprecated and will be removed in the next release; "
                   f"use --data {_DEPRECATED[flag]}", err=True)
    if flag == "--file" and not Path(location).is_file():
        raise DataError(f"{location}: {'is not a file' if Path(location).exists() else 'not found'}")
    return location


_DEPRECATED = {"--tofu": "DIR", "--file": "FILE", "--synthetic": "synthetic"}


def summary_lines(dataset: QADataset) -> list[str]:
    """Counts of rows and of each field's presence."""
    total = len(dataset)
    records = [record_from_qa(pair) for pair in dataset]
    present = {field: sum(field in record for record in records) for field in _FIELDS}
    perturbed_sizes = sorted({len(pair.perturbed_answers) for pair in dataset} - {0})
    sizes = "/".join(str(size) for size in perturbed_sizes) or "0"
    complete = sum(
        p.paraphrased_answer is not None and bool(p.perturbed_answers) for p in dataset
    )
    return [
        f"{dataset.name}: {total} rows",
        f"with paraphrased answer: {present['paraphrased_answer']}/{total}; "
        f"with perturbed answers: {present['perturbed_answer']}/{total} ({sizes} each); "
        f"with paraphrased question: {present['paraphrased_question']}/{total}; "
        f"with subject: {present['subject']}/{total}",
        "fields: " + ", ".join(f for f in _FIELDS if present[f]),
        f"evaluation fields (paraphrase + perturbed answers): {complete}/{total} rows"
        + (" (all)" if complete == total else ""),
    ]


def _rows_table(dataset: QADataset, rows: int) -> Table:
    table = Table(title=f"first {min(rows, len(dataset))} of {len(dataset)} rows")
    for column in ("#", "question", "answer", "paraphrased answer", "perturbed"):
        table.add_column(column, overflow="fold")
    for index, pair in enumerate(dataset.pairs[:rows], start=1):
        table.add_row(
            str(index),
            pair.question,
            pair.answer,
            pair.paraphrased_answer or "",
            str(len(pair.perturbed_answers)),
        )
    return table

"""The command group every command module registers on."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="uldkit",
    help="Make a language model forget specific knowledge, measure it, and serve the result.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    # A callback keeps `app` a command group even while only one command is registered
    # (as in a test that imports a single command module).
    pass

"""The `uldkit` command line: thin wrappers over the library.

Each command group lives in its own module and registers itself on `app`. User errors
(`UldkitError`) print one readable line and exit 2; anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

import sys

import typer
from rich.console import Console
from rich.markup import escape

from uldkit.cli.app import app
from uldkit.errors import UldkitError

console = Console(stderr=True)


def _register_commands() -> None:
    # Imported for their side effect of adding commands to `app`.
    from uldkit.cli import (  # noqa: F401
        attack_cmd,
        attack_quantize_cmd,
        calibrate_cmd,
        convert_cmd,
        data_cmds,
        demo_cmd,
        doctor_cmd,
        eval_cmds,
        eval_extra_cmds,
        eval_tofu_cmd,
        finetune_cmd,
        generate_cmd,
        harness_cmd,
        methods_cmd,
        report_cmd,
        scan_cmd,
        serve_cmd,
        sweep_cmd,
        unlearn_cmd,
    )


def _quiet_library_noise() -> None:
    """Our own progress bars say what is happening; the libraries' extra output does not."""
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Loading weights" bars, one per model load
    # PEFT still calls a transformers method deprecated in v5; nothing a user can act on.
    warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated",
                            category=FutureWarning)


def main(argv: list[str] | None = None) -> None:
    _quiet_library_noise()
    _register_commands()
    try:
        exit_code = app(args=argv, standalone_mode=False)
        # Without standalone mode, click returns the code of `typer.Exit(code)` instead of
        # exiting with it.
        if isinstance(exit_code, int) and exit_code != 0:
            sys.exit(exit_code)
    except UldkitError as err:
        # escape: a message may hold brackets (`uldkit[serve]`, a list) that are not markup
        console.print(f"[bold red]error:[/] {escape(str(err))}", highlight=False,
                      soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        console.print("[bold red]interrupted[/]", soft_wrap=True)
        sys.exit(130)
    except typer.Exit as done:
        sys.exit(done.exit_code)
    except typer.Abort:
        sys.exit(1)
    except ModuleNotFoundError as err:
        from uldkit.errors import extra_for_module

        extra = extra_for_module(err.name or "")
        if extra is None:
            raise
        console.print(f"[bold red]error:[/] this needs the '{err.name}' package, which is not "
                      f"installed: {escape(extra.install)}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except Exception as err:  # click usage errors arrive here with standalone_mode=False
        if isinstance(err, _click_exceptions()):
            err.show()
            sys.exit(err.exit_code)
        raise


def _click_exceptions() -> tuple[type[Exception], ...]:
    """Click's usage-error classes: click's own, and the copy of click that newer typer
    releases vendor (their usage errors are not click.ClickException)."""
    import click

    classes: list[type[Exception]] = [click.ClickException]
    try:
        from typer._click.exceptions import ClickException as vendored
    except ImportError:
        pass
    else:
        classes.append(vendored)
    return tuple(classes)

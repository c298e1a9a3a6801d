"""The command line starts without the heavy libraries: `uldkit --help` should be instant."""

from __future__ import annotations

import subprocess
import sys

import pytest


def test_registering_every_command_imports_neither_torch_nor_transformers_models():
    script = (
        "import sys\n"
        "from uldkit.cli import _register_commands, app\n"
        "_register_commands()\n"
        "import typer.main\n"
        "group = typer.main.get_command(app)\n"
        "assert {'demo', 'eval', 'unlearn', 'finetune', 'attack', 'report'} <= set(group.commands)\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'peft', 'matplotlib') "
        "if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "", f"imported at start-up: {done.stdout.strip()}"


@pytest.mark.parametrize("args", [["scan", "--bogus"], ["scan"], ["unlearn", "--method"]])
def test_a_usage_error_is_click_s_message_and_exit_2_not_a_traceback(args):
    # newer typer releases raise usage errors from its own copy of click, not click's classes
    done = subprocess.run([sys.executable, "-m", "uldkit", *args], capture_output=True,
                          text=True)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert "Error:" in done.stderr

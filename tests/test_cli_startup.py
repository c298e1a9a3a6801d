"""The command line starts without the heavy libraries: `uldkit --help` should be instant."""

from __future__ import annotations

import subprocess
import sys


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

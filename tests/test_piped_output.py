"""Output for logs and CI: piped to a file, progress is plain lines (every few seconds or
every tenth of the way, with rate and ETA), a message is one line however long (no wrapping
at 80 columns), and the summary tables fit in 80 columns without cutting a figure short."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

import uldkit
import uldkit.cli.finetune_cmd  # noqa: F401  (registers the command this test runs)
from uldkit import cli
from uldkit.cli.demo_cmd import summary_table
from uldkit.training.progress import LoopProgress

ANSI_OR_CR = re.compile(r"\x1b|\r")


def test_progress_piped_to_a_file_is_one_plain_line_per_tenth(tmp_path):
    script = ("from uldkit.training.progress import LoopProgress\n"
              "with LoopProgress(50, 'fine-tuning target', 'steps', every_seconds=1e9) as p:\n"
              "    for _ in range(50):\n"
              "        p.advance(1, note='loss 0.1234')\n")
    env = {**os.environ, "PYTHONPATH": str(Path(uldkit.__file__).parents[1])}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True,
                          text=True, env=env, check=True, timeout=120)
    lines = done.stdout.splitlines()
    assert not ANSI_OR_CR.search(done.stdout)
    assert len(lines) == 10  # one whole line per update, never wrapped at 80 columns
    assert lines[0].startswith("fine-tuning target: 5/50 steps (10%), loss 0.1234, ")
    assert "steps/s" in lines[0] and ", eta " in lines[0]
    assert lines[-1].startswith("fine-tuning target: 50/50 steps (100%), loss 0.1234, ")
    assert "eta" not in lines[-1]


def test_a_slow_loop_gets_a_line_every_few_seconds():
    now = [0.0]
    out = Console(file=io.StringIO(), width=80)  # a file: not a terminal
    with LoopProgress(1000, "TOFU forget", "samples", console=out, every_seconds=10.0,
                      clock=lambda: now[0]) as progress:
        for _ in range(30):  # 3 % of the way, one sample every 2 s
            now[0] += 2.0
            progress.advance(1)
        now[0] += 1.0
        progress.advance(0.5)  # part of a sample: the count at exit gets its own line
    lines = out.file.getvalue().splitlines()
    assert len(lines) == 6 + 1  # every 10 s over 60 s, and the count where it stopped
    assert lines[0] == ("TOFU forget: 5/1000 samples (0%), 0.5 samples/s, 0:00:10 elapsed, "
                        "eta 0:33:10")
    assert lines[-1].startswith("TOFU forget: 30/1000 samples (3%), 0.5 samples/s, 0:01:01 ")


@pytest.mark.parametrize("width", [40, 60, 80, 120])
def test_the_live_bar_on_a_terminal_never_wraps(width):
    terminal = Console(file=io.StringIO(), width=width, force_terminal=True)
    progress = LoopProgress(870, "fine-tuning a model with a long name", "steps",
                            console=terminal)
    with progress:
        for _ in range(300):
            progress.advance(1, note="loss 0.1234")
        bar = progress._progress  # the rich Progress behind it
        line = bar.columns[0].render(bar.tasks[0]).plain
    assert len(line) < width and "300/870 loss 0.1234" in line


def test_finetune_piped_prints_no_line_over_80(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli, "_register_commands", lambda: None)
    monkeypatch.delenv("COLUMNS", raising=False)
    cli.main(["finetune", "--out", str(tmp_path / "ft"), "--people", "4", "--epochs", "2",
              "--split", "forget10", "--no-general", "--vocab-size", "300"])
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert not ANSI_OR_CR.search(captured.out)
    assert lines[0].startswith("fine-tuning ft: 1/2 steps (50%), loss ")
    assert lines[1].startswith("fine-tuning ft: 2/2 steps (100%), loss ")
    assert lines[-1].startswith("done ") and len(lines) == 3  # one line, however long


def _row(seconds: float) -> dict:
    return {"forget_quality": 2.16e-5, "model_utility": 0.709, "forget_rouge": 1.0,
            "forget_prob": 0.986, "forget_extraction_strength": 1.0, "train_seconds": seconds,
            "mia": {"separating": ["loss", "zlib"], "attacks": ["loss", "zlib", "mink", "mink++"]},
            "muse": {"verbmem_forget": 0.5, "knowmem_forget": 0.3, "privleak": -100.25,
                     "knowmem_retain": 0.4, "utility_preserved": 1.0,
                     "forget_extraction_strength": 0.5}}


@pytest.mark.parametrize("kind", ["tofu", "muse"])
def test_the_demo_table_fits_80_columns_whole(kind):
    results = {"benchmark": kind, "target": _row(37), "retain": _row(39),
               "methods": {"npo+grad_diff": _row(1237), "uld": _row(18)}}
    out = Console(file=io.StringIO(), width=80)
    out.print(summary_table(results))
    text = out.file.getvalue()
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "…" not in text  # no header or figure cut short
    figure = "2.16e-05" if kind == "tofu" else "-100.25"
    assert "npo+grad_diff" in text and figure in text and "21m" in text and "37s" in text

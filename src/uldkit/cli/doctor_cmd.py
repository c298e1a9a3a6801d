"""`uldkit doctor`: what a bug report needs, in one paste: versions, device and threads,
which extras are installed and what each unlocks, free disk and memory, and whether the
built-in data is the data this release was measured on."""

from __future__ import annotations

import os
import platform
import shutil
import sys
from importlib import metadata
from importlib.util import find_spec
from pathlib import Path

import typer

from uldkit.cli.app import app

CORE_PACKAGES = ("torch", "transformers", "peft", "accelerate", "safetensors", "tokenizers",
                 "huggingface-hub", "numpy", "scipy", "rouge-score", "matplotlib", "typer",
                 "rich")
CHROMIUM = ("/usr/bin/chromium", "/usr/bin/chromedriver")


@app.command("doctor")
def doctor_command(
    data: bool = typer.Option(True, "--data/--no-data",
                              help="Check the built-in data (a few seconds)."),
) -> None:
    """Print versions, device, extras, free disk and memory, and check the built-in data:
    paste the output into a bug report. Exits 1 when a check fails."""
    lines, failed = report_lines(check_data=data)
    for line in lines:
        typer.echo(line)
    if failed:
        raise typer.Exit(1)


def report_lines(check_data: bool = True) -> tuple[list[str], int]:
    """The report, one line each, and how many checks failed."""
    from uldkit.errors import EXTRAS

    failed = 0
    lines = [f"uldkit: {_version('uldkit') or 'not installed'} "
             f"(from {Path(__file__).resolve().parents[1]})",
             f"python: {platform.python_version()} ({platform.python_implementation()}, "
             f"{sys.executable})",
             f"platform: {platform.platform()}",
             "packages: " + ", ".join(f"{name} {_version(name) or 'MISSING'}"
                                     for name in CORE_PACKAGES)]
    lines += _device_lines()
    lines.append("extras (pip install \"uldkit[NAME]\"):")
    for extra in EXTRAS:
        absent = [m for m in extra.modules if not _importable(m)]
        state = "installed" if not absent else f"MISSING {', '.join(absent)}: {extra.install}"
        lines.append(f"  {extra.name}: {state}. Unlocks {extra.unlocks}")
    browser = [path for path in CHROMIUM if not Path(path).exists()]
    lines.append("  browser test: " + ("Chromium and chromedriver found" if not browser else
                 f"MISSING {', '.join(browser)}: apt-get install chromium chromium-driver"))
    lines += _resource_lines()
    if check_data:
        from uldkit.data.integrity import check_synthetic, check_tofu
        from uldkit.data.sources import TOFU_DIR_ENV

        lines.append("built-in data:")
        for check in (check_synthetic(), check_tofu(os.environ.get(TOFU_DIR_ENV))):
            mark = {True: "ok", False: "PROBLEM", None: "-"}[check.ok]
            lines.append(f"  {check.what}: {mark}: {check.detail}")
            failed += check.ok is False
    lines.append(f"{failed} problem(s) found" if failed else "no problems found")
    return lines, failed


def _device_lines() -> list[str]:
    import torch

    if torch.cuda.is_available():
        names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        device = (f"cuda ({torch.cuda.device_count()}: {names}; CUDA {torch.version.cuda}, "
                  f"bf16 {'yes' if torch.cuda.is_bf16_supported() else 'no'})")
    else:
        why = "torch built without CUDA" if torch.version.cuda is None else "no CUDA device seen"
        device = f"cpu ({why}); uldkit runs on the CPU in float32"
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return [f"device: {device}",
            f"threads: torch uses {torch.get_num_threads()} of {cpus} CPUs this process may use"
            + (f" (OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']})"
               if "OMP_NUM_THREADS" in os.environ else "")]


def _resource_lines() -> list[str]:
    lines = []
    for label, where in (("here", Path.cwd()), ("hub cache", _hub_cache())):
        existing = where
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        lines.append(f"disk: {_gib(shutil.disk_usage(existing).free)} free at {where} ({label})")
    memory = _meminfo()
    if memory:
        lines.append(f"memory: {_gib(memory['MemAvailable'])} available of "
                     f"{_gib(memory['MemTotal'])}")
    return lines


def _hub_cache() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _meminfo() -> dict[str, int]:
    try:
        text = Path("/proc/meminfo").read_text()
    except OSError:  # not Linux
        return {}
    values = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        if rest.strip().endswith("kB"):
            values[name] = int(rest.split()[0]) * 1024
    return values if {"MemAvailable", "MemTotal"} <= set(values) else {}


def _importable(module: str) -> bool:
    if module in sys.modules:
        return sys.modules[module] is not None
    try:
        return find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _gib(size: int) -> str:
    return f"{size / 2**30:.1f} GiB"

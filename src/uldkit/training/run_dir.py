"""What every run writes next to its results: the resolved configuration and the versions."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from uldkit.errors import ConfigError, ModelError
from uldkit.io import atomic_write_json

MANIFEST_NAME = "uldkit_model.json"


def read_manifest(path: str | os.PathLike) -> dict[str, Any] | None:
    file = Path(path) / MANIFEST_NAME
    if not file.exists():
        return None
    try:
        manifest = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelError(f"{file}: not valid JSON ({err})") from None
    if not isinstance(manifest, dict) or "kind" not in manifest:
        raise ModelError(f"{file}: missing field 'kind'")
    return manifest


TRACKED_PACKAGES = ("uldkit", "torch", "transformers", "peft", "accelerate", "safetensors",
                    "tokenizers", "scipy", "rouge-score", "numpy")


def environment_info() -> dict[str, Any]:
    versions = {}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": versions,
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def write_run_config(out_dir: str | os.PathLike, command: str, config: dict[str, Any]) -> Path:
    path = Path(out_dir) / "run_config.json"
    atomic_write_json(path, {"command": command, "config": config,
                             "environment": environment_info()})
    return path


def check_out_dir(out_dir: str | os.PathLike, *, overwrite: bool, resume: bool) -> Path:
    """What `prepare_out_dir` refuses, checked without touching anything (call it before
    reading the inputs, so a refusal comes first and costs nothing)."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output path '{out}' exists and is not a directory")
    if out.exists() and any(out.iterdir()) and not (overwrite or resume):
        raise ConfigError(
            f"output directory '{out}' already holds files; pass --resume to continue that "
            "run or --overwrite to replace it"
        )
    return out


def prepare_out_dir(out_dir: str | os.PathLike, *, overwrite: bool, resume: bool) -> Path:
    """Refuse to write into a non-empty run directory unless resuming or told to overwrite;
    with `overwrite` (and not `resume`) the old directory is removed. Create it."""
    out = check_out_dir(out_dir, overwrite=overwrite, resume=resume)
    if out.exists() and overwrite and not resume:
        import shutil

        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    return out

"""The files of a run directory: the only module that knows their names.

    run_config.json         what the run was asked to do ("command", "config") and where it ran
    uldkit_model.json       the manifest of a model uldkit saved (kind, target, ...)
    adapter.safetensors     a ULD assistant's LoRA weights
    forget_history.jsonl    a ULD assistant's forget requests
    small_unlearned/        an offset run's unlearned small model
    checkpoints/step-N/     the trainer's checkpoints (`Checkpoint`)
    eval_log*.json          a TOFU evaluation's log, one file per set and all sets together
                            (`TOFU_SET_FILES`, `RunDir.tofu_log`)
    seed-<s>/               one seed's run of a run over several seeds (`RunDir.seed(s)`)
    report/                 the report of a demo or sweep (`RunDir.report_dir`)
    *_summary.json, ...     results (`RunDir.summary(kind)`), per-sample rows
                            (`RunDir.samples(kind)`), and the journals of an unfinished
                            evaluation (`RunDir.journal(kind)`, `RunDir.partial`)

Starting, resuming and replacing a run: `uldkit.training.run_start`.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from uldkit.errors import ModelError
from uldkit.io import atomic_write_json

RUN_CONFIG = "run_config.json"
MANIFEST_NAME = "uldkit_model.json"
ADAPTER_FILE = "adapter.safetensors"
HISTORY_FILE = "forget_history.jsonl"
SMALL_MODEL_DIR = "small_unlearned"
TOKENIZER_DIR = "tokenizer"
CHECKPOINTS_DIR = "checkpoints"
PARTIAL_DIR = "partial"
REPORT_DIR = "report"
SEED_DIR_PREFIX = "seed-"
# TOFU's evaluation log: one file per evaluation set (the set's key in a loaded log too), and
# all sets in one file.
TOFU_SET_FILES = {"forget": "eval_log_forget.json", "retain": "eval_log.json",
                  "real_authors": "eval_real_author_wo_options.json",
                  "world_facts": "eval_real_world_wo_options.json"}
TOFU_LOG_FILE = "eval_log_aggregated.json"
PARTIAL_SAMPLES_SUFFIX = ".samples.jsonl"
SUMMARY_FILES = {
    "train": "train_summary.json",
    "unlearn": "unlearn_summary.json",
    "eval": "summary.json",
    "muse": "muse_summary.json",
    "mia": "mia_summary.json",
    "relearn": "relearn.json",
    "quantize": "quantize.json",
    "results": "results.json",
    "seeds": "seeds.json",  # a run over several seeds: each figure's mean and spread
    "harness": "results.json",  # lm-evaluation-harness's own results file
    "calibrate": "calibration.json",
    "sweep": "sweep.json",  # a sweep's grid points and references
}
SAMPLE_FILES = {"muse": "muse_samples.jsonl", "mia": "mia_samples.jsonl",
                "relearn": "relearn_samples.jsonl", "quantize": "quantize_samples.jsonl"}
JOURNAL_FILES = {"muse": "muse_stages.partial.jsonl", "mia": "mia_stages.partial.jsonl"}
REPORT_FILES = {"markdown": "report.md", "html": "report.html", "plot": "tradeoff.png",
                "frontier": "frontier.png", "frontier_table": "frontier.md"}


@dataclass(frozen=True)
class RunDir:
    """A run directory and the paths of its files; `replaces` is set while the run is built
    beside a finished run it will replace (see `run_start.open_run`)."""

    path: Path
    replaces: Path | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @property
    def config(self) -> Path:
        return self.path / RUN_CONFIG

    @property
    def manifest(self) -> Path:
        return self.path / MANIFEST_NAME

    @property
    def adapter(self) -> Path:
        return self.path / ADAPTER_FILE

    @property
    def forget_history(self) -> Path:
        return self.path / HISTORY_FILE

    @property
    def small_model(self) -> Path:
        return self.path / SMALL_MODEL_DIR

    @property
    def tokenizer(self) -> Path:
        return self.path / TOKENIZER_DIR

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS_DIR

    @property
    def partial(self) -> Path:
        """The TOFU evaluation's finished sets and sample journals (`partial/<set>`)."""
        return self.path / PARTIAL_DIR

    @property
    def report_dir(self) -> Path:
        return self.path / REPORT_DIR

    @property
    def tofu_log(self) -> Path:
        """A TOFU evaluation's log, every set in one file."""
        return self.path / TOFU_LOG_FILE

    def partial_set(self, set_key: str) -> Path:
        """A finished TOFU evaluation set of an unfinished evaluation."""
        return self.partial / set_key

    def partial_samples(self, set_key: str) -> Path:
        """The journal of one TOFU evaluation set's finished samples."""
        return self.partial / f"{Path(set_key).stem}{PARTIAL_SAMPLES_SUFFIX}"

    def seed(self, seed: int) -> Path:
        """Where seed `seed`'s run of a run over several seeds lives."""
        return self.path / f"{SEED_DIR_PREFIX}{seed}"

    def summary(self, kind: str) -> Path:
        return self.path / SUMMARY_FILES[kind]

    def samples(self, kind: str) -> Path:
        return self.path / SAMPLE_FILES[kind]

    def journal(self, kind: str) -> Path:
        return self.path / JOURNAL_FILES[kind]

    def report(self, kind: str) -> Path:
        return self.path / REPORT_FILES[kind]

    def read_config(self) -> dict[str, Any] | None:
        """The saved run_config.json, or None when there is none (or it is unreadable)."""
        try:
            record = json.loads(self.config.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) else None

    def recorded_setting(self, key: str) -> Any:
        """One top-level setting of the saved configuration, or None."""
        record = self.read_config()
        config = record.get("config") if record else None
        return config.get(key) if isinstance(config, dict) else None


@dataclass(frozen=True)
class Checkpoint:
    """One trainer checkpoint, `checkpoints/step-NNNNNNN/`: complete once COMPLETE exists."""

    path: Path

    @staticmethod
    def final(checkpoints: Path, step: int) -> Checkpoint:
        return Checkpoint(checkpoints / f"step-{step:07d}")

    @staticmethod
    def staging(checkpoints: Path, step: int) -> Checkpoint:
        return Checkpoint(checkpoints / f".step-{step:07d}.partial")

    @staticmethod
    def step_of(path: Path) -> int | None:
        """The step of a (final) checkpoint directory name, else None."""
        name = path.name
        digits = name[len("step-"):]
        return int(digits) if name.startswith("step-") and digits.isdigit() else None

    @property
    def complete_marker(self) -> Path:
        return self.path / "COMPLETE"

    @property
    def trainable(self) -> Path:
        return self.path / "trainable.safetensors"

    @property
    def optimizer_tensors(self) -> Path:
        return self.path / "optimizer.safetensors"

    @property
    def optimizer_meta(self) -> Path:
        return self.path / "optimizer.json"

    @property
    def scheduler(self) -> Path:
        return self.path / "scheduler.json"

    @property
    def scaler(self) -> Path:
        return self.path / "scaler.json"

    @property
    def trainer_state(self) -> Path:
        return self.path / "trainer_state.json"

    def rng_tensors(self, rank: int) -> Path:
        return self.path / f"rng-{rank}.safetensors"

    def rng_python(self, rank: int) -> Path:
        return self.path / f"rng-{rank}.json"


def read_manifest(path: str | os.PathLike) -> dict[str, Any] | None:
    file = RunDir(Path(path)).manifest
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
    path = RunDir(Path(out_dir)).config
    atomic_write_json(path, {"command": command, "config": config,
                             "environment": environment_info()})
    return path

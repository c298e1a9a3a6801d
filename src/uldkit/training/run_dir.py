"""The files of a run directory: the only module that knows their names.

    run_config.json         what the run was asked to do ("command", "config") and where it ran
    uldkit_model.json       the manifest of a model uldkit saved (kind, target, ...)
    adapter.safetensors     a ULD assistant's LoRA weights
    forget_history.jsonl    a ULD assistant's forget requests
    small_unlearned/        an offset run's unlearned small model
    checkpoints/step-N/     the trainer's checkpoints (`Checkpoint`)
    *_summary.json, ...     results (`RunDir.summary(kind)`), per-sample rows
                            (`RunDir.samples(kind)`), and the journals of an unfinished
                            evaluation (`RunDir.journal(kind)`, `RunDir.partial`)

Starting a run (`start_run`) refuses a resume whose settings differ from the saved ones, and
with --overwrite builds the new run beside the old one, swapping it in only when it finished.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import shutil
import sys
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from uldkit.errors import ConfigError, ModelError
from uldkit.io import atomic_write_json

RUN_CONFIG = "run_config.json"
MANIFEST_NAME = "uldkit_model.json"
ADAPTER_FILE = "adapter.safetensors"
HISTORY_FILE = "forget_history.jsonl"
SMALL_MODEL_DIR = "small_unlearned"
TOKENIZER_DIR = "tokenizer"
CHECKPOINTS_DIR = "checkpoints"
PARTIAL_DIR = "partial"
SUMMARY_FILES = {
    "train": "train_summary.json",
    "unlearn": "unlearn_summary.json",
    "eval": "summary.json",
    "muse": "muse_summary.json",
    "mia": "mia_summary.json",
    "relearn": "relearn.json",
    "results": "results.json",
}
SAMPLE_FILES = {"muse": "muse_samples.jsonl", "mia": "mia_samples.jsonl",
                "relearn": "relearn_samples.jsonl"}
JOURNAL_FILES = {"muse": "muse_stages.partial.jsonl", "mia": "mia_stages.partial.jsonl"}
REPORT_FILES = {"markdown": "report.md", "html": "report.html", "plot": "tradeoff.png"}


@dataclass(frozen=True)
class RunDir:
    """A run directory and the paths of its files; `replaces` is set while the run is built
    beside a finished run it will replace (see `open_run`)."""

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


# --- starting a run -----------------------------------------------------------------------------
# Settings that may change between a run and its resume: where and how it runs, not what.
RESUMABLE_SETTINGS = frozenset({"out", "device", "show_progress", "description",
                                "allow_pickle", "trust_remote_code"})


def check_out_dir(out_dir: str | os.PathLike, *, overwrite: bool, resume: bool) -> Path:
    """What `start_run` refuses about the directory itself, checked without touching
    anything (call it before reading the inputs, so a refusal comes first and costs nothing)."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output path '{out}' exists and is not a directory")
    if _holds_files(out) and not (overwrite or resume):
        raise ConfigError(
            f"output directory '{out}' already holds files; pass --resume to continue that "
            "run or --overwrite to replace it"
        )
    return out


def check_resume(out_dir: str | os.PathLike, command: str, config: dict[str, Any],
                 may_differ: Collection[str] = ()) -> None:
    """ConfigError naming the first setting in which `config` differs from the run saved in
    `out_dir` (nothing to compare when it saved none). Settings named in RESUMABLE_SETTINGS
    or `may_differ` may differ."""
    saved = RunDir(Path(out_dir)).read_config()
    if saved is None:
        return
    difference = first_difference(
        {"command": saved.get("command"), "config": saved.get("config")},
        {"command": command, "config": json.loads(json.dumps(config))},
        RESUMABLE_SETTINGS | set(may_differ),
    )
    if difference is not None:
        where, old, new = difference
        raise ConfigError(
            f"cannot resume '{out_dir}': it was run with {where} = {_show(old)}, now "
            f"{_show(new)}; resume with the same settings, or pass --overwrite to replace it"
        )


def first_difference(old: Any, new: Any, ignored: Collection[str] = (),
                     where: str = "") -> tuple[str, Any, Any] | None:
    """(dotted key, old value, new value) of the first difference, in `new`'s key order;
    keys named in `ignored` are skipped at any depth."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in [*new, *(k for k in old if k not in new)]:
            if key in ignored:
                continue
            path = f"{where}.{key}" if where else str(key)
            if key not in old or key not in new:
                return path, old.get(key, _ABSENT), new.get(key, _ABSENT)
            found = first_difference(old[key], new[key], ignored, path)
            if found is not None:
                return found
        return None
    return None if old == new else (where, old, new)


class _Absent:
    def __repr__(self) -> str:
        return "(not set)"


_ABSENT = _Absent()


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, _Absent) else json.dumps(value)


def check_apart(out: Path, inputs: Sequence[str | os.PathLike | None], *,
                inside_ok: bool = False) -> None:
    """ConfigError when the output directory is or holds one of the inputs (replacing it
    would destroy what the run reads), or lies inside one unless `inside_ok`."""
    where = out.resolve()
    for given in inputs:
        if given is None:
            continue
        path = Path(given).resolve()
        inside = path in where.parents and not inside_ok
        if where == path or where in path.parents or inside:
            raise ConfigError(f"output directory '{out}' overlaps the input '{given}'; "
                              "choose another")


def is_output_of(out_dir: str | os.PathLike, command: str) -> bool:
    """Whether `out_dir` was written by `command` (its run_config.json says so)."""
    record = RunDir(Path(out_dir)).read_config()
    return record is not None and record.get("command") == command


@contextmanager
def start_output(out_dir: str | os.PathLike, command: str, config: dict[str, Any], *,
                 overwrite: bool, inputs: Sequence[str | os.PathLike] = ()) -> Iterator[RunDir]:
    """`start_run` for commands that write their whole output at once (report, data synth):
    a directory holding files is refused unless it is a previous output of `command` or
    `overwrite` is given; either way the new output replaces it only once complete."""
    out = Path(out_dir)
    check_apart(out, inputs, inside_ok=True)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output path '{out}' exists and is not a directory")
    if _holds_files(out) and not overwrite and not is_output_of(out, command):
        raise ConfigError(
            f"output directory '{out}' holds files that are not an earlier `uldkit {command}` "
            "output; choose an empty directory, or pass --overwrite to replace it"
        )
    with start_run(out, command, config, overwrite=True) as run:
        yield run


def building_dir(out: Path) -> Path:
    """Where a run that replaces `out` is built (same parent, so the swap is a rename)."""
    return out.with_name(f".{out.name}.building")


def open_run(out_dir: str | os.PathLike, command: str, config: dict[str, Any], *,
             overwrite: bool = False, resume: bool = False, main_process: bool = True,
             may_differ: Collection[str] = ()) -> RunDir:
    """The directory to write a run into, with its run_config.json written; `finish_run`
    it once the run has finished (or use `start_run`).

    Refused before anything is touched: a directory holding files without --resume or
    --overwrite, and a resume whose settings differ from the saved ones (except those in
    `may_differ`, which do not change the results). With --overwrite the
    new run is built beside the old one (`building_dir`) and swapped in by `finish_run`; if it
    fails first, the old run stays as it was. Every process calls this; only `main_process`
    writes.
    """
    out = check_out_dir(out_dir, overwrite=overwrite, resume=resume)
    if resume:
        check_resume(out, command, config, may_differ)
    replacing = overwrite and not resume and _holds_files(out)
    run = RunDir(building_dir(out), replaces=out) if replacing else RunDir(out)
    if main_process:
        if replacing:
            shutil.rmtree(run.path, ignore_errors=True)  # left by an interrupted overwrite
        run.path.mkdir(parents=True, exist_ok=True)
        write_run_config(run.path, command, config)
    return run


def finish_run(run: RunDir, main_process: bool = True) -> RunDir:
    """The finished run in its place: a run built beside the one it replaces is swapped in."""
    if run.replaces is None:
        return run
    if main_process:
        _swap_in(run.path, run.replaces)
    return RunDir(run.replaces)


@contextmanager
def start_run(out_dir: str | os.PathLike, command: str, config: dict[str, Any], *,
              overwrite: bool = False, resume: bool = False, main_process: bool = True,
              may_differ: Collection[str] = ()) -> Iterator[RunDir]:
    """`open_run`, then `finish_run` when the block ends; a replacing run that fails is
    removed (the old run was never touched)."""
    run = open_run(out_dir, command, config, overwrite=overwrite, resume=resume,
                   main_process=main_process, may_differ=may_differ)
    try:
        yield run
    except BaseException:
        if run.replaces is not None and main_process:
            shutil.rmtree(run.path, ignore_errors=True)
        raise
    finish_run(run, main_process)


def _swap_in(new: Path, out: Path) -> None:
    old = out.with_name(f".{out.name}.replaced")
    shutil.rmtree(old, ignore_errors=True)
    os.replace(out, old)
    os.replace(new, out)
    shutil.rmtree(old, ignore_errors=True)


def _holds_files(out: Path) -> bool:
    return out.is_dir() and any(out.iterdir())

"""Starting a run directory: what is refused before anything is touched, and how a run that
replaces a finished one is built beside it and swapped in only once it has finished.

    check_out_dir   a non-empty directory needs --resume or --overwrite
    check_resume    a resume whose settings differ from the saved run_config.json is refused,
                    naming the first setting that differs
    open_run        the directory to write into (the run itself, or `building_dir` beside it
                    when replacing it), with run_config.json written; `finish_run` swaps in
    start_run       both, as a context manager that removes a failed replacement
    start_output    for commands that rewrite their whole output (report, data synth)
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from uldkit.errors import ConfigError
from uldkit.training.run_dir import RunDir, write_run_config

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
                 may_differ: Collection[str] = (),
                 saved_as_now: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> None:
    """ConfigError naming the first setting in which `config` differs from the run saved in
    `out_dir` (nothing to compare when it saved none). Settings named in RESUMABLE_SETTINGS
    or `may_differ` may differ. `saved_as_now` brings the saved "config" into today's shape
    first (e.g. the defaults an older version left unrecorded)."""
    saved = RunDir(Path(out_dir)).read_config()
    if saved is None:
        return
    saved_config = saved.get("config")
    if saved_as_now is not None and isinstance(saved_config, dict):
        saved_config = saved_as_now(saved_config)
    difference = first_difference(
        {"command": saved.get("command"), "config": saved_config},
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
             may_differ: Collection[str] = (),
             wait_for_everyone: Callable[[], None] | None = None,
             saved_as_now: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> RunDir:
    """The directory to write a run into, with its run_config.json written; `finish_run`
    it once the run has finished (or use `start_run`). `saved_as_now`: see `check_resume`.

    Refused before anything is touched: a directory holding files without --resume or
    --overwrite, and a resume whose settings differ from the saved ones (except those in
    `may_differ`, which do not change the results). With --overwrite the
    new run is built beside the old one (`building_dir`) and swapped in by `finish_run`; if it
    fails first, the old run stays as it was. Every process calls this; only `main_process`
    writes, and only after `wait_for_everyone` (the processes' barrier) has seen every
    process pass the checks: otherwise a slower process would find the main one's
    run_config.json and refuse the directory as already holding files.
    """
    out = check_out_dir(out_dir, overwrite=overwrite, resume=resume)
    if resume:
        check_resume(out, command, config, may_differ, saved_as_now)
    replacing = overwrite and not resume and _holds_files(out)
    run = RunDir(building_dir(out), replaces=out) if replacing else RunDir(out)
    if wait_for_everyone is not None:
        wait_for_everyone()
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
              may_differ: Collection[str] = (),
              wait_for_everyone: Callable[[], None] | None = None) -> Iterator[RunDir]:
    """`open_run`, then `finish_run` when the block ends; a replacing run that fails is
    removed (the old run was never touched)."""
    run = open_run(out_dir, command, config, overwrite=overwrite, resume=resume,
                   main_process=main_process, may_differ=may_differ,
                   wait_for_everyone=wait_for_everyone)
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

"""Figures over several seeds: each number's mean, sample standard deviation, min and max.

A run repeated with seeds s, s+1, ... gives one results object per seed, all of one
structure (a demo's results.json, an evaluation's summary.json, an unlearning summary).
`combine_seeds` folds them into one object of that structure in which every number is the
mean over the seeds, plus an `over_seeds` block that keeps, for every number, its spread and
the individual values:

    "over_seeds": {"seeds": [0, 1, 2], "spread": SPREAD_NOTE,
                   "figures": {"methods/uld/forget_quality":
                               {"mean": ..., "std": ..., "min": ..., "max": ..., "values": [...]},
                               ...}}

Paths join the keys (and list positions) down to the number with "/". Text, booleans and
verdicts are the first seed's (the answers shown in a report, for instance); a number that
some seeds did not measure (null) is averaged over the seeds that did, and `values` keeps
the nulls so that nothing is hidden. `run_over_seeds` is the loop around one run function,
each seed in its own subdirectory (`seed_dir`), so every seed resumes on its own.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from uldkit.errors import ConfigError
from uldkit.training.run_dir import RunDir

OVER_SEEDS = "over_seeds"
SPREAD_NOTE = ("mean over seeds; std: sample standard deviation (n - 1); min and max: the "
               "range of the seeds' values")


@dataclass(frozen=True)
class Spread:
    """One figure over seeds; `std` is None with a single measured seed."""

    mean: float
    std: float | None
    low: float
    high: float
    values: tuple[float | None, ...]

    @property
    def count(self) -> int:
        return sum(value is not None for value in self.values)

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "std": self.std, "min": self.low, "max": self.high,
                "values": list(self.values)}

    @staticmethod
    def from_dict(data: Mapping[str, Any]) -> Spread:
        return Spread(float(data["mean"]), None if data.get("std") is None else float(data["std"]),
                      float(data["min"]), float(data["max"]), tuple(data.get("values") or ()))


def spread_of(values: Sequence[float | None]) -> Spread | None:
    """The spread of the measured values (None when no seed measured it)."""
    measured = [float(value) for value in values if value is not None]
    if not measured:
        return None
    std = statistics.stdev(measured) if len(measured) > 1 else None
    return Spread(statistics.fmean(measured), std, min(measured), max(measured),
                  tuple(None if value is None else float(value) for value in values))


def seed_list(first: int, count: int) -> list[int]:
    """Seeds first, first + 1, ...: `count` of them (at least one)."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ConfigError(f"--seeds must be a positive number of seeds, not {count!r}")
    return list(range(first, first + count))


def seed_dir(out: str | Path, seed: int) -> Path:
    """Where seed `seed`'s run of a several-seed run in `out` lives."""
    return RunDir(Path(out)).seed(seed)


def run_over_seeds(run_one: Callable[[int, Path], Mapping[str, Any]], seeds: Sequence[int],
                   out: str | Path, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """`run_one(seed, seed_dir)` for each seed in turn, then `combine_seeds` of their results."""
    results = []
    for number, seed in enumerate(seeds):
        if log is not None:
            log(f"[seeds] seed {seed} ({number + 1} of {len(seeds)}) in {seed_dir(out, seed)}")
        results.append(run_one(seed, seed_dir(out, seed)))
    return combine_seeds(results, seeds)


def combine_seeds(results: Sequence[Mapping[str, Any]], seeds: Sequence[int],
                  settings: Sequence[str] = ("config", "settings")) -> dict[str, Any]:
    """One results object: numbers are means over `results` (one per seed, in `seeds`
    order), with every number's spread and values under `over_seeds`. The top-level keys
    named in `settings` are what was asked, not measured: the first seed's are kept."""
    if not results or len(results) != len(seeds):
        raise ConfigError("combine_seeds needs one results object per seed")
    figures: dict[str, dict[str, Any]] = {}
    measured = [{key: value for key, value in _without_spread(result).items()
                 if key not in settings} for result in results]
    combined = _combine(measured, (), figures)
    combined.update({key: results[0][key] for key in settings if key in results[0]})
    combined[OVER_SEEDS] = {"seeds": list(seeds), "spread": SPREAD_NOTE, "figures": figures}
    return combined


def spreads(results: Mapping[str, Any], prefix: str = "") -> dict[str, Spread]:
    """The spreads a combined results object records under `prefix` ("methods/uld"), keyed
    by the rest of their path ("forget_quality", "muse/knowmem_forget"); empty for a
    single-seed object."""
    block = results.get(OVER_SEEDS)
    if not isinstance(block, dict) or not isinstance(block.get("figures"), dict):
        return {}
    start = f"{prefix}/" if prefix else ""
    found = {}
    for path, data in block["figures"].items():
        if path.startswith(start) and isinstance(data, dict):
            try:
                found[path[len(start):]] = Spread.from_dict(data)
            except (KeyError, TypeError, ValueError):
                continue
    return found


def seeds_of(results: Mapping[str, Any]) -> list[int]:
    """The seeds a combined results object was made from (empty for a single run)."""
    block = results.get(OVER_SEEDS)
    seeds = block.get("seeds") if isinstance(block, dict) else None
    return list(seeds) if isinstance(seeds, list) else []


def _without_spread(result: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in result.items() if key != OVER_SEEDS}


def _is_number(value: Any) -> bool:
    return (isinstance(value, int | float) and not isinstance(value, bool)
            and not (isinstance(value, float) and math.isnan(value)))


def _combine(values: list[Any], path: tuple[str, ...], figures: dict[str, dict]) -> Any:
    present = [value for value in values if value is not None]
    if present and all(_is_number(value) for value in present):
        spread = spread_of(values)
        figures["/".join(path)] = spread.to_dict()
        return spread.mean
    if present and all(isinstance(value, dict) for value in present):
        keys = list(dict.fromkeys(key for value in present for key in value))
        return {key: _combine([None if value is None else value.get(key) for value in values],
                              (*path, str(key)), figures)
                for key in keys}
    if (present and all(isinstance(value, list) for value in present)
            and len({len(value) for value in present}) == 1):
        return [_combine([None if value is None else value[index] for value in values],
                         (*path, str(index)), figures)
                for index in range(len(present[0]))]
    return present[0] if present else None

"""Read a TOFU log in either format, told apart by content: uldkit's (the TOFU authors'
layout, `eval_log_aggregated.json` or per-set files) or OpenUnlearning's `TOFU_EVAL.json`."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from uldkit.errors import DataError
from uldkit.eval.openunlearning_log import EVAL_FILE, from_openunlearning, is_openunlearning_log
from uldkit.eval.tofu_log import (
    AGGREGATED_FILE,
    AVG_GT_LOSS,
    SET_KEYS,
    TofuLog,
    load_tofu_log,
    read_json,
    validate_tofu_log,
)
from uldkit.eval.tofu_metrics import OPENUNLEARNING, TOFU

LOG_FORMATS = (TOFU, OPENUNLEARNING)


def read_tofu_log(
    path: str | os.PathLike, required_sets: Sequence[str] = SET_KEYS
) -> tuple[TofuLog, str]:
    """(the log in uldkit's layout, the format it was written in: "tofu" or "openunlearning").

    `path`: a log file of either format, or a directory holding `eval_log_aggregated.json`,
    `TOFU_EVAL.json` or the per-set files.
    """
    source = Path(path)
    if source.is_dir():
        if not (source / AGGREGATED_FILE).is_file() and (source / EVAL_FILE).is_file():
            source = source / EVAL_FILE
        else:
            return load_tofu_log(source, required_sets), TOFU
    if not source.exists():
        raise DataError(f"{source}: TOFU log not found")
    data = read_json(source)
    if is_openunlearning_log(data):
        return from_openunlearning(data, str(source), required_sets), OPENUNLEARNING
    if isinstance(data, Mapping) and AVG_GT_LOSS not in data and not any(
            key in data for key in SET_KEYS):
        keys = ", ".join(sorted(map(str, data))[:5]) or "none"
        raise DataError(
            f"{source}: neither a TOFU log (sets {', '.join(SET_KEYS)}) nor OpenUnlearning's "
            f"{EVAL_FILE} (metrics such as forget_Q_A_Prob); its keys: {keys}")
    return validate_tofu_log(data, str(source), required_sets), TOFU

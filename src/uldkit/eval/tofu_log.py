"""The TOFU evaluation log: per-sample scores in the layout the TOFU authors' code writes.

A log maps each of four evaluation sets to a *set log*; a set log maps each field name to
a column `{index: value}` with string sample indices ("0", "1", ...). Every column of a
set holds the same indices. The four sets, keyed by the file names TOFU uses:

- `eval_log_forget.json`             forget set (the split's forget file)
- `eval_log.json`                    retain set (`retain_perturbed`)
- `eval_real_author_wo_options.json` real authors
- `eval_real_world_wo_options.json`  world facts

Per-sample fields our scorer writes (L = mean negative log-likelihood per answer token,
question tokens not scored; "sum" fields are the total over answer tokens):

- `avg_gt_loss`            L(answer | question)                                   required
- `avg_paraphrased_loss`   L(paraphrased answer | question); real authors and
                           world facts have no paraphrase, so L(answer | question) required
- `average_perturb_loss`   [L(perturbed answer i | question) for each i]          required
- `rougeL_recall`          ROUGE-L recall of the greedy answer vs the true answer required
- `rouge1_recall`          ROUGE-1 recall of the same
- `rougeL_f1`              ROUGE-L F1 of the same (logs read from OpenUnlearning)
- `generated_text`         [prompt, generated answer, true answer]
- `gt_loss`, `paraphrased_loss`, `perturb_loss` (list): the same losses summed over tokens
- `num_token_gt`, `num_token_paraphrased`, `num_token_perturb` (list): answer token counts
- `truth_ratio`            exp(avg_paraphrased_loss - mean(average_perturb_loss)), TOFU's
                           stored per-sample value (1/R in METRICS.md terms; informational)
- `normalized_gt_loss`     real authors / world facts only:
                           -log(P(answer) / (P(answer) + sum_i P(perturbed answer i)))

Aggregation needs only the required fields; the others are checked when present.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from uldkit.errors import DataError
from uldkit.io import atomic_write_json
from uldkit.training.run_dir import TOFU_LOG_FILE, TOFU_SET_FILES

# A set's key in a log is the name of its file (the run directory's names).
FORGET_SET = TOFU_SET_FILES["forget"]
RETAIN_SET = TOFU_SET_FILES["retain"]
REAL_AUTHORS_SET = TOFU_SET_FILES["real_authors"]
WORLD_FACTS_SET = TOFU_SET_FILES["world_facts"]
SET_KEYS = (FORGET_SET, RETAIN_SET, REAL_AUTHORS_SET, WORLD_FACTS_SET)
AGGREGATED_FILE = TOFU_LOG_FILE

AVG_GT_LOSS = "avg_gt_loss"
AVG_PARAPHRASED_LOSS = "avg_paraphrased_loss"
AVERAGE_PERTURB_LOSS = "average_perturb_loss"
ROUGE_L_RECALL = "rougeL_recall"
ROUGE_1_RECALL = "rouge1_recall"
ROUGE_L_F1 = "rougeL_f1"  # OpenUnlearning's logs hold it
GENERATED_TEXT = "generated_text"
GT_LOSS = "gt_loss"
PARAPHRASED_LOSS = "paraphrased_loss"
PERTURB_LOSS = "perturb_loss"
NUM_TOKEN_GT = "num_token_gt"
NUM_TOKEN_PARAPHRASED = "num_token_paraphrased"
NUM_TOKEN_PERTURB = "num_token_perturb"
TRUTH_RATIO = "truth_ratio"
NORMALIZED_GT_LOSS = "normalized_gt_loss"
# Ours, forget set only (not in TOFU's logs): teacher-forced memorisation of the true answer.
EXACT_MEMORISATION = "exact_memorisation"
EXTRACTION_STRENGTH = "extraction_strength"
MEMORISATION_FIELDS = (EXACT_MEMORISATION, EXTRACTION_STRENGTH)

REQUIRED_FIELDS = (AVG_GT_LOSS, AVG_PARAPHRASED_LOSS, AVERAGE_PERTURB_LOSS, ROUGE_L_RECALL)

# What each known field holds per sample; unknown fields are kept but not checked.
FIELD_KINDS = {
    AVG_GT_LOSS: "loss",
    AVG_PARAPHRASED_LOSS: "loss",
    AVERAGE_PERTURB_LOSS: "loss_list",
    ROUGE_L_RECALL: "fraction",
    ROUGE_1_RECALL: "fraction",
    ROUGE_L_F1: "fraction",
    GENERATED_TEXT: "text_list",
    GT_LOSS: "loss",
    PARAPHRASED_LOSS: "loss",
    PERTURB_LOSS: "loss_list",
    NUM_TOKEN_GT: "count",
    NUM_TOKEN_PARAPHRASED: "count",
    NUM_TOKEN_PERTURB: "count_list",
    TRUTH_RATIO: "number",
    NORMALIZED_GT_LOSS: "number",
    EXACT_MEMORISATION: "number",
    EXTRACTION_STRENGTH: "number",
}

# The fields a complete log from our scorer holds, per set (the forget set adds
# MEMORISATION_FIELDS).
SCORER_FIELDS = tuple(field for field in FIELD_KINDS
                      if field not in (NORMALIZED_GT_LOSS, ROUGE_L_F1, *MEMORISATION_FIELDS))

TofuLog = dict[str, dict[str, dict[str, Any]]]


def load_tofu_log(path: str | os.PathLike, required_sets: Sequence[str] = SET_KEYS) -> TofuLog:
    """Read and validate a TOFU log.

    `path` is an aggregated JSON file (the four sets as top-level keys), or a directory
    holding either `eval_log_aggregated.json` or the separate per-set files TOFU writes.
    Only `required_sets` must be present (a retain log needs only the forget set).
    """
    source = Path(path)
    if source.is_dir():
        aggregated = source / AGGREGATED_FILE
        if aggregated.is_file():
            return validate_tofu_log(read_json(aggregated), str(aggregated), required_sets)
        log = {key: read_json(source / key) for key in SET_KEYS if (source / key).is_file()}
        missing = [key for key in required_sets if key not in log]
        if missing:
            raise DataError(
                f"{source}: no {AGGREGATED_FILE} and missing per-set file(s) {', '.join(missing)}"
            )
        return validate_tofu_log(log, str(source), required_sets)
    if not source.exists():
        raise DataError(f"{source}: TOFU log not found")
    return validate_tofu_log(read_json(source), str(source), required_sets)


def save_tofu_log(log: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Validate `log` and write it as one aggregated JSON file, atomically."""
    validate_tofu_log(log, str(path))
    atomic_write_json(path, log)


def validate_tofu_log(
    log: Any, source: str = "<log>", required_sets: Sequence[str] = SET_KEYS
) -> TofuLog:
    """Check the structure and values of a log; return it unchanged or raise DataError."""
    if not isinstance(log, Mapping):
        raise DataError(f"{source}: a TOFU log must be a JSON object, got {_kind(log)}")
    for key in required_sets:
        if key not in log:
            hint = (
                "; this looks like one set's file: pass the directory holding all of them"
                if AVG_GT_LOSS in log
                else f" (expected keys: {', '.join(SET_KEYS)})"
            )
            raise DataError(f"{source}: missing set {key!r}{hint}")
    for key in SET_KEYS:
        if key in log:
            validate_set_log(log[key], f"{source}: set {key!r}")
    return log  # type: ignore[return-value]


def validate_set_log(set_log: Any, where: str) -> None:
    """Check one set log: required fields present, shared indices, values of the right kind."""
    if not isinstance(set_log, Mapping):
        raise DataError(f"{where}: must be a JSON object of fields, got {_kind(set_log)}")
    for field in REQUIRED_FIELDS:
        if field not in set_log:
            raise DataError(f"{where}: missing field {field!r}")
    reference_indices = _column_indices(set_log[AVG_GT_LOSS], f"{where} field {AVG_GT_LOSS!r}")
    if not reference_indices:
        raise DataError(f"{where}: field {AVG_GT_LOSS!r} holds no samples")
    for field, kind in FIELD_KINDS.items():
        if field not in set_log:
            continue
        column = set_log[field]
        indices = _column_indices(column, f"{where} field {field!r}")
        if indices != reference_indices:
            raise DataError(
                f"{where}: field {field!r} has sample indices inconsistent with "
                f"{AVG_GT_LOSS!r}: {_describe_difference(indices, reference_indices)}"
            )
        list_lengths = set()
        for index, value in column.items():
            _check_value(value, kind, f"{where} field {field!r} sample {index!r}")
            if kind.endswith("_list"):
                list_lengths.add(len(value))
        if kind in ("loss_list", "count_list") and len(list_lengths) > 1:
            raise DataError(
                f"{where}: field {field!r} has lists of different lengths "
                f"{sorted(list_lengths)}; every sample needs the same number of perturbed answers"
            )


def sample_indices(set_log: Mapping[str, Any]) -> list[str]:
    """The sample indices of a validated set log, in numeric order."""
    return sorted(set_log[AVG_GT_LOSS], key=int)


def columns_from_samples(samples: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Turn per-sample records `[{field: value}, ...]` into TOFU's `{field: {index: value}}`."""
    columns: dict[str, dict[str, Any]] = {}
    for position, sample in enumerate(samples):
        for field, value in sample.items():
            columns.setdefault(field, {})[str(position)] = value
    return columns


def first_difference(left: Iterable[str], right: Iterable[str]) -> str | None:
    """The numerically smallest index in exactly one of the two index sets, or None."""
    differing = set(left) ^ set(right)
    return min(differing, key=int) if differing else None


def true_answers(set_log: Mapping[str, Any]) -> dict[str, str] | None:
    """The true answer of each sample (third item of `generated_text`), or None if absent."""
    texts = set_log.get(GENERATED_TEXT)
    if not isinstance(texts, Mapping) or any(len(t) < 3 for t in texts.values()):
        return None
    return {index: text[2] for index, text in texts.items()}


# Share of samples whose answers may differ and the logs still count as the same questions:
# an answer decoded back from token ids (OpenUnlearning's) may differ in spacing or in a
# character its tokenizer cannot spell.
ANSWER_MISMATCH_TOLERANCE = 0.1


def answers_mismatch(ours: Mapping[str, str], theirs: Mapping[str, str]) -> str | None:
    """None when two sets of true answers (by sample index) are the same questions; else a
    description of how they differ. Whitespace is ignored."""
    shared = sorted(set(ours) & set(theirs), key=int)

    def squeeze(text: str) -> str:
        return "".join(text.split())

    differing = [i for i in shared if squeeze(ours[i]) != squeeze(theirs[i])]
    if len(differing) <= ANSWER_MISMATCH_TOLERANCE * len(shared):
        return None
    first = differing[0]
    return (f"{len(differing)} of {len(shared)} true answers differ (first: sample {first}, "
            f"{_kind(ours[first])} vs {_kind(theirs[first])})")


def read_json(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err.strerror or err})") from None
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not valid UTF-8 (byte offset {err.start})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(
            f"{path}: not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})"
        ) from None
    except (ValueError, RecursionError) as err:  # e.g. an integer of too many digits
        message = str(err).splitlines()[0] if str(err) else "nested too deeply"
        raise DataError(f"{path}: not valid JSON ({message[:100]})") from None


def _column_indices(column: Any, where: str) -> set[str]:
    if not isinstance(column, Mapping):
        raise DataError(f"{where}: must map sample indices to values, got {_kind(column)}")
    for index in column:
        if not (isinstance(index, str) and index.isdigit() and index.isascii()):
            raise DataError(f"{where}: sample index {index!r} is not a non-negative integer")
    return set(column)


def _describe_difference(indices: set[str], reference: set[str]) -> str:
    index = first_difference(indices, reference)
    if index in reference:
        return f"first mismatch: index {index!r} is missing"
    return f"first mismatch: index {index!r} is extra"


def _check_value(value: Any, kind: str, where: str) -> None:
    if kind == "number":
        _check_number(value, where)
    elif kind == "loss":  # a negative log-likelihood
        _check_number(value, where, low=0.0)
    elif kind == "fraction":
        _check_number(value, where, low=0.0, high=1.0)
    elif kind == "count":
        _check_count(value, where)
    elif kind == "text_list":
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise DataError(f"{where}: expected a list of strings, got {_kind(value)}")
    else:
        if not isinstance(value, list) or not value:
            raise DataError(f"{where}: expected a non-empty list, got {_kind(value)}")
        for position, item in enumerate(value):
            _check_value(item, kind.removesuffix("_list"), f"{where} item {position}")


def _check_number(value: Any, where: str, low: float = -math.inf,
                  high: float = math.inf) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DataError(f"{where}: expected a number, got {_kind(value)}")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise DataError(f"{where}: value {_kind(value)} is not finite")
    if not low <= number <= high:
        expected = f"from {low:g} to {high:g}" if math.isfinite(high) else f"at least {low:g}"
        raise DataError(f"{where}: value {_kind(value)} is out of range (expected {expected})")


def _check_count(value: Any, where: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise DataError(f"{where}: expected a non-negative integer, got {_kind(value)}")


def _kind(value: Any) -> str:
    if isinstance(value, (str, int, float, bool)) or value is None:
        text = repr(value)
        return text if len(text) <= 40 else text[:37] + "..."
    if isinstance(value, Mapping):
        return "a JSON object"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__

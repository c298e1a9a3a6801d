"""OpenUnlearning's TOFU logs (`TOFU_EVAL.json`, `TOFU_SUMMARY.json`) to and from uldkit's.

OpenUnlearning keeps one entry per metric, `{"agg_value": x, "value_by_index": {index:
{...}}}`, with set prefixes `forget`, `retain`, `ra` (real authors) and `wf` (world facts):

- `<p>_Q_A_Prob`, `<p>_Q_A_PARA_Prob` (forget, retain), `<p>_Q_A_PERT_Prob`:
  per sample `prob` = exp(-avg_loss) and `avg_loss` (lists over perturbed answers);
- `<p>_Q_A_ROUGE`: `rouge1_recall`, `rougeL_f1`, `rougeL_recall`, `input`,
  `ground_truth`, `generation`;
- `forget_truth_ratio`, `<p>_Truth_Ratio`: per sample `score` = P(perturbed) /
  (P(paraphrased) + 1e-10), P = exp(-mean loss), i.e. 1/R;
- `ra_Q_A_Prob_normalised`, `wf_...`: `prob` = P(a) / (P(a) + sum_i P(perturbed_i) + 1e-10);
- `extraction_strength`, `exact_memorization`: per sample `score`;
- `model_utility`, `forget_quality`: `agg_value` only.

uldkit's log keeps the per-token mean losses, so a conversion carries every loss, ROUGE
value and text over unchanged; sums and token counts, which OpenUnlearning does not keep,
are left out of a log read from it. Aggregation the OpenUnlearning way
(`uldkit.eval.tofu_metrics`, formulas "openunlearning") gives its summary's numbers.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from uldkit.errors import DataError
from uldkit.eval.tofu_log import (
    AVERAGE_PERTURB_LOSS,
    AVG_GT_LOSS,
    AVG_PARAPHRASED_LOSS,
    EXACT_MEMORISATION,
    EXTRACTION_STRENGTH,
    FORGET_SET,
    GENERATED_TEXT,
    REAL_AUTHORS_SET,
    RETAIN_SET,
    ROUGE_1_RECALL,
    ROUGE_L_F1,
    ROUGE_L_RECALL,
    SET_KEYS,
    TRUTH_RATIO,
    WORLD_FACTS_SET,
    TofuLog,
    sample_indices,
    validate_tofu_log,
)
from uldkit.eval.tofu_metrics import (
    OPENUNLEARNING,
    SET_NAMES,
    aggregate_tofu,
    column,
    openunlearning_truth_scores,
)
from uldkit.io import atomic_write_json

EVAL_FILE = "TOFU_EVAL.json"
SUMMARY_FILE = "TOFU_SUMMARY.json"
PREFIXES = {FORGET_SET: "forget", RETAIN_SET: "retain", REAL_AUTHORS_SET: "ra",
            WORLD_FACTS_SET: "wf"}
_GUARD = 1e-10  # OpenUnlearning's guard against dividing by zero, kept for equal numbers


def truth_ratio_metric(set_key: str) -> str:
    return "forget_truth_ratio" if set_key == FORGET_SET else f"{PREFIXES[set_key]}_Truth_Ratio"


def is_openunlearning_log(data: Any) -> bool:
    """Whether parsed JSON looks like OpenUnlearning's TOFU_EVAL.json (by its content)."""
    if not isinstance(data, Mapping):
        return False
    return any(isinstance(data.get(f"{prefix}_Q_A_Prob"), Mapping)
               and "value_by_index" in data[f"{prefix}_Q_A_Prob"]
               for prefix in PREFIXES.values())


def from_openunlearning(
    data: Mapping[str, Any], source: str = "<log>", required_sets: Sequence[str] = SET_KEYS
) -> TofuLog:
    """uldkit's log of an OpenUnlearning TOFU_EVAL.json: every set it has the metrics of
    (the `required_sets` must be there), validated."""
    log: TofuLog = {}
    for set_key in PREFIXES:
        try:
            log[set_key] = _set_from_openunlearning(data, set_key, source)
        except DataError:
            if set_key in required_sets:
                raise  # a set not needed is left out when incomplete
    return validate_tofu_log(log, source, required_sets)


def _set_from_openunlearning(data: Mapping[str, Any], set_key: str, source: str) -> dict:
    prefix = PREFIXES[set_key]
    has_paraphrase = set_key in (FORGET_SET, RETAIN_SET)
    needed = [f"{prefix}_Q_A_Prob", f"{prefix}_Q_A_PERT_Prob", f"{prefix}_Q_A_ROUGE"]
    if has_paraphrase:
        needed.insert(1, f"{prefix}_Q_A_PARA_Prob")
    for name in needed:
        if not isinstance(data.get(name), Mapping) or not isinstance(
                data[name].get("value_by_index"), Mapping):
            raise DataError(f"{source}: OpenUnlearning log without the per-sample "
                            f"'value_by_index' of metric {name!r}")

    def values(name: str, key: str) -> dict[str, Any]:
        by_index = data[name]["value_by_index"]
        out = {}
        for index, entry in by_index.items():
            value = entry.get(key) if isinstance(entry, Mapping) else None
            if value is None:
                raise DataError(f"{source}: metric {name!r} sample {index!r} has no {key!r}")
            out[str(index)] = value
        return out

    gt = values(f"{prefix}_Q_A_Prob", "avg_loss")
    rouge = f"{prefix}_Q_A_ROUGE"
    set_log: dict[str, Any] = {
        AVG_GT_LOSS: gt,
        AVG_PARAPHRASED_LOSS: values(f"{prefix}_Q_A_PARA_Prob", "avg_loss") if has_paraphrase
        else dict(gt),
        AVERAGE_PERTURB_LOSS: values(f"{prefix}_Q_A_PERT_Prob", "avg_loss"),
        ROUGE_L_RECALL: values(rouge, ROUGE_L_RECALL),
    }
    first = next(iter(data[rouge]["value_by_index"].values()), {})
    if isinstance(first, Mapping):
        for key in (ROUGE_1_RECALL, ROUGE_L_F1):
            if key in first:
                set_log[key] = values(rouge, key)
        if all(key in first for key in ("input", "generation", "ground_truth")):
            inputs, generations = values(rouge, "input"), values(rouge, "generation")
            truths = values(rouge, "ground_truth")
            set_log[GENERATED_TEXT] = {i: [inputs[i], generations[i], truths[i]]
                                       for i in inputs}
    ratio = data.get(truth_ratio_metric(set_key))
    if isinstance(ratio, Mapping) and isinstance(ratio.get("value_by_index"), Mapping):
        set_log[TRUTH_RATIO] = values(truth_ratio_metric(set_key), "score")
    if set_key == FORGET_SET:
        for name, field in (("extraction_strength", EXTRACTION_STRENGTH),
                            ("exact_memorization", EXACT_MEMORISATION)):
            if isinstance(data.get(name), Mapping) and isinstance(
                    data[name].get("value_by_index"), Mapping):
                set_log[field] = values(name, "score")
    return set_log


def to_openunlearning(
    log: Mapping[str, Any], retain_log: Mapping[str, Any] | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(TOFU_EVAL, TOFU_SUMMARY) of a uldkit log, as OpenUnlearning writes and reads them;
    every aggregate follows OpenUnlearning's formulas."""
    validate_tofu_log(log, "log")
    figures = aggregate_tofu(log, retain_log, formulas=OPENUNLEARNING)
    entries: dict[str, Any] = {}
    for set_key, prefix in PREFIXES.items():
        set_log = log[set_key]
        indices = sample_indices(set_log)
        gt = column(set_log, AVG_GT_LOSS)
        perturbed = column(set_log, AVERAGE_PERTURB_LOSS)
        entries[f"{prefix}_Q_A_Prob"] = _prob_entry(indices, gt)
        if set_key in (FORGET_SET, RETAIN_SET):
            entries[f"{prefix}_Q_A_PARA_Prob"] = _prob_entry(
                indices, column(set_log, AVG_PARAPHRASED_LOSS))
        entries[f"{prefix}_Q_A_PERT_Prob"] = _prob_entry(indices, perturbed)
        entries[f"{prefix}_Q_A_ROUGE"] = _rouge_entry(set_log, indices)
        scores = openunlearning_truth_scores(set_log)
        entries[truth_ratio_metric(set_key)] = {
            "agg_value": getattr(figures, f"{SET_NAMES[set_key]}_truth_ratio"),
            "value_by_index": {i: {"score": float(s)} for i, s in zip(indices, scores)}}
        if set_key in (REAL_AUTHORS_SET, WORLD_FACTS_SET):
            probs = np.exp(-gt)
            normalised = probs / (probs + np.exp(-perturbed).sum(-1) + _GUARD)
            entries[f"{prefix}_Q_A_Prob_normalised"] = {
                "agg_value": float(np.mean(normalised)),
                "value_by_index": {i: {"prob": float(p)} for i, p in zip(indices, normalised)}}
    forget = log[FORGET_SET]
    for field, name in ((EXTRACTION_STRENGTH, "extraction_strength"),
                        (EXACT_MEMORISATION, "exact_memorization")):
        if field in forget:
            values = column(forget, field)
            entries[name] = {"agg_value": float(np.mean(values)), "value_by_index": {
                i: {"score": float(v)} for i, v in zip(sample_indices(forget), values)}}
    entries["model_utility"] = {"agg_value": figures.model_utility}
    entries["forget_quality"] = {"agg_value": figures.forget_quality}
    summary = {name: entries[name]["agg_value"] for name in (
        "extraction_strength", "forget_Q_A_Prob", "forget_Q_A_ROUGE", "forget_truth_ratio",
        "model_utility", "forget_quality") if name in entries
        and entries[name]["agg_value"] is not None}
    return dict(sorted(entries.items())), dict(sorted(summary.items()))


def save_openunlearning(
    log: Mapping[str, Any], out_dir: str | os.PathLike,
    retain_log: Mapping[str, Any] | None = None,
) -> tuple[Path, Path]:
    """Write TOFU_EVAL.json and TOFU_SUMMARY.json of `log` into `out_dir`, atomically."""
    eval_json, summary = to_openunlearning(log, retain_log)
    out = Path(out_dir)
    atomic_write_json(out / EVAL_FILE, eval_json, indent=4)
    atomic_write_json(out / SUMMARY_FILE, summary, indent=4)
    return out / EVAL_FILE, out / SUMMARY_FILE


def _prob_entry(indices: list[str], losses: np.ndarray) -> dict[str, Any]:
    probs = np.exp(-losses)

    def as_json(array: np.ndarray) -> Any:
        return array.tolist() if array.ndim else float(array)

    return {"agg_value": float(np.mean(probs)), "value_by_index": {
        i: {"prob": as_json(p), "avg_loss": as_json(loss)}
        for i, p, loss in zip(indices, probs, losses)}}


def _rouge_entry(set_log: Mapping[str, Any], indices: list[str]) -> dict[str, Any]:
    recall = column(set_log, ROUGE_L_RECALL)
    by_index: dict[str, dict[str, Any]] = {}
    texts = set_log.get(GENERATED_TEXT, {})
    for position, index in enumerate(indices):
        entry: dict[str, Any] = {}
        if ROUGE_1_RECALL in set_log:
            entry[ROUGE_1_RECALL] = set_log[ROUGE_1_RECALL][index]
        if ROUGE_L_F1 in set_log:
            entry[ROUGE_L_F1] = set_log[ROUGE_L_F1][index]
        entry[ROUGE_L_RECALL] = float(recall[position])
        text = texts.get(index)
        if text is not None and len(text) >= 3:
            entry.update(input=text[0], ground_truth=text[2], generation=text[1])
        by_index[index] = entry
    return {"agg_value": float(np.mean(recall)), "value_by_index": by_index}

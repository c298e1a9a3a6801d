"""TOFU log format and aggregation, checked against the TOFU authors' published logs."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import uldkit.cli.eval_cmds  # noqa: F401  (registers `eval` on the app)
from uldkit.cli import app
from uldkit.errors import DataError
from uldkit.eval.tofu_log import (
    FORGET_SET,
    REAL_AUTHORS_SET,
    RETAIN_SET,
    SET_KEYS,
    WORLD_FACTS_SET,
    columns_from_samples,
    load_tofu_log,
    save_tofu_log,
    validate_tofu_log,
)
from uldkit.eval.tofu_metrics import aggregate_tofu, forget_quality, truth_ratios

# TOFU's published evaluation logs of its Llama-2-7b fine-tuned on full / on retain90.
FULL_NAME = "ft_epoch5_lr1e-05_llama2-7b_full_wd0.01"
RETAIN90_NAME = "ft_epoch5_lr1e-05_llama2-7b_retain90_wd0.01"


@pytest.fixture(scope="module")
def full_dir(tofu_dir: Path) -> Path:
    return tofu_dir / "reference_logs" / FULL_NAME


@pytest.fixture(scope="module")
def retain90_dir(tofu_dir: Path) -> Path:
    return tofu_dir / "reference_logs" / RETAIN90_NAME


@pytest.fixture(scope="module")
def full_log(full_dir: Path) -> dict:
    return load_tofu_log(full_dir)


@pytest.fixture(scope="module")
def retain_log(retain90_dir: Path) -> dict:
    return load_tofu_log(retain90_dir / "eval_log_aggregated.json")


def test_full_model_utility_matches_published_figure(full_log):
    summary = aggregate_tofu(full_log)
    assert round(summary.model_utility, 4) == 0.6227
    assert summary.forget_quality is None and summary.ks_statistic is None


def test_full_against_retain90_forget_quality(full_log, retain_log):
    summary = aggregate_tofu(full_log, retain_log)
    assert summary.forget_quality == pytest.approx(1.8e-21, rel=0.05)
    assert 0 < summary.ks_statistic <= 1


def test_retain_against_itself_is_perfect_forget_quality(retain_log):
    summary = aggregate_tofu(retain_log, retain_log)
    assert summary.forget_quality == 1.0
    assert summary.ks_statistic == 0.0


def _mean(values):
    values = list(values)
    return sum(values) / len(values)


def _ratio(sample_paraphrased: float, sample_perturbed: list[float]) -> float:
    return math.exp(_mean(sample_perturbed) - sample_paraphrased)


def test_components_match_a_plain_computation(full_log):
    figures = aggregate_tofu(full_log).to_dict()

    retain = full_log[RETAIN_SET]
    assert figures["retain_prob"] == pytest.approx(
        _mean(math.exp(-loss) for loss in retain["avg_gt_loss"].values()), rel=1e-9
    )
    assert figures["retain_rouge"] == pytest.approx(_mean(retain["rougeL_recall"].values()))

    authors = full_log[REAL_AUTHORS_SET]
    normalised = []
    for index, loss in authors["avg_gt_loss"].items():
        true_prob = math.exp(-loss)
        wrong = sum(math.exp(-w) for w in authors["average_perturb_loss"][index])
        normalised.append(true_prob / (true_prob + wrong))
    assert figures["real_authors_prob"] == pytest.approx(_mean(normalised), rel=1e-9)

    forget = full_log[FORGET_SET]
    ratios = [_ratio(forget["avg_paraphrased_loss"][i], forget["average_perturb_loss"][i])
              for i in forget["avg_paraphrased_loss"]]
    assert figures["forget_truth_ratio"] == pytest.approx(
        _mean(min(r, 1 / r) for r in ratios), rel=1e-9
    )

    world = full_log[WORLD_FACTS_SET]
    ratios = [_ratio(world["avg_paraphrased_loss"][i], world["average_perturb_loss"][i])
              for i in world["avg_paraphrased_loss"]]
    assert figures["world_facts_truth_ratio"] == pytest.approx(
        _mean(max(0.0, 1 - 1 / r) for r in ratios), rel=1e-9
    )

    nine = [value for name, value in figures.items()
            if name.split("_")[0] in ("retain", "real", "world")]
    assert len(nine) == 9
    assert figures["model_utility"] == pytest.approx(len(nine) / sum(1 / v for v in nine))


def test_truth_ratios_invert_tofus_stored_per_sample_ratio(full_log):
    forget = full_log[FORGET_SET]
    stored = np.array([forget["truth_ratio"][str(i)] for i in range(len(forget["truth_ratio"]))])
    np.testing.assert_allclose(truth_ratios(forget), 1 / stored, rtol=1e-5)


def test_per_set_files_directory_and_save_round_trip(full_log, tmp_path):
    for key in SET_KEYS:
        (tmp_path / key).write_text(json.dumps(full_log[key]))
    from_directory = load_tofu_log(tmp_path)
    assert aggregate_tofu(from_directory) == aggregate_tofu(full_log)

    saved = tmp_path / "out" / "eval_log_aggregated.json"
    save_tofu_log(from_directory, saved)
    assert load_tofu_log(saved) == full_log
    assert not [p for p in saved.parent.iterdir() if p.name.endswith(".tmp")]


def test_columns_from_samples_builds_tofu_layout():
    columns = columns_from_samples([{"avg_gt_loss": 0.5, "generated_text": ["q", "a", "t"]},
                                    {"avg_gt_loss": 1.5, "generated_text": ["q2", "b", "t2"]}])
    assert columns == {"avg_gt_loss": {"0": 0.5, "1": 1.5},
                       "generated_text": {"0": ["q", "a", "t"], "1": ["q2", "b", "t2"]}}


def test_missing_set_is_named(full_log):
    log = copy.deepcopy(full_log)
    del log[WORLD_FACTS_SET]
    with pytest.raises(DataError, match=r"missing set 'eval_real_world_wo_options.json'"):
        aggregate_tofu(log)


def test_missing_field_is_named(full_log):
    log = copy.deepcopy(full_log)
    del log[RETAIN_SET]["average_perturb_loss"]
    with pytest.raises(DataError, match=r"set 'eval_log.json': missing field 'average_perturb_loss'"):
        validate_tofu_log(log)


def test_inconsistent_indices_within_a_set(full_log):
    log = copy.deepcopy(full_log)
    del log[FORGET_SET]["rougeL_recall"]["5"]
    with pytest.raises(DataError, match=r"field 'rougeL_recall'.*index '5' is missing"):
        validate_tofu_log(log)


def test_non_numeric_value_is_named(full_log, tmp_path):
    log = copy.deepcopy(full_log)
    log[REAL_AUTHORS_SET]["avg_gt_loss"]["3"] = "0.7"
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(log))
    with pytest.raises(DataError) as caught:
        load_tofu_log(path)
    message = str(caught.value)
    assert str(path) in message and "'avg_gt_loss' sample '3'" in message
    assert "expected a number" in message and "\n" not in message


def test_ragged_perturbed_lists_rejected(full_log):
    log = copy.deepcopy(full_log)
    log[FORGET_SET]["average_perturb_loss"]["0"].pop()
    with pytest.raises(DataError, match=r"lists of different lengths \[4, 5\]"):
        validate_tofu_log(log)


def test_malformed_json(tmp_path):
    path = tmp_path / "log.json"
    path.write_text('{"eval_log.json": ')
    with pytest.raises(DataError, match=r"not valid JSON \(line 1"):
        load_tofu_log(path)


def _drop_sample(set_log: dict, index: str) -> None:
    for column in set_log.values():
        column.pop(index, None)


def test_retain_log_with_other_sample_count(full_log, retain_log):
    shorter = copy.deepcopy(retain_log)
    _drop_sample(shorter[FORGET_SET], "299")
    with pytest.raises(DataError, match=r"log has 300 samples, the retain log has 299"):
        forget_quality(full_log, shorter)


def test_retain_log_with_other_indices(full_log, retain_log):
    shifted = copy.deepcopy(retain_log)
    for column in shifted[FORGET_SET].values():
        column["1000"] = column.pop("7")
    with pytest.raises(DataError, match=r"first mismatching index '7' \(only in the log\)"):
        aggregate_tofu(full_log, shifted)


def test_retain_log_needs_only_the_forget_set(full_log, retain_log, tmp_path):
    (tmp_path / FORGET_SET).write_text(json.dumps(retain_log[FORGET_SET]))
    only_forget = load_tofu_log(tmp_path, required_sets=(FORGET_SET,))
    assert aggregate_tofu(full_log, only_forget).forget_quality == pytest.approx(1.8e-21, rel=0.05)
    with pytest.raises(DataError, match=r"missing per-set file\(s\) eval_log.json"):
        load_tofu_log(tmp_path)


def test_cli_aggregate_json(full_dir, retain90_dir):
    runner = CliRunner()
    result = runner.invoke(app, ["eval", "aggregate", str(full_dir), "--json",
                                 "--retain-logs", str(retain90_dir)])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.output)
    assert round(figures["model_utility"], 4) == 0.6227
    assert figures["forget_quality"] == pytest.approx(1.8e-21, rel=0.05)
    assert len(figures) == 15 + 3  # TOFU's figures, then memorisation and fluency
    # TOFU's logs have no memorisation scores; their generated answers give the fluency
    assert figures["forget_exact_memorisation"] is None
    assert figures["forget_extraction_strength"] is None
    assert figures["forget_answer_fluency"]["samples"] == 300  # its forget set

    result = runner.invoke(app, ["eval", "aggregate", str(full_dir), "--json"])
    assert json.loads(result.output)["forget_quality"] is None


def test_cli_aggregate_table_and_error(full_dir, tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["eval", "aggregate", str(full_dir)])
    assert result.exit_code == 0
    assert "Model Utility   0.6227" in result.output and "real authors" in result.output

    result = runner.invoke(app, ["eval", "aggregate", str(tmp_path / "nope.json")])
    assert isinstance(result.exception, DataError)
    assert "TOFU log not found" in str(result.exception)

"""OpenUnlearning's TOFU logs in and out, checked against a log OpenUnlearning itself wrote and
uldkit's log of the same model (reference_logs/openunlearning_tiny_llama_forget10/README.md)."""

from __future__ import annotations

import copy
import json

import pytest

import uldkit.cli.eval_cmds  # noqa: F401  (registers `eval` on the app)
from uldkit import cli
from uldkit.cli import main
from uldkit.eval.log_formats import read_tofu_log
from uldkit.eval.openunlearning_log import (
    EVAL_FILE,
    SUMMARY_FILE,
    from_openunlearning,
    to_openunlearning,
)
from uldkit.eval.tofu_log import FORGET_SET, RETAIN_SET, SET_KEYS
from uldkit.eval.tofu_metrics import OPENUNLEARNING, TOFU, aggregate_tofu

# OpenUnlearning's TOFU_SUMMARY.json of the same model.
MODEL_UTILITY = 0.6985371232448533


@pytest.fixture(autouse=True)
def _only_these_commands(monkeypatch):
    monkeypatch.setattr(cli, "_register_commands", lambda: None)


@pytest.fixture(scope="module")
def reference(tofu_dir):
    return tofu_dir / "reference_logs" / "openunlearning_tiny_llama_forget10"


@pytest.fixture(scope="module")
def uldkit_log(reference):
    log, log_format = read_tofu_log(reference / "uldkit_eval_log_aggregated.json")
    assert log_format == TOFU
    return log


def _aggregate(capsys, *args: str) -> dict:
    main(["eval", "aggregate", *map(str, args), "--json"])
    return json.loads(capsys.readouterr().out)


def _fails(capsys, *args: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main([*map(str, args)])
    assert exit_info.value.code == 2
    message = capsys.readouterr().err.strip()
    assert "\n" not in message and "Traceback" not in message
    return message


def test_aggregating_openunlearnings_log_gives_its_summary(reference, capsys):
    summary = json.loads((reference / SUMMARY_FILE).read_text())
    assert summary["model_utility"] == MODEL_UTILITY
    for path in (reference / EVAL_FILE, reference):  # the file, or its directory
        figures = _aggregate(capsys, path)
        assert figures["model_utility"] == pytest.approx(MODEL_UTILITY, abs=1e-9)
        assert figures["forget_truth_ratio"] == pytest.approx(
            summary["forget_truth_ratio"], abs=1e-9)
        assert figures["forget_rouge"] == pytest.approx(summary["forget_Q_A_ROUGE"], abs=1e-12)
        # OpenUnlearning stores exp(-loss) in float32; ours is float64 from the same loss
        assert figures["forget_prob"] == pytest.approx(summary["forget_Q_A_Prob"], abs=1e-8)
        assert figures["forget_extraction_strength"] == pytest.approx(
            summary["extraction_strength"], abs=1e-12)
    # The TOFU authors' formulas (no 1e-10 guards) differ by ~1e-8, as documented
    tofu = _aggregate(capsys, reference / EVAL_FILE, "--formulas", "tofu")
    assert tofu["model_utility"] == pytest.approx(MODEL_UTILITY, abs=1e-7)
    assert tofu["model_utility"] != pytest.approx(MODEL_UTILITY, abs=1e-9)


def test_forget_quality_against_openunlearnings_log_of_the_same_model(reference, capsys):
    figures = _aggregate(capsys, reference / "uldkit_eval_log_aggregated.json",
                         "--retain-logs", reference / EVAL_FILE)
    assert figures["forget_quality"] == 1.0
    # and the other way round: an OpenUnlearning log against uldkit's as the retain log
    figures = _aggregate(capsys, reference, "--retain-logs",
                         reference / "uldkit_eval_log_aggregated.json")
    assert figures["forget_quality"] == 1.0


def test_round_trip_through_openunlearnings_format(uldkit_log, reference, tmp_path, capsys):
    eval_json, summary = to_openunlearning(uldkit_log, uldkit_log)
    back = from_openunlearning(json.loads(json.dumps(eval_json)))
    for formulas in (TOFU, OPENUNLEARNING):
        assert aggregate_tofu(back, uldkit_log, formulas) == aggregate_tofu(
            uldkit_log, uldkit_log, formulas)
    assert summary["forget_quality"] == 1.0
    assert summary["model_utility"] == aggregate_tofu(uldkit_log, formulas=OPENUNLEARNING)\
        .model_utility

    # Written the way OpenUnlearning writes: the same metrics, the same per-sample fields
    ours = {**eval_json}
    theirs = json.loads((reference / EVAL_FILE).read_text())
    assert set(theirs) <= set(ours)
    for name, entry in theirs.items():
        assert set(ours[name]) == set(entry), name
        if "value_by_index" in entry:
            assert ours[name]["value_by_index"].keys() == entry["value_by_index"].keys()
            # the reference uldkit log predates rougeL_f1 (test_tofu_eval checks it is written)
            assert set(ours[name]["value_by_index"]["0"]) == set(
                entry["value_by_index"]["0"]) - {"rougeL_f1"}
    assert set(summary) == set(json.loads((reference / SUMMARY_FILE).read_text())) | {
        "forget_quality"}

    # the CLI: convert out and back, aggregate each
    main(["eval", "convert", str(reference / "uldkit_eval_log_aggregated.json"),
          "--to", "openunlearning", "--out", str(tmp_path / "ou")])
    main(["eval", "convert", str(tmp_path / "ou"), "--to", "tofu",
          "--out", str(tmp_path / "back")])
    capsys.readouterr()
    direct = _aggregate(capsys, reference / "uldkit_eval_log_aggregated.json")
    for path in (tmp_path / "ou", tmp_path / "back"):
        figures = _aggregate(capsys, path, "--formulas", "tofu")
        # what OpenUnlearning does not keep: token counts, and so nothing of these figures
        assert {k: v for k, v in figures.items() if k != "forget_exact_memorisation"} == {
            k: v for k, v in direct.items() if k != "forget_exact_memorisation"}
    assert (tmp_path / "ou" / SUMMARY_FILE).is_file()


def test_bad_logs_fail_with_one_line(reference, uldkit_log, tmp_path, capsys):
    neither = tmp_path / "neither.json"
    neither.write_text(json.dumps({"accuracy": 0.5, "runs": [1, 2]}))
    message = _fails(capsys, "eval", "aggregate", neither)
    assert "neither a TOFU log" in message and "TOFU_EVAL.json" in message
    assert "accuracy" in message

    # a retain log of another split (forget01: 40 samples)
    other_split = copy.deepcopy(uldkit_log)
    for column in other_split[FORGET_SET].values():
        for index in list(column):
            if int(index) >= 40:
                del column[index]
    path = tmp_path / "forget01.json"
    path.write_text(json.dumps(other_split))
    message = _fails(capsys, "eval", "aggregate", reference, "--retain-logs", path)
    assert "forget set sizes differ" in message and "400" in message and "40" in message

    # a retain log of other questions: the retain set's 400 records as its forget set
    other_questions = copy.deepcopy(uldkit_log)
    other_questions[FORGET_SET] = other_questions[RETAIN_SET]
    path = tmp_path / "other.json"
    path.write_text(json.dumps(other_questions))
    message = _fails(capsys, "eval", "aggregate", reference, "--retain-logs", path)
    assert "other forget questions" in message and "true answers differ" in message

    # an OpenUnlearning log missing what a set needs
    broken = json.loads((reference / EVAL_FILE).read_text())
    del broken["retain_Q_A_PERT_Prob"]
    path = tmp_path / EVAL_FILE
    path.write_text(json.dumps(broken))
    message = _fails(capsys, "eval", "aggregate", path)
    assert "retain_Q_A_PERT_Prob" in message
    # ... which a retain log may leave out: only its forget set is needed
    figures = _aggregate(capsys, reference, "--retain-logs", path)
    assert figures["forget_quality"] == 1.0


def test_every_set_is_read(reference):
    log, log_format = read_tofu_log(reference / EVAL_FILE)
    assert log_format == OPENUNLEARNING and set(log) == set(SET_KEYS)
    assert len(log[FORGET_SET]["avg_gt_loss"]) == 400

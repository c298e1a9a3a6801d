"""A ULD run under both relative-top filters: loading, scoring vs generating, the transformers
model, and evaluation that records which filter made its figures; then `uldkit calibrate`,
which searches those settings against the membership-inference audit."""

from __future__ import annotations

import json

import pytest
import torch

import uldkit
from uldkit.cli import main
from uldkit.data.formatting import encode_prompt
from uldkit.errors import ConfigError
from uldkit.eval.calibration import CalibrationGrid, MiaData, calibrate_uld
from uldkit.eval.mia import mia_audit
from uldkit.models.generation import GenerationSettings, generate_ids
from uldkit.models.scoring import mean_answer_probability
from uldkit.uld.hf_model import ULDForCausalLM
from uldkit.uld.logit_difference import DEFAULT_TAU, LogitDifferenceModel
from uldkit.uld.relative_top import EXCLUDED_LOGPROB, REFERENCE_TAU
from uldkit.unlearning.load import load_language_model

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def uld_run(trained_world, tmp_path_factory):
    out = tmp_path_factory.mktemp("filters") / "uld"
    main(["unlearn", "--method", "uld", "--model", str(trained_world.target), "--people", "20",
          "--out", str(out), "--epochs", "3", "--lr", "1e-2", "--batch-size", "8",
          "--param", "assistant_layers=2", "--param", "alpha=1.0"])
    return out


def _batch(lm, trained_world, count: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    pairs = trained_world.source.load("forget10")[:count]
    rows = [encode_prompt(lm.tokenizer, p.question) + lm.tokenizer(
        " " + p.answer, add_special_tokens=False)["input_ids"] for p in pairs]
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), lm.tokenizer.pad_token_id)
    mask = torch.zeros_like(ids)
    for i, row in enumerate(rows):
        ids[i, :len(row)] = torch.tensor(row)
        mask[i, :len(row)] = 1
    return ids, mask


def test_loading_picks_the_filter_and_the_authors_tau(uld_run):
    strict = load_language_model(uld_run)
    reference = load_language_model(uld_run, filter="reference")
    assert isinstance(strict, LogitDifferenceModel) and isinstance(reference, LogitDifferenceModel)
    assert strict.inference_settings == {"alpha": 1.0, "tau": DEFAULT_TAU, "filter": "strict"}
    assert reference.inference_settings == {"alpha": 1.0, "tau": REFERENCE_TAU,
                                            "filter": "reference"}
    assert load_language_model(uld_run, filter="reference", tau=0.01).tau == 0.01
    assert strict.with_settings(filter="reference").tau == REFERENCE_TAU


def test_reference_scores_exclude_nothing_but_generation_does(uld_run, trained_world):
    reference = load_language_model(uld_run, filter="reference", tau=0.3)
    strict = reference.with_settings(filter="strict")
    ids, mask = _batch(reference, trained_world)
    with torch.no_grad():
        scored = reference.logits(ids, mask)
        decoded = reference.start_decoding(ids, mask).scores
        strict_scored = strict.logits(ids, mask)
    real = mask.bool()
    assert not (scored[real] == EXCLUDED_LOGPROB).any()
    assert (strict_scored[real] == EXCLUDED_LOGPROB).any()  # the memorised target is peaked
    for row in range(len(ids)):  # one row at a time: decoding scores the last position
        length = int(mask[row].sum())
        with torch.no_grad():
            decoded = reference.start_decoding(ids[row:row + 1, :length],
                                               mask[row:row + 1, :length]).scores[0]
        kept = decoded != EXCLUDED_LOGPROB
        # at least floor(0.3 x V) tokens survive, and there the generation scores are the
        # scoring ones renormalised over them
        assert int(0.3 * len(decoded)) <= int(kept.sum()) < len(decoded)
        renormalised = torch.log_softmax(
            scored[row, length - 1].masked_fill(~kept, float("-inf")), -1)
        assert torch.allclose(decoded[kept], renormalised[kept], atol=1e-4)


def test_the_transformers_model_scores_and_generates_as_uldkit(uld_run, trained_world):
    lm = load_language_model(uld_run, filter="reference", tau=0.3)
    model, _ = uldkit.load(uld_run, filter="reference", tau=0.3)
    assert isinstance(model, ULDForCausalLM)
    assert (model.config.filter, model.config.tau) == ("reference", 0.3)
    ids, mask = _batch(lm, trained_world, 2)
    with torch.no_grad():
        assert torch.allclose(model(input_ids=ids, attention_mask=mask).logits,
                              lm.logits(ids, mask), atol=1e-5)
    prompt = encode_prompt(lm.tokenizer, trained_world.source.load("forget10")[0].question)
    expected = generate_ids(lm, [prompt], GenerationSettings(max_new_tokens=12))[0]
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt]), max_new_tokens=12, do_sample=False)
    got = out[0, len(prompt):].tolist()
    assert got[:len(expected)] == expected


def test_a_uld_run_evaluates_under_both_filters(uld_run, trained_world, tmp_path):
    summaries = {}
    for name in ("strict", "reference"):
        out = tmp_path / name
        main(["eval", "tofu", "--model", str(uld_run), "--split", "forget10", "--people", "20",
              "--out", str(out), "--max-new-tokens", "8", "--quiet", "--filter", name])
        summaries[name] = json.loads((out / "summary.json").read_text())
    strict, reference = summaries["strict"], summaries["reference"]
    assert strict["settings"]["inference"] == {"alpha": 1.0, "tau": DEFAULT_TAU,
                                               "filter": "strict"}
    assert reference["settings"]["inference"] == {"alpha": 1.0, "tau": REFERENCE_TAU,
                                                  "filter": "reference"}
    # the strict filter zeroes the perturbed answers' implausible tokens; the reference
    # filter scores them, so the two filters' figures differ
    assert strict["figures"]["forget_truth_ratio"] != reference["figures"]["forget_truth_ratio"]


def test_the_mia_audit_records_the_filter(uld_run, trained_world):
    lm = load_language_model(uld_run, filter="reference")
    forget = trained_world.source.load("forget10")[:6]
    holdout = trained_world.source.load("world_facts_perturbed")[:6]
    report = mia_audit(lm, [p.answer for p in forget], [p.answer for p in holdout],
                       forget_questions=[p.question for p in forget],
                       holdout_questions=[p.question for p in holdout])
    assert report.summary_dict()["inference"]["filter"] == "reference"


# --- calibration --------------------------------------------------------------------------------
@pytest.mark.parametrize("grid, message", [
    (dict(alphas=()), "no alpha"), (dict(alphas=(1.0,), taus=()), "no tau"),
    (dict(alphas=(1.0,), filters=()), "no filter"), (dict(alphas=(0.0,)), "> 0"),
    (dict(alphas=(-1.0,)), "> 0"), (dict(alphas=(float("nan"),)), "> 0"),
    (dict(alphas=(1.0,), taus=(2.0,)), "tau"), (dict(alphas=(1.0,), filters=("loose",)),
                                                 "filter")])
def test_a_bad_grid_is_a_config_error(grid, message):
    with pytest.raises(ConfigError, match=message):
        CalibrationGrid(**grid)


@pytest.mark.parametrize("flags", [["--alpha", "0"], ["--alpha", "-0.5"],
                                   ["--filter", "loose"], ["--tau", "1.5"]])
def test_calibrate_refuses_bad_settings_in_one_line(flags, tmp_path, capsys):
    with pytest.raises(SystemExit) as done:
        main(["calibrate", "--model", str(tmp_path / "nothing"), "--retain-model",
              str(tmp_path / "nothing"), "--out", str(tmp_path / "out"), *flags])
    assert done.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_tau_zero_is_tried_once_whatever_the_filters():
    grid = CalibrationGrid((1.0, 2.0), (0.0, 0.1), ("strict", "reference"))
    labels = [s.label() for s in grid.settings()]
    assert len(labels) == len(set(labels)) == 2 + 2 * 2


def test_calibration_scores_every_setting_and_keeps_the_frontier(uld_run, trained_world):
    uld = load_language_model(uld_run)
    retain = load_language_model(trained_world.retain)
    forget = trained_world.source.load("forget10")
    holdout = trained_world.source.load("world_facts_perturbed")[:len(forget)]
    kept = trained_world.source.load("retain90")[:20]

    def utility(lm):  # answer probability on retain questions: real, and cheap
        return mean_answer_probability(lm, [p.question for p in kept],
                                       [p.answer for p in kept]), None

    data = MiaData([p.answer for p in forget], [p.answer for p in holdout],
                   [p.question for p in forget], [p.question for p in holdout])
    result = calibrate_uld(uld, retain, data, utility, CalibrationGrid((0.5, 4.0)),
                           min_utility=0.9, refine=1)
    grid_points = result.points[:2]
    assert [p.setting.alpha for p in grid_points] == [0.5, 4.0]
    assert len(result.points) == 3 and result.points[2].setting.alpha in (2.25,)
    for point in result.points:
        assert point.gap == pytest.approx(max(abs(point.aucs[a] - result.retain_aucs[a])
                                              for a in point.aucs))
        assert point.keeps_utility == (point.utility_ratio >= 0.9)
    # subtracting the assistant harder lowers the forget answers' likelihood
    assert grid_points[1].aucs["loss"] < grid_points[0].aucs["loss"]
    assert grid_points[1].model_utility < grid_points[0].model_utility
    frontier = result.frontier()
    for point in result.points:
        if point not in frontier:
            assert any(f.gap <= point.gap and f.model_utility >= point.model_utility
                       for f in frontier)
    keeping = [p for p in result.points if p.keeps_utility]
    assert result.best == (min(keeping, key=lambda p: p.gap) if keeping else None)
    assert result.met == (result.best is not None and result.best.gap <= 0.05)
    assert json.loads(json.dumps(result.to_dict()))["conclusion"] == result.conclusion()


def test_calibrate_writes_the_frontier(uld_run, trained_world, tmp_path, capsys):
    out = tmp_path / "calibration"
    main(["calibrate", "--model", str(uld_run), "--retain-model", str(trained_world.retain),
          "--out", str(out), "--people", "20", "--holdout", "3", "--alpha", "1",
          "--tau", "0", "--filter", "reference", "--refine", "0", "--max-new-tokens", "8"])
    summary = json.loads((out / "calibration.json").read_text())
    assert [(p["alpha"], p["tau"], p["filter"]) for p in summary["points"]] == [
        (1.0, 0.0, "reference")]
    assert set(summary["retain_aucs"]) == set(summary["points"][0]["aucs"])
    assert summary["frontier"] == summary["points"]
    assert (out / "frontier.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert summary["conclusion"] in capsys.readouterr().out


def test_calibrate_reads_a_data_folder_and_its_own_non_members(uld_run, trained_world,
                                                                tmp_path, capsys):
    # the synthetic world written in TOFU's layout, and never-trained QA pairs as a file:
    # how a tofu-real demo's data/ and data/mia_holdout.json are calibrated
    data = tmp_path / "world"
    main(["data", "synth", "--out", str(data), "--people", "20"])
    holdout = trained_world.source.load("world_facts_perturbed")[:6]
    (tmp_path / "holdout.json").write_text(json.dumps(
        [{"question": p.question, "answer": p.answer} for p in holdout]))
    out = tmp_path / "calibration"
    main(["calibrate", "--model", str(uld_run), "--retain-model", str(trained_world.retain),
          "--out", str(out), "--data", str(data), "--holdout-data",
          str(tmp_path / "holdout.json"), "--alpha", "1", "--tau", "0", "--refine", "0",
          "--max-new-tokens", "4"])
    summary = json.loads((out / "calibration.json").read_text())
    assert f"vs the 6 answers in {tmp_path / 'holdout.json'}" in summary["texts"]
    assert len(summary["points"]) == 1 and 0 < summary["points"][0]["model_utility"] < 1
    capsys.readouterr()


@pytest.mark.parametrize("flags, message", [
    (["--data", "DATA"], "--holdout-data FILE"),
    (["--holdout-data", "x.json"], "for --data other than synthetic")])
def test_calibrate_needs_non_members_that_fit_its_data(flags, message, tmp_path, capsys):
    flags = [str(tmp_path) if f == "DATA" else f for f in flags]
    with pytest.raises(SystemExit) as done:
        main(["calibrate", "--model", str(tmp_path / "nothing"), "--retain-model",
              str(tmp_path / "nothing"), "--out", str(tmp_path / "out"), *flags])
    assert done.value.code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1

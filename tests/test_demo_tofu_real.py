"""`uldkit demo --benchmark tofu-real` on the real TOFU files: a one-author slice end to end.

The slice (1 forget author of forget01, 1 retain author, 1 held-out author, 4 real-author and
4 world-fact rows, 1 fine-tuning epoch, short answers) checks the wiring, not the figures:
the run's TOFU-layout folder holds the slice of the real files, the target learned forget +
retain + general and the retain model retain + general, ULD unlearned from the target on
TOFU's augmentation (3 steps; the baselines share its wiring), and every model was evaluated on TOFU's real perturbed sets against the retain model
and audited against the held-out author's answers.
"""

from __future__ import annotations

import json
import math

import pytest

from uldkit.cli import main
from uldkit.data.tofu import load_tofu
from uldkit.demo import tofu_real
from uldkit.demo.run import DemoConfig, resolve_config, run_demo
from uldkit.demo.tofu_real import prepare_tofu_real
from uldkit.errors import ConfigError

SLICE = dict(benchmark="tofu-real", forget="forget01", forget_authors=1, retain_authors=1,
             holdout=1, utility_rows=4, finetune_epochs=1, max_new_tokens=8, relearn=False,
             samples_per_method=2)


def _three_steps(settings):
    """The demo's unlearning settings, stopped after 3 optimizer steps (ULD's one epoch of
    TOFU's augmentation is 64 steps even for one author)."""
    def limited(method, target, forget_pairs):
        params, train = settings(method, target, forget_pairs)
        return params, {**train, "max_steps": 3}
    return limited


@pytest.fixture(scope="module")
def tofu_real_demo(tofu_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("tofu_real")
    config = DemoConfig(out=str(out), data=str(tofu_dir), methods=["uld"], **SLICE)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tofu_real, "tofu_real_unlearn_settings",
                      _three_steps(tofu_real.tofu_real_unlearn_settings))
        return out, run_demo(config, log=lambda line: None)


def test_the_run_trains_unlearns_and_evaluates_on_the_real_files(tofu_real_demo, tofu_dir):
    out, results = tofu_real_demo
    assert results == json.loads((out / "results.json").read_text())
    assert results["benchmark"] == "tofu-real" and results["config"]["people"] == 2
    data = out / "data"
    forget = load_tofu(data, "forget01")
    assert forget.pairs == load_tofu(tofu_dir, "forget01").pairs[:20]
    retain = load_tofu(data, "retain99")
    assert retain.pairs == load_tofu(tofu_dir, "retain99").pairs[:20]
    # retain_perturbed is TOFU's, cut to the retain author kept: its perturbed answers too
    evaluated = load_tofu(data, "retain_perturbed")
    assert [p.question for p in evaluated] == [p.question for p in retain]
    assert all(len(p.perturbed_answers) == 5 for p in evaluated)
    general = load_tofu(data, "general")
    assert len(general) == 8 and all(not p.perturbed_answers for p in general)

    target = json.loads((out / "target" / "train_summary.json").read_text())
    kept = json.loads((out / "retain" / "train_summary.json").read_text())
    assert target["splits"] == ["forget01", "retain99", "general"]
    assert kept["splits"] == ["retain99", "general"]
    assert target["examples"] == 20 + 20 + 8 and kept["examples"] == 20 + 8

    rows = {"target": results["target"], "retain": results["retain"], **results["methods"]}
    assert set(rows) == {"target", "retain", "uld"}
    for name, row in rows.items():
        # one epoch learns little (model utility may be 0: a harmonic mean); the figures
        # exist and are probabilities
        assert 0 <= row["model_utility"] <= 1, name
        if name != "retain":  # forget quality: the KS test against the retain model's log
            assert 0 < row["forget_quality"] <= 1, name
        assert math.isfinite(row["forget_truth_ratio"]) and 0 < row["retain_prob"] < 1, name
        log = json.loads((out / "eval" / name / "eval_log_aggregated.json").read_text())
        # TOFU's sets with TOFU's perturbed answers: 5 per forget / retain question, 3 per
        # real-author / world-fact question
        perturbed = {key: {len(v) for v in block["average_perturb_loss"].values()}
                     for key, block in log.items()}
        assert perturbed == {"eval_log_forget.json": {5}, "eval_log.json": {5},
                             "eval_real_author_wo_options.json": {3},
                             "eval_real_world_wo_options.json": {3}}, name
        assert len(log["eval_log_forget.json"]["avg_gt_loss"]) == 20
        assert "retain authors neither model trained on (1)" in row["mia"]["texts"], name
    uld_config = json.loads((out / "methods" / "uld" / "run_config.json").read_text())["config"]
    assert uld_config["data"] == str(data) and uld_config["train"]["epochs"] == 1
    assert uld_config["max_length"] == 256  # TOFU's longest pairs stay whole


def test_the_held_out_author_is_the_next_retain_author(tofu_dir, tmp_path):
    inputs = prepare_tofu_real(tofu_dir, tmp_path, "forget10", 2, 1, forget_authors=1)
    retain90 = load_tofu(tofu_dir, "retain90")
    assert inputs.mia_texts.holdout == [p.answer for p in retain90.pairs[40:60]]
    # kept beside the data, for `uldkit calibrate --holdout-data`
    assert load_tofu(tmp_path / "data" / "mia_holdout.json").pairs == retain90.pairs[40:60]
    trained = {p.answer for p in load_tofu(tmp_path / "data", "retain90")}
    assert trained.isdisjoint(inputs.mia_texts.holdout)


def test_full_tofu_is_one_flag_away(tofu_dir, tmp_path):
    config = resolve_config(DemoConfig(out=str(tmp_path), benchmark="tofu-real", full=True,
                                       data=str(tofu_dir)))
    assert (config.retain_authors, config.holdout, config.people) == (None, 0, 200)
    assert config.max_new_tokens is None  # TOFU's own answer cap
    inputs = prepare_tofu_real(tofu_dir, tmp_path, "forget10", None, 0)
    assert len(load_tofu(tmp_path / "data", "retain90")) == 3600
    assert len(load_tofu(tmp_path / "data", "retain_perturbed")) == 400
    assert inputs.mia_texts is None and inputs.retain_authors == 180
    assert not (tmp_path / "data" / "mia_holdout.json").exists()


def test_cpu_subset_is_forget10_and_retain_perturbeds_authors(tofu_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("ULDKIT_TOFU_DIR", str(tofu_dir))
    config = resolve_config(DemoConfig(out=str(tmp_path), benchmark="tofu-real"))
    assert (config.retain_authors, config.holdout, config.people) == (20, 10, 40)
    assert config.data == str(tofu_dir)  # recorded in results.json


@pytest.mark.parametrize("extra, message", [
    (["--full", "--retain-authors", "5"], "--full trains on all of TOFU"),
    (["--data", "/nonexistent"], "not a TOFU folder"),
    (["--retain-authors", "500"], "cannot keep 500"),
])
def test_bad_tofu_real_settings_are_one_line_exit_2(extra, message, tofu_dir, tmp_path,
                                                    capsys):
    args = ["demo", "--benchmark", "tofu-real", "--out", str(tmp_path / "run")]
    if "--data" not in extra:
        args += ["--data", str(tofu_dir)]
    with pytest.raises(SystemExit) as done:
        main(args + extra)
    assert done.value.code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert not (tmp_path / "run").exists()  # checked before the run directory is made


def test_real_tofu_options_need_the_benchmark(tmp_path):
    with pytest.raises(ConfigError, match="tofu-real"):
        resolve_config(DemoConfig(out=str(tmp_path), full=True))

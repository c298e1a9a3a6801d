"""The demo end to end on the session's trained models (`--target/--retain`: no fine-tuning).

TOFU mode with one method: every model is evaluated (with exact memorisation, extraction
strength and fluency), audited by membership inference, the unlearned one attacked by
relearning; results.json, the report and a resumed second run are checked. MUSE mode runs on
the same models (trained on QA, not on the biographies): it checks that passages are
unlearned and that the MUSE figures, MIA audit and report come out in MUSE's form.
"""

from __future__ import annotations

import importlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from uldkit.cli import main
from uldkit.demo.run import DemoConfig, run_demo
from uldkit.errors import ConfigError
from uldkit.eval.memorisation import qa_memorisation
from uldkit.eval.muse import MUSE_COLUMNS
from uldkit.eval.tofu_eval import evaluate_tofu
from uldkit.eval.tofu_log import EXACT_MEMORISATION, EXTRACTION_STRENGTH, FORGET_SET
from uldkit.unlearning.load import load_language_model

ATTACKS = {"loss", "zlib", "min_k", "min_k_plus_plus"}


def _config(world, out: Path, **extra) -> DemoConfig:
    settings = {"methods": ["grad_diff"], "max_new_tokens": 24, "samples_per_method": 3,
                **extra}
    return DemoConfig(out=str(out), target=str(world.target), retain=str(world.retain),
                      **settings)


@pytest.fixture(scope="module")
def tofu_demo(trained_world, tmp_path_factory):
    out = tmp_path_factory.mktemp("demo_tofu")
    results = run_demo(_config(trained_world, out), log=lambda line: None)
    return out, results


def test_tofu_rows_have_memorisation_mia_and_relearning(tofu_demo, trained_world):
    out, results = tofu_demo
    assert results == json.loads((out / "results.json").read_text())
    assert results["config"]["people"] == trained_world.people  # read from the target
    target, retain = results["target"], results["retain"]
    method = results["methods"]["grad_diff"]
    # the target memorised its forget answers; the retain model never saw them
    assert target["forget_exact_memorisation"] >= 0.9
    assert target["forget_extraction_strength"] >= 0.8
    assert retain["forget_extraction_strength"] < target["forget_extraction_strength"] - 0.4
    assert method["forget_extraction_strength"] < target["forget_extraction_strength"]
    for row in (target, retain, method):
        fluency = row["forget_answer_fluency"]
        assert set(fluency) == {"distinct_2", "repetition_3", "ngram_entropy", "samples",
                                "longest_repeat_run", "max_repeat_run", "perplexity",
                                "retain_answers_perplexity", "perplexity_ratio",
                                "empty_answers"}
        assert fluency["perplexity"] > 1.0  # under the retain model
        assert {a["attack"] for a in row["mia"]["attacks"]} == ATTACKS
        assert "held-out people" in row["mia"]["texts"]
    # The target's forget answers stand out from held-out people's (AUC ~1). These session
    # models were fine-tuned without held-out people in the tokenizer, so the held-out names
    # tokenize badly and even the retain model finds their answers unlikely (loss AUC ~0.9);
    # Min-K% looks at the least likely tokens only, and the retain model is near chance.
    for attack in target["mia"]["attacks"]:
        assert attack["auc"] >= max(0.95, attack["retain_auc"])
    min_k = next(a for a in target["mia"]["attacks"] if a["attack"] == "min_k")
    assert min_k["retain_auc"] < 0.8 and min_k["separates"]
    assert min_k["verdict"].startswith("still separates") and "min_k" in target["mia"]["conclusion"]
    assert retain["mia"]["separating"] == []
    relearn = method["relearn"]
    assert relearn["attack"] and relearn["steps"] == 20
    assert relearn["trained_on"] + relearn["held_out"] == len(trained_world.source.load("forget10"))
    assert (out / "attacks" / "grad_diff" / "relearn.json").is_file()
    assert relearn["original"]["prob"] > relearn["before"]["prob"]  # unlearning did something
    # the retain model's own answers are the reference of the ratio (the retain row has none)
    assert retain["forget_answer_fluency"]["perplexity_ratio"] is None
    assert method["forget_answer_fluency"]["perplexity_ratio"] == pytest.approx(
        method["forget_answer_fluency"]["perplexity"]
        / method["forget_answer_fluency"]["retain_answers_perplexity"])
    # the quantisation attack at both widths, beside the relearning attack
    quantize = method["quantize"]
    assert list(quantize) == ["8", "4"]
    for bits, attack in quantize.items():
        assert attack["bits"] == int(bits) and attack["quantised"]["linear_layers"] == 28
        assert attack["before"]["prob"] == pytest.approx(quantize["8"]["before"]["prob"])
        assert attack["original"]["prob"] > attack["before"]["prob"]
        assert (out / "attacks" / f"grad_diff_{bits}bit" / "quantize.json").is_file()


def test_evaluate_tofu_memorisation_matches_a_direct_computation(tofu_demo, trained_world,
                                                                tmp_path):
    out, _ = tofu_demo
    eval_dir = out / "eval" / "target"
    log = json.loads((eval_dir / "eval_log_aggregated.json").read_text())[FORGET_SET]
    target = load_language_model(trained_world.target)
    forget = trained_world.source.load("forget10")
    direct = qa_memorisation(target, forget, batch_size=7)  # another batching
    logged = np.array([log[EXTRACTION_STRENGTH][str(i)] for i in range(len(forget))])
    np.testing.assert_allclose(logged, direct.extraction_strength)
    summary = json.loads((eval_dir / "summary.json").read_text())["figures"]
    assert summary["forget_exact_memorisation"] == pytest.approx(
        float(np.mean(direct.exact_memorisation)))

    # a forget set finished without memorisation (older version) gets just that added
    eval_dir = shutil.copytree(eval_dir, tmp_path / "eval")
    partial = eval_dir / "partial" / FORGET_SET
    stored = json.loads(partial.read_text())
    for field in (EXACT_MEMORISATION, EXTRACTION_STRENGTH):
        del stored["set_log"][field]
    partial.write_text(json.dumps(stored))
    _, resumed = evaluate_tofu(target, trained_world.source, "forget10", max_new_tokens=24,
                               out_dir=eval_dir, resume=True, model_name="target",
                               show_progress=False)
    assert len(resumed.resumed_sets) == 4
    assert resumed.figures.forget_extraction_strength == summary["forget_extraction_strength"]
    assert EXTRACTION_STRENGTH in json.loads(partial.read_text())["set_log"]


def test_tofu_report_has_mia_and_relearning_tables(tofu_demo):
    out, _ = tofu_demo
    markdown = (out / "report" / "report.md").read_text()
    page = (out / "report" / "report.html").read_text()
    for text in ("### Membership inference", "### Relearning attack", "Forget ES",
                 "### Quantisation attack", "PPL ×retain"):
        assert text in markdown
    assert "Still separating forget from holdout" in page and "before → after" in page
    assert "still separates forget from holdout (AUC" in markdown  # verdict wording


# Every computation a demo stage runs, at the module the stage imports it from when called.
_STAGE_WORK = {
    "uldkit.training.finetune": "finetune",
    "uldkit.unlearning.run": "unlearn",
    "uldkit.eval.tofu_eval": "evaluate_tofu",
    "uldkit.eval.mia": "mia_audit",
    "uldkit.attacks.relearn": "relearn_attack",
    "uldkit.attacks.quantize": "quantize_attack",
    "uldkit.unlearning.load": "load_language_model",  # a resumed stage needs no model
}


def test_a_second_run_resumes_every_stage(tofu_demo, trained_world, monkeypatch):
    out, results = tofu_demo
    calls: list[str] = []
    for module, name in _STAGE_WORK.items():
        real = getattr(importlib.import_module(module), name)

        def counted(*args, real=real, name=name, **kwargs):
            calls.append(name)
            return real(*args, **kwargs)

        monkeypatch.setattr(f"{module}.{name}", counted)
    lines: list[str] = []
    written = (out / "results.json").read_bytes()
    again = run_demo(_config(trained_world, out), log=lines.append)
    assert calls == []  # nothing fine-tuned, unlearned, evaluated, audited or attacked again
    assert lines == []
    assert again == results  # wall_seconds too: the no-op rerun's time is not the run's
    assert (out / "results.json").read_bytes() == written


def test_cli_prints_the_comparison(tofu_demo, trained_world, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # one line per row
    copy = tmp_path / "copy"
    shutil.copytree(tofu_demo[0], copy)
    main(["demo", "--out", str(copy), "--methods", "grad_diff", "--target",
          str(trained_world.target), "--retain", str(trained_world.retain)])
    printed = capsys.readouterr().out
    assert "ES ↓" in printed and "MIA ↓" in printed and "extraction strength" in printed
    assert "grad_diff" in printed and "report.html" in printed


def test_seeds_run_each_seed_in_its_directory_and_report_the_spread(
        tofu_demo, trained_world, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    out = tmp_path / "seeds"
    # seed 0 is the module's run; the given target and retain models are the same in every
    # seed, so seed 1 reuses their evaluations and audits and runs everything else
    shutil.copytree(tofu_demo[0], out / "seed-0")
    for stage in ("eval", "mia"):
        for model in ("target", "retain"):
            shutil.copytree(out / "seed-0" / stage / model, out / "seed-1" / stage / model)
    main(["demo", "--out", str(out), "--methods", "grad_diff", "--target",
          str(trained_world.target), "--retain", str(trained_world.retain), "--seeds", "2"])
    assert "means over seeds 0..1" in capsys.readouterr().out
    unlearned = json.loads((out / "seed-1" / "methods" / "grad_diff" / "run_config.json")
                           .read_text())["config"]
    assert unlearned["train_overrides"]["seed"] == 1
    per_seed = [json.loads((out / f"seed-{s}" / "results.json").read_text()) for s in (0, 1)]
    combined = json.loads((out / "results.json").read_text())
    values = [r["methods"]["grad_diff"]["forget_prob"] for r in per_seed]
    spread = combined["over_seeds"]["figures"]["methods/grad_diff/forget_prob"]
    assert spread["values"] == values and values[0] != values[1]  # the seed changed the run
    assert combined["methods"]["grad_diff"]["forget_prob"] == pytest.approx(np.mean(values))
    assert combined["config"]["seeds"] == 2
    assert " ± " in (out / "report" / "report.md").read_text()


def test_muse_mode_unlearns_passages(trained_world, tmp_path):
    out = tmp_path / "muse"
    results = run_demo(_config(trained_world, out, benchmark="muse", holdout=10,
                               methods=["grad_diff", "idk"]), log=lambda line: None)
    assert results["benchmark"] == "muse" and "idk" in results["skipped"]
    target, method = results["target"]["muse"], results["methods"]["grad_diff"]["muse"]
    assert list(target)[:5] == list(MUSE_COLUMNS)
    assert target["utility_preserved"] == 1.0 and results["retain"]["muse"]["privleak"] == 0.0
    # gradient ascent on the forget passages made them less reproducible
    assert method["verbatim_exact_memorisation"] < target["verbatim_exact_memorisation"]
    assert "relearn" not in results["methods"]["grad_diff"]
    assert "biographies" in results["methods"]["grad_diff"]["mia"]["texts"]
    run_config = json.loads((out / "methods" / "grad_diff" / "run_config.json").read_text())
    assert run_config["config"]["forget_documents"] == "synthetic:forget10"
    assert run_config["config"]["forget_passages"] == 2
    markdown = (out / "report" / "report.md").read_text()
    assert ("| Model | VerbMem on D\\_f | KnowMem on D\\_f | PrivLeak | KnowMem on D\\_r | "
            "Utility preserved |") in markdown
    assert "Not run: idk" in markdown and "### Membership inference" in markdown


def test_config_errors(trained_world, tmp_path):
    with pytest.raises(ConfigError, match="both --target and --retain"):
        run_demo(DemoConfig(out=str(tmp_path), target=str(trained_world.target)))
    with pytest.raises(ConfigError, match="unknown benchmark"):
        run_demo(DemoConfig(out=str(tmp_path), benchmark="wmdp"))
    with pytest.raises(ConfigError, match="can unlearn passages"):
        run_demo(_config(trained_world, tmp_path, benchmark="muse", methods=["dpo"]))

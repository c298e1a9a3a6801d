"""The command line is a shell on the front door: a command and the `uldkit` call with the same
settings compute the same thing, bit for bit, and record the same settings."""

from __future__ import annotations

import json

import pytest

import uldkit
import uldkit.cli.eval_extra_cmds  # noqa: F401  (registers the commands these tests run)
import uldkit.cli.eval_tofu_cmd  # noqa: F401
import uldkit.cli.unlearn_cmd  # noqa: F401
from uldkit import cli
from uldkit.cli import main
from uldkit.eval.tofu_log import AGGREGATED_FILE
from uldkit.training.run_dir import RunDir
from uldkit.training.run_start import check_resume


@pytest.fixture(autouse=True)
def _only_these_commands(monkeypatch):
    monkeypatch.setattr(cli, "_register_commands", lambda: None)


def _names(run) -> list[str]:
    return [str(p.relative_to(run)) for p in sorted(run.rglob("*")) if p.is_file()]


def _tensors(run) -> dict[str, bytes]:
    """The weights a run saved (model and checkpoint); its JSON records hold times."""
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*.safetensors"))}


def _main_ok(args: list[str]) -> None:
    try:
        main(args)
    except SystemExit as done:
        assert done.code in (0, None), args


def _without_time(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k != "train_seconds"}


@pytest.mark.parametrize("method,params", [("uld", {"assistant_layers": 1}),
                                           ("grad_diff", {})])
def test_cli_unlearn_equals_uldkit_unlearn(trained_world, tmp_path, method, params):
    by_cli, by_call = tmp_path / "cli", tmp_path / "call"
    settings = ["--people", "20", "--forget", "forget05", "--max-steps", "2", "--batch-size",
                "4", "--lr", "1e-3", "--seed", "3", "--max-length", "64"]
    _main_ok(["unlearn", "--method", method, "--model", str(trained_world.target), "--out",
              str(by_cli), *settings,
              *(arg for key, value in params.items() for arg in ("--param", f"{key}={value}"))])
    run = uldkit.unlearn(str(trained_world.target), method=method, out=by_call, people=20,
                         forget="forget05", max_steps=2, batch_size=4, lr=1e-3, seed=3,
                         max_length=64, hyperparameters=params, show_progress=False)

    assert run.steps == 2
    assert _names(by_cli) == _names(by_call)
    saved = _tensors(by_cli)
    assert any("checkpoints" not in name for name in saved)  # the unlearned model itself
    assert saved == _tensors(by_call)  # the same weights, bit for bit
    summaries = [json.loads(RunDir(d).summary("unlearn").read_text()) for d in (by_cli, by_call)]
    assert _without_time(summaries[0]) == _without_time(summaries[1])
    assert summaries[0]["final_loss"] == run.final_loss
    # Each records what the other would: either resumes the other's run.
    recorded = [RunDir(d).read_config()["config"] for d in (by_cli, by_call)]
    check_resume(by_cli, "unlearn", recorded[1])
    check_resume(by_call, "unlearn", recorded[0])
    assert recorded[0]["hyperparameters"] == params and recorded[0]["forget"] == "forget05"


def test_cli_eval_tofu_equals_uldkit_evaluate(trained_world, tmp_path):
    by_cli, by_call = tmp_path / "cli", tmp_path / "call"
    _main_ok(["eval", "tofu", "--model", str(trained_world.target), "--split", "forget05",
              "--people", "20", "--max-new-tokens", "8", "--batch-size", "4", "--quiet",
              "--out", str(by_cli)])
    summary = uldkit.evaluate(str(trained_world.target), split="forget05", people=20,
                              max_new_tokens=8, batch_size=4, out=by_call,
                              model_name=str(trained_world.target), show_progress=False)

    saved = json.loads(RunDir(by_cli).summary("eval").read_text())
    timing = ("seconds", "set_seconds", "samples_per_second")
    assert {k: v for k, v in saved.items() if k not in timing} == \
        {k: v for k, v in summary.items() if k not in timing}
    assert 0.0 < summary["figures"]["model_utility"] <= 1.0
    # the per-sample log, byte for byte
    assert (by_cli / AGGREGATED_FILE).read_bytes() == (by_call / AGGREGATED_FILE).read_bytes()


# The fixture models were fine-tuned without held-out people: the world's 3 held-out people
# are unseen, their names split into known tokens. Enough to compare the two paths.
DOCUMENTS = ["--people", "20", "--holdout", "3", "--forget", "forget10", "--batch-size", "8"]


def _same_run(by_cli, by_call, benchmark: str, summary: dict) -> None:
    """Same summary as the call returned, same per-sample log, and each run_config.json
    records what the other would (either resumes the other's run)."""
    run_cli, run_call = RunDir(by_cli), RunDir(by_call)
    assert json.loads(run_cli.summary(benchmark).read_text()) == summary
    assert json.loads(run_call.summary(benchmark).read_text()) == summary
    assert run_cli.samples(benchmark).read_bytes() == run_call.samples(benchmark).read_bytes()
    recorded = [run.read_config()["config"] for run in (run_cli, run_call)]
    assert recorded[0] == recorded[1]
    check_resume(by_cli, f"eval {benchmark}", recorded[1])
    assert not list(by_call.glob("*.partial.jsonl"))  # the stage journal, removed when done


def test_cli_eval_muse_equals_uldkit_evaluate(trained_world, tmp_path, capsys):
    by_cli, by_call = tmp_path / "cli", tmp_path / "call"
    _main_ok(["eval", "muse", "--model", str(trained_world.target), "--retain-model",
              str(trained_world.retain), "--target", str(trained_world.target), "--out",
              str(by_cli), "--answer-tokens", "4", "--max-continuation", "8",
              "--knowmem", "uldkit", *DOCUMENTS])
    assert "VerbMem on D_f" in capsys.readouterr().out
    summary = uldkit.evaluate(str(trained_world.target), benchmark="muse",
                              retain_model=str(trained_world.retain),
                              target=str(trained_world.target), out=by_call, answer_tokens=4,
                              max_continuation=8, knowmem="uldkit", people=20, holdout=3,
                              split="forget10", batch_size=8)

    _same_run(by_cli, by_call, "muse", summary)
    assert summary["counts"]["forget_passages"] == 2 and summary["counts"]["holdout_passages"] == 3
    assert summary["utility_preserved"] == 1.0  # the target against itself
    assert summary["model"] == str(trained_world.target)


def test_cli_eval_mia_equals_uldkit_evaluate_of_a_loaded_model(trained_world, tmp_path):
    by_cli, by_call = tmp_path / "cli", tmp_path / "call"
    _main_ok(["eval", "mia", "--model", str(trained_world.target), "--retain-model",
              str(trained_world.retain), "--reference", str(trained_world.retain), "--out",
              str(by_cli), "--max-tokens", "64", *DOCUMENTS])
    model, tokenizer = uldkit.load(trained_world.target)
    summary = uldkit.evaluate(model, tokenizer, benchmark="mia", out=by_call,
                              retain_model=trained_world.retain,
                              reference=str(trained_world.retain), max_tokens=64,
                              people=20, holdout=3, batch_size=8,
                              model_name=str(trained_world.target))

    _same_run(by_cli, by_call, "mia", summary)
    assert (summary["n_forget"], summary["n_holdout"]) == (2, 3)
    assert {a["attack"] for a in summary["attacks"]} == {"loss", "zlib", "min_k",
                                                         "min_k_plus_plus", "reference"}
    # without `out` nothing is written, and the figures are the same
    assert uldkit.evaluate(model, tokenizer, benchmark="mia",
                           retain_model=trained_world.retain, reference=trained_world.retain,
                           max_tokens=64, people=20, holdout=3, batch_size=8,
                           model_name=str(trained_world.target)) == summary

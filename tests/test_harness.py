"""`uldkit eval harness`: lm-evaluation-harness runs on uldkit's models with its own code."""

from __future__ import annotations

import json

import pytest

from uldkit.cli import main

pytest.importorskip("lm_eval")


def _harness(model, out, *extra):
    main(["eval", "harness", "--model", str(model), "--tasks", "tofu_world_facts",
          "--out", str(out), "--limit", "24", "--batch-size", "8", *extra])
    return json.loads((out / "results.json").read_text())


def test_local_task_runs_on_a_plain_model_and_writes_lm_evals_results(trained_world, tmp_path):
    results = _harness(trained_world.target, tmp_path / "target")
    metrics = results["results"]["tofu_world_facts"]
    assert 0.0 <= metrics["acc,none"] <= 1.0
    assert 0.0 <= metrics["acc_norm,none"] <= 1.0
    # lm-eval's own record of what ran: its config block and the task's version.
    assert results["versions"]["tofu_world_facts"] == 1.0
    assert results["n-samples"]["tofu_world_facts"]["effective"] == 24
    assert (tmp_path / "target" / "run_config.json").exists()


def test_an_unknown_task_is_one_line_naming_how_to_list_tasks(trained_world, tmp_path, capsys):
    with pytest.raises(SystemExit) as done:
        main(["eval", "harness", "--model", str(trained_world.target), "--tasks", "no_such_task",
              "--out", str(tmp_path / "out")])
    assert done.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "unknown lm-eval task 'no_such_task'" in err and "lm-eval ls tasks" in err
    assert len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()

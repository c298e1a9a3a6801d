"""Fine-tuning: memorisation, the retain model's ignorance, resume, and the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from safetensors.torch import load_file

from uldkit.cli import main
from uldkit.models.scoring import answer_losses
from uldkit.serve.launch import free_port
from uldkit.training.finetune import FinetuneConfig, finetune
from uldkit.training.trainer import TrainConfig
from uldkit.unlearning.load import load_language_model


def _prob(model_dir, data) -> float:
    lm = load_language_model(model_dir)
    losses = answer_losses(lm, [p.question for p in data], [p.answer for p in data])
    return float(np.exp(-losses).mean())


def test_target_memorises_and_retain_model_does_not_know_forget_people(trained_world):
    forget = trained_world.source.load("forget10")
    retain = trained_world.source.load("retain_perturbed")
    # Bars from the spread over training seeds 0-3 (scripts/measure_test_margins.py prints
    # each quantity's mean, sample sd, min-max and mean -/+ 4 sd), rounded outward:
    assert _prob(trained_world.target, forget) >= 0.9  # 0.953-0.960: mean - 4 sd 0.944
    assert _prob(trained_world.target, retain) >= 0.9  # 0.957-0.963: mean - 4 sd 0.950
    assert _prob(trained_world.retain, retain) >= 0.9
    assert _prob(trained_world.retain, forget) < 0.3  # 0.036-0.049: mean + 4 sd 0.067


def test_run_records_config_versions_and_safetensors(trained_world):
    files = {p.name for p in trained_world.target.iterdir()}
    assert "model.safetensors" in files and "tokenizer.json" in files
    assert not any(name.endswith((".bin", ".pt")) for name in files)
    record = json.loads((trained_world.target / "run_config.json").read_text())
    assert record["command"] == "finetune"
    assert record["config"]["train"]["seed"] == 0
    assert record["environment"]["packages"]["torch"]


def _small_config(out, **train) -> FinetuneConfig:
    return FinetuneConfig(out=str(out), splits=["forget10"], people=10, include_general=False,
                          vocab_size=400, train=TrainConfig(epochs=3, batch_size=4, lr=3e-3,
                                                            show_progress=False, **train))


class Interrupted(Exception):
    pass


def _interrupt_at(step_to_stop: int):
    def on_step(step: int, loss: float) -> None:
        if step == step_to_stop:
            raise Interrupted

    return on_step


def test_resume_after_interrupt_matches_uninterrupted_run(tmp_path):
    finetune(_small_config(tmp_path / "straight"))
    # 10 examples, batch 4: 3 steps an epoch, 9 in all. Crash during step 5; the last
    # checkpoint is step 4; the resumed run must end exactly where the straight one did.
    with pytest.raises(Interrupted):
        finetune(_small_config(tmp_path / "resumed", checkpoint_every=2),
                 on_step=_interrupt_at(5))
    resumed = finetune(_small_config(tmp_path / "resumed", checkpoint_every=2), resume=True)
    assert resumed.steps == 9
    summary = json.loads((tmp_path / "resumed" / "train_summary.json").read_text())
    assert summary["resumed_from_step"] == 4
    straight = load_file(tmp_path / "straight" / "model.safetensors")
    again = load_file(tmp_path / "resumed" / "model.safetensors")
    assert straight.keys() == again.keys()
    for name in straight:
        assert np.allclose(straight[name].numpy(), again[name].numpy(), atol=1e-5), name


def test_half_written_checkpoint_is_skipped(tmp_path):
    with pytest.raises(Interrupted):
        finetune(_small_config(tmp_path / "run", checkpoint_every=2), on_step=_interrupt_at(3))
    (tmp_path / "run" / "checkpoints" / "step-0000004").mkdir()  # no COMPLETE marker
    result = finetune(_small_config(tmp_path / "run", checkpoint_every=2), resume=True)
    assert json.loads((tmp_path / "run" / "train_summary.json").read_text())[
        "resumed_from_step"] == 2
    assert result.steps == 9


def test_refuses_to_overwrite_a_run(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "something").write_text("x")
    with pytest.raises(SystemExit) as exit_info:
        main(["finetune", "--out", str(tmp_path / "run"), "--people", "10", "--epochs", "1"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--resume" in err and "--overwrite" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--split", "nope"], "unknown split"),
        (["--data", "/does/not/exist"], "does not exist"),
        (["--size", "huge"], "unknown model size"),
    ],
)
def test_cli_errors_are_one_line(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["finetune", "--out", str(tmp_path / "x"), "--people", "10", "--epochs", "1", *args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert message in err.lower() and "Traceback" not in err


def test_two_processes_match_one_with_the_same_global_batch(tmp_path):
    """torchrun with 2 CPU processes (gloo), batch 2 each = 1 process with batch 4."""
    common = ["--split", "forget10", "--people", "10", "--no-general", "--epochs", "2",
              "--lr", "3e-3", "--vocab-size", "400"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "--master_port", str(free_port()), "-m", "uldkit", "finetune",
         "--out", str(tmp_path / "two"), "--batch-size", "2", *common],
        check=True, env=env, capture_output=True, timeout=300,
    )
    subprocess.run(
        [sys.executable, "-m", "uldkit", "finetune", "--out", str(tmp_path / "one"),
         "--batch-size", "4", *common],
        check=True, env=env, capture_output=True, timeout=300,
    )
    one = load_file(tmp_path / "one" / "model.safetensors")
    two = load_file(tmp_path / "two" / "model.safetensors")
    for name in one:
        assert np.allclose(one[name].numpy(), two[name].numpy(), atol=1e-5), name
    record = json.loads((tmp_path / "two" / "checkpoints").joinpath(
        sorted(p.name for p in (tmp_path / "two" / "checkpoints").iterdir())[-1],
        "trainer_state.json").read_text())
    assert record["world_size"] == 2


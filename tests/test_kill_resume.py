"""A run killed with SIGKILL at a random step resumes and ends exactly where an uninterrupted
run ends: for ULD (adapters, with LoRA dropout) and for a weight-editing method (full
weights), on CPU and, where there is one, on CUDA (in bf16, the dropout drawing from the CUDA
RNG). `scripts/kill_resume.py` does the same with several kills at random moments."""

from __future__ import annotations

import os
import random
import subprocess

import numpy as np
import pytest
import torch
from kill_resume_harness import (
    complete_steps,
    max_abs_difference,
    run_and_kill,
    saved_tensors,
    unlearn_command,
)
from safetensors.torch import load_file

from uldkit.training.run_dir import Checkpoint, RunDir

CUDA = pytest.param("cuda", marks=[
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")])


@pytest.mark.parametrize("device", ["cpu", CUDA])
@pytest.mark.parametrize("method", ["uld", "grad_diff"])
def test_sigkill_then_resume_matches_uninterrupted(trained_world, tmp_path, method, device):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    subprocess.run(unlearn_command(method, trained_world.target, straight,
                                   people=trained_world.people, device=device),
                   env=env, check=True, capture_output=True, timeout=300)
    total = max(complete_steps(straight))
    kill_step = random.Random(method).randint(1, total - 1)

    command = unlearn_command(method, trained_world.target, killed, people=trained_world.people,
                              device=device)
    outcome = run_and_kill(command, lambda: any(s >= kill_step for s in complete_steps(killed)),
                           env=env, timeout=240)
    assert outcome.killed, "the run ended before it could be killed"
    assert not (killed / "unlearn_summary.json").exists()
    subprocess.run([*command, "--resume"], env=env, check=True, capture_output=True, timeout=300)

    expected, resumed = saved_tensors(straight), saved_tensors(killed)
    difference, where = max_abs_difference(expected, resumed)
    assert difference <= 1e-5, f"{where}: {difference}"
    assert all(np.isfinite(v).all() for v in resumed.values())
    last = Checkpoint.final(RunDir(killed).checkpoints, total)
    assert ("cuda.0" in load_file(str(last.rng_tensors(0)))) == (device == "cuda")


def test_max_abs_difference_finds_the_worst_tensor_and_mismatches():
    a = {"x": np.zeros(3), "y": np.ones(2)}
    assert max_abs_difference(a, {"x": np.zeros(3), "y": np.ones(2)}) == (0.0, None)
    assert max_abs_difference(a, {"x": np.array([0, 0.5, 0]), "y": np.array([1, 0.75])}) == (
        0.5, "x")
    assert max_abs_difference(a, {"x": np.zeros(3)})[0] == float("inf")
    assert max_abs_difference(a, {"x": np.zeros(4), "y": np.ones(2)}) == (float("inf"), "x")
    assert max_abs_difference(a, {"x": np.array([0, np.nan, 0]), "y": np.ones(2)}) == (
        float("inf"), "x")
